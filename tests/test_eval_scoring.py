"""Tests for bliss_jax.eval: the batched jitted scorer against plain forward passes, metrics, harness and script."""
import json
import math
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydoc_data import topics

from bliss_jax import partitioning
from bliss_jax.data import pipeline
from bliss_jax.data import seqio_tasks
from bliss_jax.data import vocabulary as vocab_lib
from bliss_jax.eval import generation, harness, loglikelihood, metrics, readers, registry
from bliss_jax.losses.lm import model_logits, token_cross_entropy
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.training import checkpoints
from bliss_jax.training.model_dir import ModelDir

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import evaluate as evaluate_script  # noqa: E402  pylint: disable=g-import-not-at-top

SHARED_TASKS = ["hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq", "openbookqa", "logiqa"]
BATCH, MAX_LEN, BUCKETS = 4, 32, (16, 32)


@pytest.fixture(scope="module")
def tiny():
  """A random 2-layer `tiny` Transformer (vocab 512), and one jitted scoring step that records the shapes it traces."""
  cfg = preset("tiny")
  model = Transformer(cfg)
  params = jax.jit(lambda key: nn.unbox(model.init(key, jnp.zeros((1, 1), jnp.int32))["params"]))(
      jax.random.PRNGKey(0))
  inner = loglikelihood.make_loglikelihood_step(model)
  traced = []

  def step(p, batch):
    traced.append(batch["inputs"].shape)
    return inner(p, batch)

  return model, params, jax.jit(step), traced


def _scorer(tiny, **kwargs):
  model, params, step_fn, _ = tiny
  kwargs = {"batch_size": BATCH, "max_length": MAX_LEN, "length_buckets": BUCKETS, "progress": False,
            "step_fn": step_fn, **kwargs}
  return loglikelihood.make_token_scorer(model, params, **kwargs)


_APPLY = {}


def _apply(model):
  """A jitted plain `model.apply` (no padding, no segment ids), one per model."""
  return _APPLY.setdefault(id(model), jax.jit(model.apply))


def _reference(model, params, context, continuation, max_length):
  """Σ log p(continuation) and greedy flag from ONE unbatched, unpadded forward pass of the (truncated) sequence."""
  seq = (list(context) + list(continuation))[-(max_length + 1):]
  logits = _apply(model)({"params": params}, jnp.asarray([seq[:-1]], jnp.int32))[0]
  logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)), np.float64)
  positions = range(len(seq) - 1 - len(continuation), len(seq) - 1)
  total = sum(logp[t, seq[t + 1]] for t in positions)
  return total, all(int(np.argmax(logp[t])) == seq[t + 1] for t in positions)


def _pairs(seed, shapes):
  rng = np.random.default_rng(seed)
  return [(rng.integers(3, 512, c).tolist(), rng.integers(3, 512, n).tolist()) for c, n in shapes]


def test_batched_scorer_equals_single_forward(tiny):
  model, params, _, _ = tiny
  # 6 pairs = one full batch and one padded with 2 empty rows; two are left-truncated (41 + 10 and 30 + 5 > 33),
  # one fills a row exactly (1 + 31 = 33 tokens -> 32 positions), the short ones go to the 16-token bucket.
  pairs = _pairs(0, [(5, 3), (40, 10), (1, 31), (30, 5), (2, 2), (20, 1)])
  results = _scorer(tiny)(pairs)
  assert [r.num_tokens for r in results] == [len(c) for _, c in pairs]
  for (context, continuation), result in zip(pairs, results):
    logprob, greedy = _reference(model, params, context, continuation, MAX_LEN)
    assert result.logprob == pytest.approx(logprob, abs=1e-5, rel=1e-6)
    assert result.is_greedy == greedy
  # The same pairs in another batch composition (one at a time, all padding around them) score the same.
  for pair, result in zip(pairs[:2], results[:2]):
    assert _scorer(tiny)([pair])[0].logprob == pytest.approx(result.logprob, abs=1e-5)


def test_fixed_shapes_compile_once_per_bucket(tiny):
  _, _, _, traced = tiny
  score = _scorer(tiny)
  score(_pairs(1, [(3, 2), (4, 4), (9, 1)]))  # 16-token bucket
  score(_pairs(2, [(25, 4)] * 5))  # 32-token bucket, 2 batches
  score(_pairs(3, [(2, 1)] * 9))  # 16-token bucket, 3 batches
  assert set(traced) <= {(BATCH, 16), (BATCH, 32)}
  assert len(traced) == len(set(traced))  # every shape traced (compiled) once across all scorers sharing the step


def test_pack_rows_layout_and_errors():
  batch = loglikelihood.pack_rows([([5, 6, 7], [8, 9]), ([10, 11, 12, 13, 14], [15, 16])], 3, 4)
  np.testing.assert_array_equal(batch["inputs"], [[5, 6, 7, 8], [12, 13, 14, 15], [0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["targets"], [[6, 7, 8, 9], [13, 14, 15, 16], [0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["weights"], [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
  with pytest.raises(ValueError, match="empty continuation"):
    loglikelihood.pack_rows([([1], [])], 1, 4)
  with pytest.raises(ValueError, match="does not fit"):
    loglikelihood.pack_rows([([1], [2, 3, 4, 5, 6])], 1, 4)


class BigramLM:
  """A hand-made model: logits at position t are `table[tokens[t]]`, so p(next | prev) = softmax(table[prev])."""

  def apply(self, variables, tokens, segment_ids=None):
    del segment_ids
    return variables["params"]["table"][tokens]


def test_greedy_flag_and_logprob_on_hand_made_bigram_model():
  probs = np.full((6, 6), 0.1, np.float32)
  probs[1] = [.05, .05, .6, .1, .1, .1]  # after 1, 2 is the argmax
  probs[2] = [.05, .05, .1, .5, .2, .1]  # after 2, 3
  probs[3] = [.1, .1, .1, .1, .4, .2]  # after 3, 4
  params = {"table": jnp.log(jnp.asarray(probs / probs.sum(1, keepdims=True)))}
  score = loglikelihood.make_token_scorer(BigramLM(), params, batch_size=2, max_length=8, progress=False)
  pairs = [([1], [2, 3]), ([1], [2, 4]), ([5, 1, 2], [3, 4]), ([2], [4])]
  results = score(pairs)
  expected = [math.log(.6) + math.log(.5), math.log(.6) + math.log(.2), math.log(.5) + math.log(.4), math.log(.2)]
  np.testing.assert_allclose([r.logprob for r in results], expected, rtol=1e-6)
  assert [r.is_greedy for r in results] == [True, False, True, False]
  assert [r.num_tokens for r in results] == [2, 2, 2, 1]
  lambada = metrics.lambada_scores([r.logprob for r in results], [r.is_greedy for r in results])
  assert lambada["acc"] == 0.5
  assert lambada["perplexity"] == pytest.approx(math.exp(-np.mean(expected)))  # per item (word), not per token


# --- Tokenisation ---------------------------------------------------------------------------------------------------


class CharVocab:
  eos_id = 1

  def encode(self, s):
    return [ord(c) for c in s]


def test_encode_pair_starts_the_context_and_moves_trailing_space():
  v = CharVocab()
  assert loglikelihood.START_ID == 0
  assert loglikelihood.encode_pair(v, "Answer: ", "yes") == ([0] + v.encode("Answer:"), v.encode(" yes"))
  assert loglikelihood.encode_pair(v, "Answer:", " yes") == ([0] + v.encode("Answer:"), v.encode(" yes"))
  assert loglikelihood.encode_pair(v, "", " yes") == ([0], v.encode(" yes"))
  # Without a start id: nothing prepended, the end-of-sequence id before an empty context's continuation.
  assert loglikelihood.encode_pair(v, "Answer:", " yes", None) == (v.encode("Answer:"), v.encode(" yes"))
  assert loglikelihood.encode_pair(v, "", " yes", None) == ([1], v.encode(" yes"))


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  return vocab_lib.train_sentencepiece(texts, str(tmp_path_factory.mktemp("spm") / "eval.model"), 300)


@pytest.fixture(scope="module")
def spm_vocab(spm_path):
  return vocab_lib.load_vocabulary(spm_path)  # 300 pieces + 100 sentinels, fits the tiny model's 512


def test_sentencepiece_pairs_split_at_the_delimiter(spm_vocab):
  for item in [readers.MultipleChoice("x", "Question: What is a list?\nAnswer:", ("a sequence", "it's"), 0),
               readers.MultipleChoice("y", "", ("The cat sat", "The dog sat"), 1, continuation="on the mat.")]:
    for context, continuation in item.requests():
      ctx, cont = loglikelihood.encode_pair(spm_vocab, context, continuation)
      assert ctx == [0] + spm_vocab.encode(context) and cont == spm_vocab.encode(continuation)
      assert ctx + cont == [0] + spm_vocab.encode(context + continuation)


# Harness requests whose context ends at a token boundary of the whole text (so both sides score the same tokens);
# one with an empty context, one whose trailing space moves to the continuation.
LAYOUT_ITEMS = [("Question: What is a list?\nAnswer:", " a sequence of values"),
                ("The loop ends when", " the list is empty."),
                ("", "The statement of a value is assigned to each name."),
                ("Answer: ", "yes"),
                ("Attribute references are", " primaries followed by a period and a name.")]


@pytest.fixture(scope="module")
def trained_like(tiny, spread_params):
  """The tiny model with O(1) random parameters (`spread_params`)."""
  model, params, _, _ = tiny
  return model, spread_params(params, 1)


@pytest.mark.parametrize("pack", [True, False])
def test_harness_rows_are_laid_out_as_training_sees_a_document(trained_like, spm_vocab, pack):
  """The harness's log-likelihood of each continuation equals the sum of the per-token log-probs the model gives the
  same text read as a document through the training path (SeqIO task, `DecoderFeatureConverter`, packed or not)."""
  model, params = trained_like
  docs = [(f"item:{i}", context + continuation) for i, (context, continuation) in enumerate(LAYOUT_ITEMS)]
  seqio_tasks.register_document_task("eval_layout", lambda: docs, spm_vocab, validation_fraction=0.0)
  ds = pipeline.get_dataset("eval_layout", "train", 48, 2, shuffle=False, seed=0, pack=pack, repeat=False,
                            drop_remainder=False)
  training = {}  # whole text's ids -> (per-token log p of its targets, decoder inputs), one per document
  most_segments = 0
  for batch in ds.as_numpy_iterator():
    logp = -np.asarray(token_cross_entropy(model_logits(model, params, batch), batch["decoder_target_tokens"]))
    for row in range(len(logp)):
      segments = batch["decoder_segment_ids"][row]
      most_segments = max(most_segments, segments.max())
      for s in range(1, segments.max() + 1):
        on = segments == s
        targets = batch["decoder_target_tokens"][row][on].tolist()
        assert targets[-1] == spm_vocab.eos_id
        training[tuple(targets[:-1])] = (logp[row][on][:-1], batch["decoder_input_tokens"][row][on].tolist())
  assert len(training) == len(LAYOUT_ITEMS) and (most_segments > 1) == pack

  score_fn = loglikelihood.make_score_fn(model, params, spm_vocab, batch_size=BATCH, max_length=MAX_LEN,
                                         length_buckets=BUCKETS, progress=False)
  results = score_fn(LAYOUT_ITEMS)
  for (context, continuation), result in zip(LAYOUT_ITEMS, results):
    whole = spm_vocab.encode(context + continuation)
    ctx, cont = loglikelihood.encode_pair(spm_vocab, context, continuation)
    logp, inputs = training[tuple(whole)]
    assert inputs == [0] + whole  # what training feeds: 0, then the document (whose EOS is the last target)
    assert result.num_tokens == len(cont) and whole[len(whole) - len(cont):] == cont
    want = float(np.sum(logp[-len(cont):]))
    print(f"pack={pack} {context!r} + {continuation!r}: harness {result.logprob:.6f}, training path {want:.6f}")
    assert result.logprob == pytest.approx(want, abs=2e-4, rel=1e-6), (context, continuation)
    assert ctx + cont == inputs and len(inputs) <= MAX_LEN + 1  # the same row, not truncated


# --- Metrics ------------------------------------------------------------------------------------------------------


def test_acc_vs_acc_norm_by_hand():
  # Choice 1 is long, with the lower total but the higher per-character log-likelihood:
  # totals [-3.0, -4.0]: acc picks 0; per character [-3/3, -4/8] = [-1.0, -0.5]: acc_norm picks 1.
  scores = metrics.multiple_choice_scores([[-3.0, -4.0]] * 2, [("abc", "abcdefgh")] * 2, [0, 1])
  np.testing.assert_array_equal(scores["acc"], [1.0, 0.0])
  np.testing.assert_array_equal(scores["acc_norm"], [0.0, 1.0])
  # Length is in characters (code points), as the harness's len(str), not UTF-8 bytes: "éé" is 2, not 4.
  assert metrics.multiple_choice_scores([[-2.0, -3.0]], [("éé", "abc")], [1])["acc_norm"][0] == 0.0
  # Ties: argmax takes the first maximal index.
  np.testing.assert_array_equal(metrics.multiple_choice_scores([[-1.0, -1.0]], [("a", "b")], [0])["acc"], [1.0])


def test_mean_stderr_formula():
  x = [1.0, 0.0, 1.0, 1.0]
  assert metrics.mean_stderr(x) == pytest.approx(math.sqrt(sum((v - 0.75) ** 2 for v in x) / 3) / 2)
  assert math.isnan(metrics.mean_stderr([1.0]))


def _real_items(shared_data):
  return {t: registry.load_task(t, str(shared_data / "eval")) for t in SHARED_TASKS + ["lambada_openai"]}


def test_oracle_and_constant_scorers_on_the_real_benchmarks(shared_data):
  items = _real_items(shared_data)
  gold = {r for t in SHARED_TASKS for it in items[t] for i, r in enumerate(it.requests()) if i == it.gold}
  gold |= {r for it in items["lambada_openai"] for r in it.requests()}  # every LAMBADA word is its own gold
  oracle = harness.run_eval(lambda reqs: [(0.0 if r in gold else -1.0, 1, True) for r in reqs],
                            SHARED_TASKS + ["lambada_openai"], str(shared_data / "eval"))
  for task in SHARED_TASKS:
    for metric in registry.TASKS[task].metrics:
      assert oracle["results"][task][f"{metric},none"] == 1.0, (task, metric)
  assert oracle["results"]["lambada_openai"]["acc,none"] == 1.0
  assert oracle["results"]["lambada_openai"]["perplexity,none"] == 1.0  # Σ log p = 0 for every word

  const = harness.run_eval(lambda reqs: [(-1.0, 1, False)] * len(reqs), SHARED_TASKS + ["lambada_openai"],
                           str(shared_data / "eval"))
  for task in SHARED_TASKS:
    golds = np.array([it.gold for it in items[task]])
    longest = np.array([int(np.argmax([len(c) for c in it.choices])) for it in items[task]])
    res = const["results"][task]
    # All log-likelihoods tie: argmax = index 0, so acc = P(gold = 0); -1/len is largest for the longest choice.
    assert res["acc,none"] == pytest.approx(np.mean(golds == 0), abs=1e-12)
    assert res["acc_stderr,none"] == pytest.approx(np.std(golds == 0, ddof=1) / math.sqrt(len(golds)), abs=1e-12)
    if "acc_norm" in registry.TASKS[task].metrics:
      assert res["acc_norm,none"] == pytest.approx(np.mean(golds == longest), abs=1e-12)
  assert const["results"]["boolq"]["acc,none"] == pytest.approx(1237 / 3270)  # "no" is gold on 1,237 of 3,270
  assert const["results"]["lambada_openai"]["acc,none"] == 0.0
  assert const["results"]["lambada_openai"]["perplexity,none"] == pytest.approx(math.e)


def test_run_eval_layout_limit_and_markdown(shared_data):
  out = harness.run_eval(lambda reqs: [(-float(len(c)), 1, False) for _, c in reqs], ["arc_easy", "lambada_openai"],
                         str(shared_data / "eval"), limit=10, config={"model": "fake"})
  assert set(out) >= {"results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"}
  assert out["n-samples"]["arc_easy"] == {"original": 2376, "effective": 10}
  assert set(out["results"]["arc_easy"]) == {"alias", "acc,none", "acc_stderr,none", "acc_norm,none",
                                             "acc_norm_stderr,none"}
  assert out["config"]["model"] == "fake" and out["config"]["limit"] == 10
  assert harness.effective_limit(2376, 0.01) == 24 and harness.effective_limit(5, 10) == 5
  table = harness.to_markdown(out)
  lines = table.splitlines()
  assert lines[0].replace(" ", "") == "|Tasks|Version|Filter|n-shot|Metric||Value||Stderr|"
  assert lines[2].replace(" ", "").startswith("|arc_easy|1|none|0|acc|↑|")
  assert lines[3].replace(" ", "").startswith("|||none|0|acc_norm|↑|")  # later metrics leave task/version blank
  assert lines[4].replace(" ", "").startswith("|lambada_openai|1|none|0|perplexity|↓|")
  json.dumps(out)  # serializable
  with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
    harness.run_eval(lambda reqs: [], ["arc_easy"], str(shared_data / "eval"), files={"arc_easy": "/x/nowhere.jsonl"})
  with pytest.raises(ValueError, match="unknown task"):
    registry.task_paths("mmlu", ".")


# --- End to end: sharded scorer, script ---------------------------------------------------------------------------


@pytest.mark.integration
def test_sharded_scorer_matches_single_device(tiny):
  mesh = partitioning.make_mesh(data=8)
  pairs = _pairs(4, [(7, 3), (45, 6), (12, 12), (3, 1), (20, 2)])
  single = _scorer(tiny)(pairs)
  sharded = _scorer(tiny, batch_size=8, step_fn=None, mesh=mesh, length_buckets=(MAX_LEN,))(pairs)
  np.testing.assert_allclose([r.logprob for r in sharded], [r.logprob for r in single], atol=1e-5)
  assert [r.is_greedy for r in sharded] == [r.is_greedy for r in single]
  with pytest.raises(ValueError, match="multiple of the mesh"):
    _scorer(tiny, batch_size=4, mesh=mesh)


def _model_dir(path, model, params, step):
  """A MODEL_DIR at `path`: the model's config and one checkpoint of `params` at `step`."""
  path.mkdir()
  ModelDir(str(path)).write_model_config(model.cfg)
  checkpoints.save(checkpoints.make_manager(str(path)), step, {"params": params}, {})
  return path


def _fixture_files(tmp_path):
  """Small SciQ (JSON list) and StoryCloze (csv) files in their public formats."""
  sciq = [{"question": f"Which gas do plants take in, case {i}?", "distractor1": "oxygen", "distractor2": "helium",
           "distractor3": "neon", "correct_answer": "carbon dioxide", "support": "Plants use carbon dioxide."}
          for i in range(6)]
  (tmp_path / "sciq.json").write_text(json.dumps(sciq))
  (tmp_path / "story.csv").write_text(
      "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1,"
      "RandomFifthSentenceQuiz2,AnswerRightEnding\n"
      "s1,Tom had a list.,He sorted it.,It was long.,He printed it.,Tom was pleased.,Tom ate the list.,1\n"
      "s2,Ann wrote code.,It had a bug.,She found it.,She fixed it.,The code broke the moon.,The tests passed.,2\n")
  return {"sciq": str(tmp_path / "sciq.json"), "storycloze": str(tmp_path / "story.csv")}


def test_evaluate_script_end_to_end(tiny, spm_path, spm_vocab, tmp_path, capsys):
  model, params, step_fn, _ = tiny
  model_dir = _model_dir(tmp_path / "run", model, params, 7)
  files = _fixture_files(tmp_path)
  out_dir = tmp_path / "eval"
  evaluate_script.main([
      f"--model_dir={model_dir}", f"--vocabulary={spm_path}", "--tasks=sciq,storycloze", f"--output_dir={out_dir}",
      f"--task_file=sciq={files['sciq']}", f"--task_file=storycloze={files['storycloze']}", "--batch_size=8",
      "--max_length=32", "--no_progress"])
  saved = json.loads((out_dir / "results.json").read_text())
  assert saved["config"]["step"] == 7 and saved["n-samples"]["sciq"] == {"original": 6, "effective": 6}
  assert (out_dir / "results.md").read_text().endswith(harness.to_markdown(saved))
  assert "|sciq" in capsys.readouterr().out
  # The script (sharded over the 8 test devices, default length buckets) agrees with an unsharded scorer.
  score_fn = loglikelihood.make_score_fn(model, params, spm_vocab, batch_size=BATCH, max_length=MAX_LEN,
                                         length_buckets=BUCKETS, progress=False, step_fn=step_fn)
  direct = harness.run_eval(score_fn, ["sciq", "storycloze"], str(tmp_path), files=files)
  for task in ("sciq", "storycloze"):
    for key, value in direct["results"][task].items():
      assert saved["results"][task][key] == (value if isinstance(value, str) else pytest.approx(value, abs=1e-9))


# A module of one's own that registers a benchmark in its own format (fields `prompt`, `options`, `answer`).
USER_TASKS_MODULE = """
from bliss_jax.eval import readers, registry


def read_my_qa(path):
  return [readers.MultipleChoice(id=f"my_qa/{n}", context="Q: " + readers.field(r, "prompt", where) + "\\nA:",
                                 choices=tuple(r["options"]), gold=readers.field(r, "answer", where, int))
          for n, (where, r) in enumerate(readers.read_records(path))]


registry.register_task("my_qa", registry.TaskSpec(files=("my_qa.jsonl",), reader=read_my_qa, metrics=("acc",)))
"""


@pytest.fixture
def user_tasks_module(tmp_path, monkeypatch):
  """The name of an importable module (in tmp_path) that registers the task "my_qa"; unregistered afterwards."""
  (tmp_path / "my_eval_tasks.py").write_text(USER_TASKS_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  yield "my_eval_tasks"
  registry.TASKS.pop("my_qa", None)
  sys.modules.pop("my_eval_tasks", None)


def test_evaluate_script_runs_a_task_registered_by_a_tasks_module(tiny, spm_path, spm_vocab, tmp_path,
                                                                   user_tasks_module):
  model, params, step_fn, _ = tiny
  model_dir = _model_dir(tmp_path / "run", model, params, 3)
  data = tmp_path / "data"
  data.mkdir()
  rows = [{"prompt": f"Which number follows {i}?", "options": [str(i + 1), str(i + 7), "none"], "answer": 0}
          for i in range(5)]
  (data / "my_qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  elsewhere = tmp_path / "elsewhere.jsonl"  # the same task on a file given with --task_file
  elsewhere.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
  with pytest.raises(SystemExit, match="unknown task 'my_qa'.*register_task"):
    evaluate_script.main([f"--model_dir={model_dir}", f"--output_dir={tmp_path}/no", "--tasks=my_qa",
                          f"--data_dir={data}"])
  for task_file, n in (([], 5), ([f"--task_file=my_qa={elsewhere}"], 2)):
    out_dir = tmp_path / f"eval{n}"
    saved = evaluate_script.main([
        f"--model_dir={model_dir}", f"--vocabulary={spm_path}", "--tasks=my_qa", f"--data_dir={data}",
        f"--tasks_module={user_tasks_module}", f"--output_dir={out_dir}", "--batch_size=8", "--max_length=32",
        "--no_progress"] + task_file)
    assert saved == json.loads((out_dir / "results.json").read_text())
    assert saved["n-samples"]["my_qa"] == {"original": n, "effective": n}
    assert set(saved["results"]["my_qa"]) == {"alias", "acc,none", "acc_stderr,none"}
  # The script's accuracy is the one the harness gives with an unsharded scorer on the same requests.
  score_fn = loglikelihood.make_score_fn(model, params, spm_vocab, batch_size=BATCH, max_length=MAX_LEN,
                                         length_buckets=BUCKETS, progress=False, step_fn=step_fn)
  direct = harness.run_eval(score_fn, ["my_qa"], str(data), files={"my_qa": str(elsewhere)})
  assert saved["results"]["my_qa"]["acc,none"] == direct["results"]["my_qa"]["acc,none"]
  assert registry.load_task("my_qa", str(data))[1].requests() == [("Q: Which number follows 1?\nA:", " 2"),
                                                                  ("Q: Which number follows 1?\nA:", " 8"),
                                                                  ("Q: Which number follows 1?\nA:", " none")]


@pytest.mark.integration
def test_evaluate_script_few_shot_and_generative_tasks_by_name(tiny, spm_path, spm_vocab, tmp_path, shared_data):
  """gsm8k (greedy decoding, exact match) and arc_easy, 1-shot, through the script sharded over the 8 test devices,
  agree with the harness run unsharded; the prompts (up to 1,000 tokens) are cut to max_length - max_gen_toks."""
  model, params, step_fn, _ = tiny
  model_dir = _model_dir(tmp_path / "run", model, params, 5)
  data = tmp_path / "data"
  data.mkdir()
  with open(shared_data / "corpus" / "gsm8k_train.jsonl") as f:
    (data / "gsm8k_test.jsonl").write_text("".join(next(f) for _ in range(3)))
  files = {"gsm8k:train": str(shared_data / "corpus" / "gsm8k_train.jsonl"),
           "arc_easy": str(shared_data / "eval" / "ARC-Easy-Test.jsonl")}
  out_dir = tmp_path / "eval"
  saved = evaluate_script.main([
      f"--model_dir={model_dir}", f"--vocabulary={spm_path}", "--tasks=gsm8k,arc_easy", f"--data_dir={data}",
      f"--output_dir={out_dir}", "--num_fewshot=1", "--limit=2", "--batch_size=8", "--max_length=320",
      "--no_progress"] + [f"--task_file={k}={v}" for k, v in files.items()])
  assert saved["n-shot"] == {"gsm8k": 1, "arc_easy": 1} and saved["config"]["num_fewshot"] == 1
  assert saved["configs"]["gsm8k"]["fewshot_files"] == [files["gsm8k:train"]]
  assert set(saved["results"]["gsm8k"]) == {"alias", "exact_match,strict-match", "exact_match_stderr,strict-match",
                                            "exact_match,flexible-extract", "exact_match_stderr,flexible-extract"}
  assert "num_fewshot: 1" in (out_dir / "results.md").read_text()
  responses = []
  generate_fn = generation.make_generate_fn(model, params, spm_vocab, batch_size=2, max_length=320, progress=False)
  score_fn = loglikelihood.make_score_fn(model, params, spm_vocab, batch_size=BATCH, max_length=320,
                                         progress=False)
  direct = harness.run_eval(score_fn, ["gsm8k", "arc_easy"], str(data), limit=2, num_fewshot=1, files=files,
                            generate_fn=lambda *a: responses.extend(generate_fn(*a)) or responses)
  assert len(responses) == 2
  for task in ("gsm8k", "arc_easy"):
    for key, value in direct["results"][task].items():
      assert saved["results"][task][key] == (value if isinstance(value, str) else pytest.approx(value, abs=1e-9))


def test_comparison_zero_shot_stage_takes_files_elsewhere_and_generative_tasks(tiny, spm_vocab, tmp_path,
                                                                               shared_data):
  """compare's zero-shot stage on a final target: a task's file given by `zero_shot_files`, and gsm8k (5-shot from
  the train split beside eval/) decoded greedily, each metric under its filter."""
  from bliss_jax.pipelines import compare  # pylint: disable=g-import-not-at-top
  model, params, _, _ = tiny
  model_dir = _model_dir(tmp_path / "target", model, params, 9)
  seqio_tasks.register_document_task("zero_shot_vocab", lambda: [("d:0", "a document")], spm_vocab,
                                     validation_fraction=0.0)
  with open(shared_data / "corpus" / "gsm8k_train.jsonl") as f:
    (tmp_path / "gsm8k_test.jsonl").write_text(next(f))
  files = {"gsm8k": str(tmp_path / "gsm8k_test.jsonl")}
  results, note = compare._zero_shot(str(tmp_path / "root"), ["plain"], {"plain": [(9, str(model_dir))]},
                                     "zero_shot_vocab", ("arc_easy", "gsm8k"), 2, str(shared_data / "eval"), 320,
                                     files)
  assert note is None
  assert set(results["plain"]["gsm8k"]) == {"strict-match/exact_match", "strict-match/exact_match_stderr",
                                            "flexible-extract/exact_match", "flexible-extract/exact_match_stderr"}
  assert set(results["plain"]["arc_easy"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
  saved = json.loads((tmp_path / "root" / "zero_shot_plain" / "results.json").read_text())
  assert saved["n-shot"] == {"arc_easy": 0, "gsm8k": 5} and saved["configs"]["gsm8k"]["files"] == [files["gsm8k"]]


def test_evaluate_script_missing_file_is_named(tmp_path):
  with pytest.raises(SystemExit, match="nowhere/hellaswag_val_full.txt.bz2"):
    evaluate_script.main([f"--model_dir={tmp_path}", f"--output_dir={tmp_path}", "--tasks=hellaswag",
                          f"--data_dir={tmp_path}/nowhere"])


@pytest.mark.parametrize("limit", ["-5", "0", "2.5"])
def test_evaluate_script_refuses_a_limit_that_is_no_count_or_fraction(tmp_path, limit, capsys):
  with pytest.raises(SystemExit) as e:
    evaluate_script.main([f"--model_dir={tmp_path}", f"--output_dir={tmp_path}", f"--limit={limit}"])
  assert e.value.code == 2 and f"--limit={float(limit):g}" in capsys.readouterr().err


def test_evaluate_script_checks_the_output_dir_before_any_work(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(SystemExit, match="--output_dir .*file/out' cannot be created"):
    # no model there and no benchmark files: the output directory is the first thing checked
    evaluate_script.main([f"--model_dir={tmp_path}/none", f"--output_dir={tmp_path}/file/out", "--tasks=hellaswag",
                          f"--data_dir={tmp_path}/nowhere"])
