"""The BLISS rounds pipeline on a tiny two-style corpus: disjoint fresh pools, top-20% selections, target rounds from a
shared round 0, FLOP accounting, stage reuse on rerun, exact resumption of the bilevel loop, and the score model
learning to prefer candidates that look like the reference set."""
import glob
import json
import os

import jax
import numpy as np
import pytest
from pydoc_data import topics

from bliss_jax.bilevel import loop as bilevel_loop
from bliss_jax.bilevel.step import BilevelConfig
from bliss_jax.data import pipeline as data_pipeline
from bliss_jax.data import seqio_tasks, vocabulary
from bliss_jax.models.config import preset
from bliss_jax.pipelines import bliss
from bliss_jax.selection import score_store
from bliss_jax.training import checkpoints, trainer
from bliss_jax.training.model_dir import ModelDir
from bliss_jax.training.trainer import OptimizerConfig

pytestmark = pytest.mark.integration

L = 32
WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in trees".split()


def _clean(i):
  rng = np.random.default_rng(i)
  return " ".join(" ".join(rng.permutation(WORDS[:8]).tolist()) + "." for _ in range(6))


def _noise(i):
  rng = np.random.default_rng(10_000 + i)
  return " ".join("".join(rng.choice(list("qxzjkvw0123456789"), size=5)) for _ in range(40))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
  texts = [t for _, t in sorted(topics.topics.items())][:20] + [_clean(i) for i in range(5)] + [_noise(i)
                                                                                               for i in range(5)]
  vocab = vocabulary.load_vocabulary(vocabulary.train_sentencepiece(
      texts, str(tmp_path_factory.mktemp("spm") / "s.model"), 300))
  pool = [(f"clean:{i}", _clean(i)) for i in range(40)] + [(f"noise:{i}", _noise(i)) for i in range(40)]
  seqio_tasks.register_document_task("bliss_fixture_pool", lambda: pool, vocab, validation_fraction=0.1)
  ref = [(f"ref:{i}", _clean(1000 + i)) for i in range(30)]
  seqio_tasks.register_document_task("bliss_fixture_ref", lambda: ref, vocab, validation_fraction=0.3)
  return "bliss_fixture_pool", "bliss_fixture_ref"


def _specs():
  target = trainer.TrainSpec(model_config=preset("tiny", vocab_size=None), num_steps=12, batch_size=8,
                             sequence_length=L, optimizer=OptimizerConfig(warmup_steps=1), eval_every=2)
  proxy = trainer.TrainSpec(model_config=preset("tiny", vocab_size=None, num_layers=1, d_model=32, num_heads=2,
                                                num_kv_heads=1, d_ff=64),
                            num_steps=6, batch_size=8, sequence_length=L, optimizer=OptimizerConfig(warmup_steps=1))
  # the reference solver (normalised iteration, 3 steps, λ_z = 1e-2); larger learning rates than the paper's for a
  # few steps
  cfg = BilevelConfig(gamma=0.1, proxy_lr=1e-3, score_lr=3e-2)
  return target, proxy, cfg


def _run(root, tasks):
  pool, ref = tasks
  target, proxy, cfg = _specs()
  return bliss.run(root=root, pool_task=pool, pool_split="train", target=target, proxy=proxy, reference_task=ref,
                   bilevel=cfg, bilevel_steps=6, bilevel_batch_size=8, eval_task=ref, rounds=2,
                   methods=("random", "bliss", "bliss_no_kl"), variants={"bliss_no_kl": {"gamma": 0.0}},
                   variant_rounds=1, variant_train_target=False, score_batch_size=8, progress_bar=False)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tasks):
  root = str(tmp_path_factory.mktemp("bliss"))
  return root, _run(root, tasks)


def test_pools_are_disjoint_and_selections_are_the_top_fifth(pipeline):
  root, report = pipeline
  pools = [set(json.load(open(os.path.join(root, "pools", f"pool_{r}.json")))) for r in range(3)]
  keys = json.load(open(os.path.join(root, "pool_keys", "keys.json")))
  assert sum(map(len, pools)) == len(keys) and set.union(*pools) == set(keys)
  assert [len(p) for p in pools] == report["pool_sizes"] and max(report["pool_sizes"]) - min(report["pool_sizes"]) <= 1
  for r, rnd in enumerate(report["methods"]["bliss"]["rounds"], start=1):
    selected = json.load(open(rnd["selection"]["selected"]))
    assert len(selected) == int(np.floor(0.2 * len(pools[r]))) and set(selected) <= pools[r]
    table = score_store.read_scores(rnd["scoring"]["store"])
    assert set(table.keys()) == pools[r]  # the whole round pool was scored, nothing else
    s = dict(zip(table.keys(), table.columns["bliss"]))
    assert min(s[k] for k in selected) >= max(s[k] for k in pools[r] - set(selected))
  for r, rnd in enumerate(report["methods"]["random"]["rounds"], start=1):
    assert set(json.load(open(rnd["selection"]["selected"]))) <= pools[r] and rnd["bilevel"] is None


def test_ablation_variant_runs_its_selection_rounds_only(pipeline):
  root, report = pipeline
  v = report["methods"]["bliss_no_kl"]
  assert len(v["rounds"]) == 1 and v["rounds"][0]["loss"] is None and v["curve"] == []
  assert v["flops"]["target_training"] == 0 and v["flops"]["bilevel"] > 0
  assert not os.path.exists(os.path.join(root, "bliss_no_kl_target"))
  assert report["config"]["bilevel"]["bliss_no_kl"]["gamma"] == 0.0


def test_score_model_learns_to_select_reference_like_candidates(pipeline):
  """The reference set is 'clean' text; half the pool's documents are clean, half character noise (the clean ones
  are shorter: ~22% of chunks). BLISS's top 20% is (almost) all clean in every round."""
  root, report = pipeline
  for r, rnd in enumerate(report["methods"]["bliss"]["rounds"], start=1):
    pool = json.load(open(os.path.join(root, "pools", f"pool_{r}.json")))
    selected = json.load(open(rnd["selection"]["selected"]))
    clean = lambda keys: np.mean([k.startswith("clean") for k in keys])
    print(f"round {r}: clean {clean(selected):.2f} of the selection vs {clean(pool):.2f} of the pool")
    assert clean(pool) < 0.4 and clean(selected) >= 0.9


def test_target_rounds_continue_one_run_from_a_shared_round_zero(pipeline):
  root, report = pipeline
  for m in ("random", "bliss"):
    d = report["methods"][m]["model_dir"]
    assert sorted(int(s) for s in os.listdir(os.path.join(d, "checkpoints"))) == [4, 8, 12]
    assert [x["step"] for x in report["methods"][m]["rounds"]] == [8, 12]
    # round 0 of every method is the shared run's: identical step-4 parameters
    _, p0 = checkpoints.load_params(report["round0"]["model_dir"], step=4)
    _, pm = checkpoints.load_params(d, step=4)
    jax.tree.map(np.testing.assert_array_equal, p0, pm)
    steps = [s for s, _ in report["methods"][m]["curve"]]
    assert steps == [2, 4, 6, 8, 10, 12]
  s = report["summary"]
  assert s["bliss"]["flops"]["bilevel"] > 0 and s["bliss"]["flops"]["scoring"] > 0 and s["bliss"]["flops"]["warmup"] > 0
  assert s["random"]["flops"]["bilevel"] == 0 and s["random"]["flops"]["target_training"] == \
      s["bliss"]["flops"]["target_training"]
  assert abs(sum(s["bliss"]["flop_shares"].values()) - 1) < 1e-9
  assert s["random"]["steps_to_random_final"] <= 12
  md = open(os.path.join(root, "report.md")).read().splitlines()
  assert md[2].startswith("| method | held-out loss") and len(md) == 4 + 3  # title, blank, header, rule, 3 methods
  assert any(l.startswith(f"| bliss | {s['bliss']['final_loss']:.4f} |") for l in md)


def test_reported_flops_equal_a_hand_count(pipeline):
  """Every FLOP item of the tiny run, counted by hand from the shapes (PaLM's 2N + 4·L·H·Q·T per token forward).

  proxy (1 layer, d 32, 2 heads of 16, 1 kv head, SwiGLU d_ff 64, RMSNorm, untied, vocab V): attention
  32·16·(2 + 2) + 2·16·32 = 3,072, MLP 3·32·64 = 6,144, norms 2·32 + 32 → N without head 9,312, head 32·V;
  target (2 layers, d 64, 4 heads of 16, 2 kv heads, d_ff 256): 2·(64·16·8 + 4·16·64 + 3·64·256 + 128) + 64 =
  123,200 without head, head 64·V. T = 32, B = 8, 6 bilevel steps, 12 target steps."""
  _, report = pipeline
  V = ModelDir(report["proxy"]["model_dir"]).read_model_config().vocab_size
  attn_p, attn_t = 4 * 1 * 2 * 16 * L, 4 * 2 * 4 * 16 * L
  f_score = 2 * 9_312 + attn_p + 2 * 32 / L  # score model: backbone without head + Linear(32, 1) per sequence
  f_proxy = 2 * (9_312 + 32 * V) + attn_p
  f_target = 2 * (123_200 + 64 * V) + attn_t
  # lower step (train proxy + score fwd + target fwd) + ∇F (train) + the hypergradient batch's score fwd (its target
  # logits are the lower step's) + 3 HVPs (8/3 train = 8 fwds each) + jvp (3 fwds) + score train (3 fwds)
  bilevel_token = (3 * f_proxy + f_score + f_target) + 3 * f_proxy + f_score + 3 * 8 * f_proxy \
      + 3 * f_proxy + 3 * f_score
  for x in report["methods"]["bliss"]["rounds"]:
    assert x["bilevel"]["flops"] == pytest.approx(bilevel_token * 8 * L * 6, rel=1e-12)
    assert x["scoring"]["flops"] == pytest.approx(f_score * x["scoring"]["scored_tokens"], rel=1e-12)
  assert report["summary"]["bliss"]["flops"]["target_training"] == pytest.approx(3 * f_target * 12 * 8 * L)
  assert report["summary"]["bliss"]["flops"]["warmup"] == pytest.approx(3 * f_proxy * 6 * 8 * L)


def test_rerun_reuses_every_stage(pipeline, tasks):
  root, report = pipeline
  marks = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(root, "*", "stage.json"))}
  # pool_keys, pools, warmup_select, target_r0, proxy_warmup; random: 2 x (select, target); bliss: 2 x 4;
  # the ablation bliss_no_kl: round 1's bilevel, score, select only
  assert len(marks) == 5 + 4 + 8 + 3
  again = _run(root, tasks)
  assert {p: os.stat(p).st_mtime_ns for p in marks} == marks
  assert again["summary"] == report["summary"]


def test_bilevel_loop_resumes_exactly(pipeline, tasks, tmp_path):
  """Stopped after 2 steps and rerun to 4 = 4 straight steps: bit-exact score model, identical metric rows."""
  root, _ = pipeline
  pool, ref = tasks
  _, _, cfg = _specs()
  kw = dict(proxy_dir=os.path.join(root, "proxy_warmup", "model"),
            target_dir=os.path.join(root, "target_r0", "model"), target_step=4,
            train_source=data_pipeline.seqio_batch_source(pool, batch_size=8, sequence_length=L, pack=False),
            val_source=data_pipeline.seqio_batch_source(ref, batch_size=8, sequence_length=L, pack=False),
            cfg=cfg, num_steps=4, log_every=1, progress_bar=False)
  bilevel_loop.run_bilevel(model_dir=str(tmp_path / "straight"), **kw)
  bilevel_loop.run_bilevel(model_dir=str(tmp_path / "resumed"), stop_at_step=2, **kw)
  assert not os.path.exists(tmp_path / "resumed" / "score")
  bilevel_loop.run_bilevel(model_dir=str(tmp_path / "resumed"), **kw)
  _, a = bilevel_loop.load_score_model(str(tmp_path / "straight"))
  _, b = bilevel_loop.load_score_model(str(tmp_path / "resumed"))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  rows = lambda d: [l for l in open(tmp_path / d / "metrics.jsonl")]
  assert rows("straight") == rows("resumed") and len(rows("straight")) == 4
  # the run's record refuses a resume with another BilevelConfig, naming the field; nothing in the run changes
  import dataclasses  # pylint: disable=g-import-not-at-top
  before = {f: open(tmp_path / "resumed" / f, "rb").read() for f in ("run_config.json", "metrics.jsonl")}
  with pytest.raises(ValueError, match=r"bilevel\.proxy_lr: 0\.001 -> 0\.002"):
    bilevel_loop.run_bilevel(model_dir=str(tmp_path / "resumed"), **dict(kw, cfg=dataclasses.replace(cfg, proxy_lr=2e-3)))
  assert before == {f: open(tmp_path / "resumed" / f, "rb").read() for f in before}


def test_bilevel_can_continue_the_previous_rounds_proxy(pipeline, tasks, tmp_path):
  """reset_proxy=False: the proxy starts from a previous bilevel run's final proxy (here with a zero proxy LR, so the
  new run's final proxy must be exactly the previous one's)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  root, report = pipeline
  pool, ref = tasks
  _, _, cfg = _specs()
  prev = report["methods"]["bliss"]["rounds"][0]["bilevel"]["model_dir"]
  out = str(tmp_path / "continued")
  bilevel_loop.run_bilevel(
      model_dir=out, proxy_dir=os.path.join(root, "proxy_warmup", "model"), proxy_state_dir=prev,
      target_dir=os.path.join(root, "target_r0", "model"), target_step=4,
      train_source=data_pipeline.seqio_batch_source(pool, batch_size=8, sequence_length=L, pack=False),
      val_source=data_pipeline.seqio_batch_source(ref, batch_size=8, sequence_length=L, pack=False),
      cfg=dataclasses.replace(cfg, proxy_lr=0.0), num_steps=1, progress_bar=False)
  restore = lambda d: checkpoints.restore(checkpoints.make_manager(d, max_to_keep=None), None)[0]["proxy"]
  jax.tree.map(np.testing.assert_array_equal, restore(prev), restore(out))
