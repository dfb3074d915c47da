"""MiniPLM: reference split, FLOP-matched KD steps, and a tiny end-to-end pipeline (D_ref never selected, top-α)."""
import json

import numpy as np
import pytest
from pydoc_data import topics

from bliss_jax.data import seqio_tasks, vocabulary
from bliss_jax.models.config import preset
from bliss_jax.pipelines import miniplm
from bliss_jax.selection import score_store
from bliss_jax.training import trainer
from bliss_jax.training.trainer import OptimizerConfig


def test_split_reference_uniform_disjoint_deterministic():
  keys = [f"d:{i}#0" for i in range(100)]
  ref, rest = miniplm.split_reference(keys, 0.1, seed=3)
  assert len(ref) == 10 and len(rest) == 90 and not set(ref) & set(rest) and set(ref) | set(rest) == set(keys)
  assert miniplm.split_reference(keys, 0.1, seed=3) == (ref, rest)
  assert miniplm.split_reference(keys, 0.1, seed=4)[0] != ref
  assert rest == [k for k in keys if k not in set(ref)]  # original order kept


def test_vanilla_kd_steps_match_the_paper():
  # MiniPLM §3.1: 25K / 45K / 65K of 100K steps for 200M / 500M / 1.2B students with a 1.8B teacher (train 6N per
  # token, teacher forward 2N)
  assert miniplm.vanilla_kd_steps(100_000, 6 * 200, 2 * 1800) == 25_000
  assert miniplm.vanilla_kd_steps(100_000, 6 * 500, 2 * 1800) == 45_454
  assert miniplm.vanilla_kd_steps(100_000, 6 * 1200, 2 * 1800) == 66_666


@pytest.fixture(scope="module")
def pipeline_report(tmp_path_factory):
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  vocab = vocabulary.load_vocabulary(vocabulary.train_sentencepiece(
      texts, str(tmp_path_factory.mktemp("spm") / "s.model"), 300))
  docs = [(f"d:{i}", " ".join(["word", "list", "value", str(i)] * (1 + 3 * i % 11))) for i in range(48)]
  seqio_tasks.register_document_task("mpl_fixture", lambda: docs, vocab, validation_fraction=0.2)
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=None), num_steps=4, batch_size=8,
                           sequence_length=32, optimizer=OptimizerConfig(warmup_steps=1), checkpoint_every=4)
  root = str(tmp_path_factory.mktemp("mpl"))
  report = miniplm.run(root=root, pool_task="mpl_fixture", pool_split="train", student=spec, reference=spec,
                       teacher=spec.replace(num_steps=6), reference_fraction=0.25, alpha=0.5, score_batch_size=8,
                       students=("miniplm", "plain", "vanilla_kd", "miniplm_prx"), prx_sample_fraction=0.5,
                       prx_steps=30, progress_bar=False)
  return root, report


@pytest.mark.integration
def test_pipeline_selects_top_alpha_of_the_candidates_only(pipeline_report):
  root, report = pipeline_report
  ref = set(json.load(open(report["split"]["reference"])))
  selected = json.load(open(report["selection"]["selected"]))
  table = score_store.read_scores(report["scoring"]["store"])
  candidates = [i for i, k in enumerate(table.keys()) if k not in ref]
  assert not ref & set(selected)
  assert len(selected) == int(np.floor(0.5 * len(candidates)))
  scores = table.columns["difference"]
  threshold = min(scores[table.keys().index(k)] for k in selected)
  assert all(scores[i] <= threshold for i in candidates if table.keys()[i] not in set(selected))
  assert set(report["students"]) == {"miniplm", "plain", "vanilla_kd", "miniplm_prx"}
  prx = report["prx"]
  assert prx["mse_last"] < prx["mse_first"]  # the regressor learns the exact scores of its sample
  assert len(json.load(open(prx["selected"]))) == len(selected) and -1 <= prx["spearman_vs_exact"] <= 1
  assert report["students"]["vanilla_kd"]["steps"] < report["students"]["plain"]["steps"]
  for r in report["students"].values():
    assert np.isfinite(r["heldout"]["loss"])


@pytest.mark.integration
def test_rerun_reuses_every_stage(pipeline_report):
  import glob
  import os
  root, report = pipeline_report
  marks = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(root, "*", "stage.json"))}
  assert len(marks) == 12  # pool_keys, split_reference, teacher, reference, score, select, prx_fit, prx_select, 4 students
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=None), num_steps=4, batch_size=8,
                           sequence_length=32, optimizer=OptimizerConfig(warmup_steps=1), checkpoint_every=4)
  again = miniplm.run(root=root, pool_task="mpl_fixture", pool_split="train", student=spec, reference=spec,
                      teacher=spec.replace(num_steps=6), reference_fraction=0.25, alpha=0.5, score_batch_size=8,
                      students=("miniplm", "plain", "vanilla_kd", "miniplm_prx"), prx_sample_fraction=0.5,
                      prx_steps=30, progress_bar=False)
  assert {p: os.stat(p).st_mtime_ns for p in marks} == marks
  assert again["selection"] == report["selection"]
  assert {k: v["heldout"]["loss"] for k, v in again["students"].items()} == \
      {k: v["heldout"]["loss"] for k, v in report["students"].items()}


@pytest.mark.integration
def test_reported_flops_equal_a_hand_count(pipeline_report):
  """Every model here is the `tiny` preset (2 layers, d 64, 4 heads of 16, 2 kv heads, SwiGLU d_ff 256, RMSNorm,
  untied, vocab V): per layer 64·16·8 + 4·16·64 + 3·64·256 + 2·64 = 61,568, so N without head 2·61,568 + 64 =
  123,200 and the head 64·V; a forward is 2N + 4·2·4·16·32 per token at T = 32, a train step 3 forwards."""
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  _, report = pipeline_report
  V = ModelDir(report["teacher"]["model_dir"]).read_model_config().vocab_size
  fwd = 2 * (123_200 + 64 * V) + 4 * 2 * 4 * 16 * 32
  fwd_score = 2 * 123_200 + 4 * 2 * 4 * 16 * 32 + 2 * 64 / 32
  assert report["scoring"]["flops"] == pytest.approx(2 * fwd * report["scoring"]["scored_tokens"], rel=1e-12)
  kd = report["students"]["vanilla_kd"]
  assert kd["steps"] == int(4 * 3 * fwd / (3 * fwd + fwd)) == 3  # same shape as the teacher: 3/4 of the steps
  assert kd["teacher_forward_flops"] == pytest.approx(fwd * 3 * 8 * 32, rel=1e-12)
  assert kd["train_flops"] == pytest.approx(3 * fwd * 3 * 8 * 32, rel=1e-12)
  prx = report["prx"]
  assert prx["fit_flops"] == pytest.approx(3 * fwd_score * 30 * min(32, prx["n_sample"]) * 32, rel=1e-12)
  assert prx["predict_flops"] == pytest.approx(fwd_score * prx["predicted_tokens"], rel=1e-12)


@pytest.mark.parametrize("module, name", [("miniplm", "MiniPLM"), ("rho1", "RHO-1")])
def test_an_unknown_student_is_refused_before_any_stage_runs(tmp_path, module, name):
  """A misspelt student used to be found only when its turn came, after the earlier stages had trained."""
  import importlib  # pylint: disable=g-import-not-at-top
  run = importlib.import_module(f"bliss_jax.pipelines.{module}").run
  kw = dict(pool_task="t", reference=None) if module == "miniplm" else dict(train_task="t", reference_task="t",
                                                                           reference=None)
  with pytest.raises(ValueError, match=f"{name} student='plian': expected one of"):
    run(root=str(tmp_path / "root"), student=None, students=("plain", "plian"), **kw)
  assert not (tmp_path / "root").exists()


class _Stop(Exception):
  pass


@pytest.fixture
def stubbed_training(monkeypatch):
  """miniplm.run up to its scoring, with training replaced by a record of which task each model trained on (and the
  keys of the pool chunks it read, when it read a chunk store)."""
  trained = []

  def train_on_task(d, spec, task, batch_source=None, **kw):
    record = (d.rstrip("/").rsplit("/", 1)[-1], task)
    if batch_source is not None:
      keys = batch_source.store.keys()
      record += (sorted(keys[i] for i in batch_source.indices),)
    trained.append(record)
    return {"model_dir": d, "train_flops": 1.0}

  def stop(*args, **kw):
    raise _Stop()
  monkeypatch.setattr(miniplm.common, "train_on_task", train_on_task)
  monkeypatch.setattr(miniplm, "ModelDir", stop)  # the first thing scoring does
  return trained


def _stage_inputs(root, name):
  return json.load(open(f"{root}/{name}/stage.json"))["inputs"]


@pytest.mark.parametrize("reference_task", [None, "mpl_reference_fixture"])
def test_the_reference_lm_trains_on_d_ref_or_on_the_reference_task(tmp_path, stubbed_training, reference_task):
  """Without `reference_task` the stages and their recorded inputs are those of every earlier run (D_ref, the paper's
  setting), so finished runs resume; with one, the reference LM trains on it and every pool example is a candidate."""
  import os  # pylint: disable=g-import-not-at-top
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  vocab = vocabulary.load_vocabulary(vocabulary.train_sentencepiece(texts, str(tmp_path / "s.model"), 300))
  docs = [(f"d:{i}", " ".join(["word", "list", "value", str(i)] * (1 + 3 * i % 11))) for i in range(48)]
  seqio_tasks.register_document_task("mpl_ref_fixture", lambda: docs, vocab, validation_fraction=0.2)
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=None), num_steps=4, batch_size=8,
                           sequence_length=32, optimizer=OptimizerConfig(warmup_steps=1), checkpoint_every=4)
  root = str(tmp_path / "root")
  with pytest.raises(_Stop):
    miniplm.run(root=root, pool_task="mpl_ref_fixture", pool_split="train", student=spec, reference=spec,
                teacher=spec, reference_fraction=0.25, reference_task=reference_task, progress_bar=False)
  n_keys = len(json.load(open(f"{root}/pool_keys/keys.json")))
  if reference_task is None:
    assert sorted(os.listdir(root)) == ["chunk_stores", "pool_keys", "reference", "score", "split_reference",
                                        "teacher"]
    assert _stage_inputs(root, "split_reference") == {"fraction": 0.25, "seed": 0}
    assert _stage_inputs(root, "reference") == json.loads(json.dumps(
        {"spec": spec.record(), "n_reference": int(0.25 * n_keys)}, default=str))
    d_ref = sorted(json.load(open(f"{root}/split_reference/reference_keys.json")))
    assert stubbed_training == [("teacher", "mpl_ref_fixture"), ("reference", "mpl_ref_fixture", d_ref)]
  else:
    assert sorted(os.listdir(root)) == ["pool_keys", "reference", "score", "teacher"]
    assert _stage_inputs(root, "reference") == json.loads(json.dumps(
        {"spec": spec.record(), "task": reference_task}, default=str))
    assert stubbed_training == [("teacher", "mpl_ref_fixture"), ("reference", reference_task)]


def test_compare_passes_the_options_reference_task_and_lists_no_split_stage(monkeypatch, tmp_path):
  from bliss_jax.pipelines import method  # pylint: disable=g-import-not-at-top
  calls = []

  def run(**kw):
    calls.append(kw)
    student = {"model_dir": "m", "teacher_forward_flops": 4.0}
    return {"teacher": {"train_flops": 1.0}, "reference": {"train_flops": 2.0}, "scoring": {"flops": 3.0,
            "store": "store"}, "selection": {"selected": "sel.json"}, "pool_keys": "keys.json", "split": None,
            "students": {"miniplm": student, "vanilla_kd": student}}
  monkeypatch.setattr(miniplm, "run", run)
  spec = trainer.TrainSpec(model_config=preset("tiny"), num_steps=4, batch_size=8, sequence_length=32)
  setting = method.Setting(root=str(tmp_path / "s0"), shared_root=str(tmp_path / "shared"), target=spec, small=spec,
                           large=spec, train_task="t", pool_task="t", pool_split="train", pool_max_examples=None,
                           reference_task="compare_ref", eval_task="t", eval_split="validation",
                           eval_max_batches=None, selection_report=None, progress_bar=False)
  compare = miniplm._compare  # pylint: disable=protected-access
  out = compare(setting, ["miniplm", "vanilla_kd"], {"reference_task": "my_ref"})
  assert calls[0]["reference_task"] == "my_ref"
  assert not any(s.endswith("split_reference") for r in out.values() for s in r.stages)
  assert out["miniplm"].scores == method.Scores("store", "difference", None, "the pool")
  compare(setting, ["miniplm"], {})
  assert "reference_task" not in calls[1]  # the paper's D_ref, whatever compare's reference_task
