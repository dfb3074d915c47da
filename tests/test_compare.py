"""The comparison pipeline: FLOP accounting by hand; one tiny run of every method on the embedded
mixture (equal target compute, report, figures, TensorBoard); and the same run killed (SIGKILL / SIGTERM) at stage
boundaries and mid-stage, rerun each time, ending with the same report.

The runs are `scripts/compare.py` subprocesses (the README's command) on `compare/smoke.gin`; they share one JAX
compilation cache, so the later ones mostly load executables. The notebook runs the same command on the finished
root (every stage reused) and shows the report.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from bliss_jax.data import embedded_mixture
from bliss_jax.pipelines import compare, method

# every method of compare/smoke.gin, in report order
METHODS = ("plain", "rho1", "rkd", "salt", "salt_ds", "miniplm", "vanilla_kd", "random", "bliss", "mates")

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--gin_file=compare/smoke.gin", "--gin.compare.zero_shot_tasks=('arc_easy',)",
        "--gin.compare.zero_shot_limit=6"]


# --- pure pieces ---

def test_aux_cost_counts_one_off_items_before_their_step_and_forwards_per_step():
  aux = method.AuxCost({"teacher": (0, 100.0), "bilevel_r1": (10, 7.0)}, per_step=2.0, per_step_until=5,
                        per_step_label="teacher_forwards")
  assert aux.at(1) == 100.0 + 2.0
  assert aux.at(5) == 100.0 + 10.0
  assert aux.at(10) == 110.0  # round 1's bilevel runs after step 10, before step 11
  assert aux.at(11) == 117.0
  assert aux.breakdown() == {"teacher": 100.0, "bilevel_r1": 7.0, "teacher_forwards": 10.0}
  curve = [{"step": 5, "loss": 3.0}, {"step": 20, "loss": 2.0}]
  assert compare.flops_curve(curve, 1000.0, aux) == [(5000.0 + 110.0, 3.0), (20000.0 + 117.0, 2.0)]
  assert method.AuxCost().at(7) == 0.0


def test_unknown_method_is_named():
  with pytest.raises(ValueError, match=r"unknown methods \['bliss2'\]"):
    compare.run(root="/nonexistent", target=None, small=None, train_task="x", methods=("plain", "bliss2"))


# --- one tiny run of every method, as the README runs it ---

def _env(cache):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as on a user's machine
  env.update(BLISS_JAX_COMPILATION_CACHE=str(cache), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  return env


def _start(root, cache, log):
  return subprocess.Popen([sys.executable, "scripts/compare.py", *TINY, f"--gin.ROOT='{root}'"], cwd=REPO,
                          env=_env(cache), stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, cache):
  root = tmp_path_factory.mktemp("compare") / "clean"
  with open(root.parent / "clean.log", "w") as log:
    rc = _start(root, cache, log).wait(timeout=1800)
  out = (root.parent / "clean.log").read_text()
  assert rc == 0, out[-5000:]
  return root, json.loads((root / "report.json").read_text()), out


def _without_wall_time(report):
  report = json.loads(json.dumps(report))
  for row in report["methods"].values():
    row.pop("wall_seconds")
  return report


@pytest.mark.integration
def test_every_method_trains_the_same_target_for_the_same_flops(clean_run):
  root, report, _ = clean_run
  rows = report["methods"]
  assert set(rows) == set(METHODS)  # report.json is written with sorted keys
  assert report["config"]["methods"] == list(METHODS)
  cfg = report["config"]
  assert cfg["target_steps"] == 20 and cfg["batch_size"] == 4 and cfg["sequence_length"] == 32
  assert cfg["pool"] == "embedded_mixture:train"  # no pool split given: the stream's own split
  assert cfg["reference_task"] == "embedded_mixture_reference"
  assert cfg["eval"] == "embedded_mixture_reference:validation"
  target_flops = {r["flops"]["target_training"] for r in rows.values()}
  assert target_flops == {20 * cfg["target_step_flops"]}
  for m, r in rows.items():
    assert [p["step"] for p in r["curve"]] == [5, 10, 15, 20]
    assert r["final"]["step"] == 20
    # the final point of every curve is the target's step-20 checkpoint
    steps = sorted(int(s) for s in os.listdir(root / r["model_dir"] / "checkpoints") if s.isdigit())
    assert steps[-1] == 20, (m, steps)
  assert rows["plain"]["flops"]["auxiliary_total"] == 0 and rows["random"]["flops"]["auxiliary_total"] == 0
  for m in ("bliss", "salt", "salt_ds", "rkd", "vanilla_kd", "miniplm", "rho1"):
    assert rows[m]["flops"]["auxiliary_total"] > 0, m
  # KD forwards: RKD at every step, SALT for n_KD = round(36/208 * 20) = 3 steps, of the same teacher
  rkd, salt = rows["rkd"]["flops"]["auxiliary"], rows["salt"]["flops"]["auxiliary"]
  assert salt["teacher_forwards"] * 20 == pytest.approx(rkd["teacher_forwards"] * 3)
  assert set(rows["bliss"]["flops"]["auxiliary"]) == {"proxy_warmup", "bilevel_r1", "scoring_r1"}
  # the plain baseline reaches its own final loss at its last step
  assert rows["plain"]["steps_to_plain_final"] == 20 and rows["plain"]["speedup_steps"] == 1.0
  for r in rows.values():
    if r["steps_to_plain_final"] is not None:
      assert r["speedup_steps"] == pytest.approx(20 / r["steps_to_plain_final"])
      reach = r["steps_to_plain_final"]
      total = next(p["total_flops"] for p in r["curve"] if p["step"] == reach)
      assert r["speedup_flops"] == pytest.approx(20 * cfg["target_step_flops"] / total)


@pytest.mark.integration
def test_rho1_auxiliary_flops_equal_a_hand_count(clean_run):
  """The small model of compare/smoke.gin (`tiny`, 1 layer, d 32, 2 heads of 16, 1 kv head, SwiGLU d_ff 128,
  untied, vocab V): 32·16·4 + 2·16·32 + 3·32·128 + 2·32 + 32 = 15,456 parameters without the head, 32·V in it; a
  forward at T = 32 costs 2(15,456 + 32·V) + 4·1·2·16·32 per token. RHO-1 trains it 10 steps and runs it forward at
  each of the target's 20 steps of 4 × 32 tokens."""
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=import-outside-toplevel
  root, report, _ = clean_run
  V = ModelDir(str(root / "rho1" / "reference")).read_model_config().vocab_size
  fwd = 2 * (15_456 + 32 * V) + 4 * 1 * 2 * 16 * 32
  aux = report["methods"]["rho1"]["flops"]["auxiliary"]
  assert aux["reference_forwards"] == pytest.approx(fwd * 20 * 4 * 32, rel=1e-12)
  assert aux["reference_training"] == pytest.approx(3 * fwd * 10 * 4 * 32, rel=1e-12)


@pytest.mark.integration
def test_curves_are_the_held_out_loss_of_the_checkpoints(clean_run):
  from bliss_jax.pipelines import common  # pylint: disable=import-outside-toplevel
  import tasks  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel  (registers embedded_mixture)
  root, report, _ = clean_run
  row = report["methods"]["random"]  # its first 10 steps are round 0's MODEL_DIR, the rest its own
  for step, model_dir in ((10, root / "bliss" / "target_r0" / "model"), (20, root / row["model_dir"])):
    got = common.heldout_at_step(str(model_dir), step, "embedded_mixture_reference", "validation", sequence_length=32,
                                 batch_size=4, max_batches=report["config"]["eval_max_batches"])
    point = next(p for p in row["curve"] if p["step"] == step)
    assert point["loss"] == pytest.approx(got["loss"], rel=1e-6)
    assert point["accuracy"] == pytest.approx(got["accuracy"], rel=1e-6)


@pytest.mark.integration
def test_report_files_figures_and_tensorboard(clean_run):
  root, report, out = clean_run
  md = (root / "report.md").read_text()
  for m in METHODS:
    assert f"| {m} |" in md
  assert "| plain | " in out  # the script prints the table
  for name in ("loss_vs_flops.png", "loss_vs_total_flops.png", "composition.png"):
    assert (root / name).stat().st_size > 10_000, name
  sel = report["methods"]["bliss"]["selection"]
  assert set(sel["by_domain"]) <= set(embedded_mixture.DOMAINS) and sum(sel["by_domain"].values()) == pytest.approx(1.0)
  assert 0 <= sel["target_fraction"] <= 1 and report["pool_composition"]["n"] > 0
  assert md.startswith("# Comparison (smoke)\n\n**What this run shows** (20 target steps per method, 1 seed): ")
  for m in ("bliss", "mates", "salt_ds", "miniplm"):  # the scoring methods: their highest- and lowest-scored examples
    scored = report["methods"][m]["scored_documents"]
    assert len(scored["top"]) == len(scored["bottom"]) == 3
    assert scored["top"][0]["score"] >= scored["bottom"][0]["score"]
    assert scored["top"][0]["text"] and scored["top"][0]["labels"]["domain"] in embedded_mixture.DOMAINS
    assert f"- {m}, lowest:" in md
  assert not any("scored_documents" in report["methods"][m] for m in ("plain", "random", "rho1", "salt"))
  # TensorBoard: the comparison's curve of every method under ROOT/tensorboard/<m>, as the report has it, next to
  # the training logs of every stage under the same ROOT
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  for m in METHODS:
    acc = event_accumulator.EventAccumulator(str(root / "tensorboard" / m), size_guidance={"tensors": 0})
    acc.Reload()
    got = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors("heldout/loss")]
    assert got == [(p["step"], pytest.approx(p["loss"], rel=1e-6)) for p in report["methods"][m]["curve"]], m
  assert list(root.glob("salt/student_salt/tensorboard/train/events.out.tfevents*"))
  assert list(root.glob("bliss/bliss_r1_bilevel/model/tensorboard/bilevel/events.out.tfevents*"))
  if report["zero_shot_note"] is None:
    z = report["methods"]["plain"]["zero_shot"]["arc_easy"]
    assert 0.0 <= z["acc"] <= 1.0 and "acc_norm" in z
    assert "arc_easy acc" in md


@pytest.mark.integration
def test_rerun_reuses_every_stage_and_writes_the_same_report(clean_run, cache, tmp_path):
  root, report, _ = clean_run
  log = tmp_path / "rerun.log"
  with open(log, "w") as f:
    assert _start(root, cache, f).wait(timeout=600) == 0, log.read_text()[-3000:]
  text = log.read_text()
  assert "] running" not in text and "done earlier" in text, text[-3000:]
  assert _without_wall_time(json.loads((root / "report.json").read_text())) == _without_wall_time(report)


@pytest.mark.integration
def test_killed_at_stage_boundaries_and_mid_stage_then_rerun_gives_the_same_report(clean_run, cache, tmp_path):
  _, clean_report, _ = clean_run
  root = tmp_path / "killed"
  # (file whose appearance triggers the kill, signal): boundaries between stages, and inside a training stage, the
  # bilevel loop and the comparison's own evaluation stages
  kills = [(root / "rho1" / "reference" / "stage.json", signal.SIGKILL),
           (root / "salt" / "student_salt" / "checkpoints" / "5", signal.SIGTERM),
           (root / "miniplm" / "score" / "stage.json", signal.SIGTERM),
           (root / "bliss" / "bliss_r1_bilevel" / "model", signal.SIGKILL),
           (root / "curve_plain" / "stage.json", signal.SIGKILL)]
  for i, (trigger, sig) in enumerate(kills):
    with open(tmp_path / f"run{i}.log", "w") as log:
      proc = _start(root, cache, log)
      while not trigger.exists() and proc.poll() is None:
        time.sleep(0.05)
      assert proc.poll() is None, f"run {i} ended before {trigger} appeared:\n" + (
          tmp_path / f"run{i}.log").read_text()[-3000:]
      proc.send_signal(sig)
      proc.wait(timeout=60)
    assert not (root / "report.json").exists()
  with open(tmp_path / "final.log", "w") as log:
    assert _start(root, cache, log).wait(timeout=1800) == 0, (tmp_path / "final.log").read_text()[-3000:]
  assert _without_wall_time(json.loads((root / "report.json").read_text())) == _without_wall_time(clean_report)


@pytest.mark.integration
def test_notebook_runs_headless_and_shows_the_report(clean_run, cache, monkeypatch):
  """notebooks/quickstart.ipynb executed top to bottom by nbclient on CPU, running the job in its kernel on the
  finished smoke root (its stages are reused, so this checks the notebook's cells, not the training again)."""
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel
  root, report, _ = clean_run
  for k, v in _env(cache).items():
    monkeypatch.setenv(k, v)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("BLISS_JAX_NOTEBOOK_ROOT", str(root))
  monkeypatch.setenv("BLISS_JAX_NOTEBOOK_GIN", "compare/smoke.gin")  # the README's job, at the tests' size
  monkeypatch.setenv("BLISS_JAX_BACKEND", "cpu")
  nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
  nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  text = "".join(o.get("text", "") for o in outputs)
  assert "cpu" in text  # the backend cell printed JAX's devices
  for m in report["methods"]:
    assert f"{m:11s} loss {report['methods'][m]['final']['loss']:.4f}" in text
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 3
  assert any("| plain |" in o.get("data", {}).get("text/markdown", "") for o in outputs)
  assert "bliss: round 1's pool" in text and "  top    " in text and "  bottom " in text  # the scored documents


def test_format_report_lists_methods_in_order_with_speedups_by_hand():
  def row(loss, reach, aux):
    return {"final": {"loss": loss, "accuracy": 0.25}, "steps_to_plain_final": reach,
            "speedup_steps": None if reach is None else 100 / reach, "speedup_flops": None,
            "flops": {"target_training": 1e12, "auxiliary": {"teacher_training": aux} if aux else {},
                      "auxiliary_total": aux}, "wall_seconds": 90.0}
  report = {"scale": "hand", "zero_shot_note": None, "pool_composition": None,
            "config": {"train_task": "t", "pool": "t:train", "reference_task": "t", "eval": "t:validation",
                       "eval_tokens": 1000.0, "target_steps": 100, "batch_size": 2, "sequence_length": 8,
                       "target_params": 1234, "target_step_flops": 1e10, "curve_steps": [50, 100]},
            "methods": {"rho1": row(3.5, 50, 5e11), "plain": row(4.0, 100, 0.0)}}  # sorted, as read back
  md = compare.format_report(report, {"loss_vs_flops": "loss_vs_flops.png"})
  lines = [l for l in md.splitlines() if l.startswith("| plain") or l.startswith("| rho1")]
  assert lines == ["| plain | 4.0000 | 0.2500 | +0.0000 | 100 | 1.00 | — | 0 | 0.00 | 1.5 |",
                   "| rho1 | 3.5000 | 0.2500 | -0.5000 | 50 | 2.00 | — | 5e+11 | 0.50 | 1.5 |"]
  assert "- rho1: teacher_training 5e+11" in md and "![loss_vs_flops](loss_vs_flops.png)" in md
