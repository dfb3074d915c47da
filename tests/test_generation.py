"""Tests for bliss_jax.eval.generation and the generative tasks: batched cached greedy decoding against step-by-step
full forward passes (one device and sharded), early stopping, stop sequences and the end-of-sequence id, and GSM8K's
reader, few-shot prompt, filters and exact match on the real train file."""
import json
import random

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax import partitioning
from bliss_jax.eval import generation, harness, metrics, readers, registry
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer

MAX_NEW, WIDTH = 7, 16  # prompts of at most 9 tokens + 7 generated fit one right-padded reference shape


@pytest.fixture(scope="module")
def model_params(spread_params):
  model = Transformer(preset("tiny"))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, spread_params(params, 3)


def _reference(apply, params, prompt, n):
  """n greedy tokens after `prompt`, from a full forward pass of the whole sequence at every step (no cache)."""
  seq = list(prompt)
  for _ in range(n):
    logits = apply({"params": params}, jnp.array([seq + [0] * (WIDTH - len(seq))], jnp.int32))
    seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
  return seq[len(prompt):]


PROMPTS = [[0, 17, 250, 3, 99, 402, 7, 7, 31], [0, 5, 61], [0, 300, 12, 12, 8, 1]]


@pytest.fixture(scope="module")
def references(model_params):
  model, params = model_params
  apply = jax.jit(model.apply)
  return [_reference(apply, params, p, MAX_NEW) for p in PROMPTS]


def test_batched_cached_generation_equals_full_forward(model_params, references):
  model, params = model_params
  # 3 prompts in batches of 2 (the second batch has a padding row), 7 tokens in chunks of 3 (the last chunk cut).
  generate = generation.make_token_generator(model, params, batch_size=2, max_length=64, chunk=3,
                                             length_buckets=(16,), progress=False)
  assert generate(PROMPTS, MAX_NEW) == references
  assert len({t for r in references for t in r}) > 3  # not one token repeated


@pytest.mark.integration
def test_sharded_generation_equals_single_device(model_params, references):
  model, params = model_params
  mesh = partitioning.make_mesh(data=2, devices=jax.devices()[:2])
  generate = generation.make_token_generator(model, params, batch_size=4, max_length=64, chunk=4,
                                             length_buckets=(16,), mesh=mesh, progress=False)
  assert generate(PROMPTS, MAX_NEW) == references
  with pytest.raises(ValueError, match="multiple of the mesh"):
    generation.make_token_generator(model, params, batch_size=3, mesh=mesh)


def test_generation_stops_when_every_row_is_done(model_params, references):
  model, params = model_params
  generate = generation.make_token_generator(model, params, batch_size=4, max_length=64, chunk=3,
                                             length_buckets=(16,), progress=False)
  calls = []

  def done(ids):
    calls.append(len(ids))
    return len(ids) >= 2
  assert generate(PROMPTS, MAX_NEW, done) == [r[:3] for r in references]  # one chunk of 3, then every row is done
  assert set(calls) == {3}
  with pytest.raises(ValueError, match="max_new_tokens=64"):
    generate(PROMPTS, 64)


class CodeVocab:
  """A vocabulary whose id i is the character chr(i) (ids below 512, the tiny model's size)."""
  vocab_size = 512

  def __init__(self, eos_id=1):
    self.eos_id = eos_id

  def encode(self, text):
    return [ord(c) for c in text]

  def decode(self, ids):
    return "".join(chr(i) for i in ids)


def test_stop_sequences_and_end_of_sequence_cut_the_text(model_params):
  model, params = model_params
  context = "".join(chr(i) for i in PROMPTS[0][1:])
  ids = generation.make_token_generator(model, params, batch_size=2, max_length=64, chunk=4, length_buckets=(16,),
                                        progress=False)([PROMPTS[0]], 12)[0]
  text = CodeVocab().decode(ids)
  assert len(set(ids[:4])) == 4 and 1 not in ids  # the cuts below are at distinct, real positions
  generate_fn = generation.make_generate_fn(model, params, CodeVocab(), batch_size=2, max_length=64, chunk=4,
                                            length_buckets=(16,), progress=False)
  assert generate_fn([context], [], 12) == [text]
  assert generate_fn([context], [text[2:4]], 12) == [text[:2]]  # cut before the stop sequence
  assert generate_fn([context], ["\x00never", text[3], text[1:3]], 12) == [text[:1]]  # before the first of several
  eos_at_3 = generation.make_generate_fn(model, params, CodeVocab(eos_id=ids[3]), batch_size=2, max_length=64,
                                         chunk=4, length_buckets=(16,), progress=False)
  assert eos_at_3([context], [], 12) == [text[:3]]  # the end-of-sequence id ends the text
  assert generation.cut_at_stop("a\n\nQuestion: b", ["Question:", "\n\n"]) == "a"
  assert generation.encode_prompt(CodeVocab(), "ab") == [0, 97, 98]
  assert generation.encode_prompt(CodeVocab(), "ab", None) == [97, 98]
  assert generation.encode_prompt(CodeVocab(), "", None) == [1]


# --- GSM8K -------------------------------------------------------------------------------------------------------


def test_gsm8k_reader_on_the_real_train_file(shared_data):
  items = readers.read_gsm8k(str(shared_data / "corpus" / "gsm8k_train.jsonl"))
  assert len(items) == 7473 and all(isinstance(it, readers.Generation) for it in items)
  assert items[0].prompt() == ("Question: Natalia sold clips to 48 of her friends in April, and then she sold half "
                               "as many clips in May. How many clips did Natalia sell altogether in April and May?"
                               "\nAnswer:")
  assert items[0].target.endswith("\n#### 72") and items[0].example() == (items[0].context, items[0].target)
  assert all("#### " in it.target for it in items)


def test_gsm8k_filters_and_exact_match_by_hand():
  gen = registry.task_spec("gsm8k").generation
  strict, flexible = (f for _, f in gen.filters)
  response = " She pays 3 x $4 = $12.\n#### 12\n\nSo 1,200."
  assert strict(response) == "12" and flexible(response) == "1,200."  # flexible: the last number-like match
  assert strict("The answer is 5.") == "[invalid]" and flexible("The answer is 5.") == "5."
  assert metrics.regex_extract(r"(a)|(b)")("xb") == "b"  # several groups: the non-empty one
  target = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
  em = metrics.exact_match(["72", "72.", "$72", "7,2", "[invalid]", "72 clips"], [target] * 6,
                           gen.regexes_to_ignore, gen.ignore_case)
  np.testing.assert_array_equal(em, [1, 1, 1, 1, 0, 0])  # ",", "$", a final "." and the worked solution ignored
  np.testing.assert_array_equal(metrics.exact_match(["A!"], ["a"], ignore_case=True, ignore_punctuation=True), [1])


@pytest.fixture
def gsm8k_test_file(shared_data, tmp_path):
  """The first 4 train items written as a test split (the shared data has no GSM8K test split)."""
  rows = [json.loads(line) for line in open(shared_data / "corpus" / "gsm8k_train.jsonl")][:4]
  path = tmp_path / "gsm8k_test.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path), rows


def test_gsm8k_five_shot_prompts_and_scores_through_the_harness(shared_data, gsm8k_test_file):
  path, rows = gsm8k_test_file
  train = readers.read_gsm8k(str(shared_data / "corpus" / "gsm8k_train.jsonl"))
  seen = []

  def oracle(contexts, until, max_new_tokens):  # the gold worked answer for the first 3, a wrong number for the last
    seen.append((list(contexts), tuple(until), max_new_tokens))
    return [r["answer"] if i < 3 else "#### 1000000" for i, r in enumerate(rows)]
  out = harness.run_eval(None, ["gsm8k"], str(shared_data / "eval"), files={"gsm8k": path}, generate_fn=oracle)
  (contexts, until, max_new), = seen
  assert until == ("Question:", "</s>", "<|im_end|>") and max_new == 256
  # 5-shot by default, from the train split beside eval/ (seed 1234, one generator for the task, item by item).
  rnd = random.Random(1234)
  draws = [rnd.sample(range(len(train)), 5) for _ in rows]
  assert contexts[0] == "".join(f"{train[j].context} {train[j].target}\n\n" for j in draws[0]) + (
      "Question: " + rows[0]["question"] + "\nAnswer:")
  assert contexts[1].startswith(f"Question: {train[draws[1][0]].context[len('Question: '):]} ")
  assert out["n-shot"] == {"gsm8k": 5}
  assert out["configs"]["gsm8k"]["fewshot_split"] == "train"
  assert out["configs"]["gsm8k"]["generation_kwargs"]["until"] == ["Question:", "</s>", "<|im_end|>"]
  res = out["results"]["gsm8k"]
  assert res["exact_match,strict-match"] == 0.75 and res["exact_match,flexible-extract"] == 0.75
  assert res["exact_match_stderr,strict-match"] == pytest.approx(0.25)  # sd([1,1,1,0], ddof=1)/2
  assert harness.metric_values(res)["strict-match/exact_match"] == 0.75
  table = harness.to_markdown(out).splitlines()
  assert table[2].replace(" ", "").startswith("|gsm8k|3|strict-match|5|exact_match|↑|0.7500|±|0.2500|")
  assert table[3].replace(" ", "").startswith("|||flexible-extract|5|exact_match|↑|0.7500|")
  with pytest.raises(ValueError, match="task 'gsm8k' needs a generate_fn"):
    harness.run_eval(lambda r: [], ["gsm8k"], str(shared_data / "eval"), files={"gsm8k": path})
