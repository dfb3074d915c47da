"""The comparison pipeline: FLOP and wall-time accounting by hand; one tiny run of every method on the embedded
mixture with two seeds (equal target compute, per-seed and aggregate reports, figures, TensorBoard, stages shared by
the seeds run once, the scoring methods' highest- and lowest-scored documents); and the same run killed (SIGKILL /
SIGTERM) at stage boundaries and mid-stage, rerun each time, ending with the same report.

The runs are `scripts/compare.py` subprocesses (the README's command) on `compare/smoke.gin`; they share one JAX
compilation cache, so the later ones mostly load executables. The notebook runs the same command on the finished
root (every stage reused) and shows the report.
"""
import json
import os
import pathlib
import signal

import pytest

from bliss_jax.data import embedded_mixture
from bliss_jax.pipelines import compare, method
from bliss_jax.training import trainer

# every method of compare/smoke.gin, in report order
METHODS = ("plain", "rho1", "rkd", "salt", "salt_ds", "miniplm", "vanilla_kd", "random", "bliss", "mates")

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--gin_file=compare/smoke.gin", "--gin.compare.zero_shot_tasks=('arc_easy',)",
        "--gin.compare.zero_shot_limit=6"]
SEEDS = 2  # the clean run's


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


def test_stage_users_tell_own_stages_from_shared_ones(tmp_path):
  seed, shared = tmp_path / "seed_0", tmp_path / "shared"
  own, users = compare.stage_users({
      "random": [seed / "bliss" / "pools_r0", seed / "bliss" / "random_r1_select"],
      "bliss": [seed / "bliss" / "pools_r0", seed / "bliss" / "bliss_r1_bilevel", shared / "bliss" / "proxy_warmup"],
      "rho1": [shared / "rho1" / "reference", seed / "rho1" / "student_rho1"]}, str(seed))
  assert own == {"random": [str(seed / "bliss" / "random_r1_select")],
                 "bliss": [str(seed / "bliss" / "bliss_r1_bilevel")], "rho1": [str(seed / "rho1" / "student_rho1")]}
  assert users == {str(seed / "bliss" / "pools_r0"): ["random", "bliss"],  # shared within the seed
                   str(shared / "bliss" / "proxy_warmup"): ["bliss"],  # shared with the other seeds
                   str(shared / "rho1" / "reference"): ["rho1"]}


def test_unknown_method_is_named():
  with pytest.raises(ValueError, match=r"unknown methods \['bliss2'\]"):
    compare.run(root="/nonexistent", target=None, small=None, train_task="x", methods=("plain", "bliss2"))


def test_only_seed_must_be_one_of_the_seeds():
  target = trainer.TrainSpec(model_config=None, num_steps=1)
  for bad in (3, -1):
    with pytest.raises(ValueError, match=rf"only_seed={bad} is not one of the seeds 0..2"):
      compare.run(root="/nonexistent", target=target, small=target, train_task="x", methods=("plain",), seeds=3,
                  only_seed=bad)


# --- one tiny run of every method, as the README runs it ---

def _args(root, seeds=SEEDS):
  return ["scripts/compare.py", *TINY, f"--gin.compare.seeds={seeds}", f"--gin.ROOT='{root}'"]


def _seed_report(root, seed):
  return json.loads((root / compare.seed_dir(seed) / "report.json").read_text())


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, run_script):
  root = tmp_path_factory.mktemp("compare") / "clean"
  rc = run_script(_args(root), root.parent / "clean.log").wait(timeout=1800)
  out = (root.parent / "clean.log").read_text()
  assert rc == 0, out[-5000:]
  return root, json.loads((root / "report.json").read_text()), out


VOLATILE = ("wall_seconds", "eval_seconds", "seconds", "wall_seconds_total")


def _without_wall_time(report):
  if isinstance(report, dict):
    return {k: _without_wall_time(v) for k, v in report.items() if k not in VOLATILE}
  if isinstance(report, list):
    return [_without_wall_time(v) for v in report]
  return report


@pytest.mark.integration
def test_every_method_trains_the_same_target_for_the_same_flops(clean_run):
  root, _, _ = clean_run
  report = _seed_report(root, 0)
  root = root / compare.seed_dir(0)
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
  # the plain baseline reaches its own final loss at the first curve point at or below it (its last step, or an
  # earlier one where its curve is not monotone), and the speedup is the steps over that step
  plain_curve = rows["plain"]["curve"]
  first = next(p["step"] for p in plain_curve if p["loss"] <= plain_curve[-1]["loss"])
  assert rows["plain"]["steps_to_plain_final"] == first and rows["plain"]["speedup_steps"] == 20 / first
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
  V = ModelDir(str(root / compare.SHARED_DIR / "rho1" / "reference")).read_model_config().vocab_size
  fwd = 2 * (15_456 + 32 * V) + 4 * 1 * 2 * 16 * 32
  aux = report["methods"]["rho1"]["flops"]["auxiliary"]  # the same for every seed
  assert aux["reference_forwards"] == pytest.approx(fwd * 20 * 4 * 32, rel=1e-12)
  assert aux["reference_training"] == pytest.approx(3 * fwd * 10 * 4 * 32, rel=1e-12)


@pytest.mark.integration
def test_curves_are_the_held_out_loss_of_the_checkpoints(clean_run):
  from bliss_jax.pipelines import common  # pylint: disable=import-outside-toplevel
  import tasks  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel  (registers embedded_mixture)
  root = clean_run[0] / compare.seed_dir(1)
  report = _seed_report(clean_run[0], 1)
  row = report["methods"]["random"]  # its first 10 steps: round 0's MODEL_DIR, the rest its own
  for step, model_dir in ((10, root / "bliss" / "target_r0" / "model"), (20, root / row["model_dir"])):
    got = common.heldout_at_step(str(model_dir), step, "embedded_mixture_reference", "validation", sequence_length=32,
                                 batch_size=4, max_batches=report["config"]["eval_max_batches"])
    point = next(p for p in row["curve"] if p["step"] == step)
    assert point["loss"] == pytest.approx(got["loss"], rel=1e-6)
    assert point["accuracy"] == pytest.approx(got["accuracy"], rel=1e-6)
    # the second held-out set of compare/smoke.gin: the same documents' continuations
    got = common.heldout_at_step(str(model_dir), step, "embedded_default_prefix_lm", "validation", sequence_length=32,
                                 batch_size=4, max_batches=report["config"]["eval_max_batches"])
    assert point["loss@continuation"] == pytest.approx(got["loss"], rel=1e-6)
    assert point["accuracy@continuation"] == pytest.approx(got["accuracy"], rel=1e-6)
  assert [(s["name"], s["eval"]) for s in report["config"]["eval_sets"]] == [
      ("validation", "embedded_mixture_reference:validation"),
      ("continuation", "embedded_default_prefix_lm:validation")]
  from bliss_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  for s in report["config"]["eval_sets"]:  # each set's unigram entropy at the target's length, from a shared stage
    task, split = s["eval"].split(":")
    assert s["unigram_entropy"] == pytest.approx(pipeline.token_unigram_entropy(task, split, sequence_length=32))
  for m, r in report["methods"].items():
    assert r["final"] == {k: r["curve"][-1][k] for k in ("step", "loss", "accuracy", "loss@continuation",
                                                         "accuracy@continuation")}, m


@pytest.mark.integration
def test_seeds_train_other_targets_on_shared_small_models_and_the_report_is_their_mean(clean_run):
  root, report, out = clean_run
  seeds = [_seed_report(root, s) for s in range(SEEDS)]
  assert report["seeds"] == SEEDS and report["target_seeds"] == [0, 1]
  assert [r["config"]["target_seed"] for r in seeds] == [0, 1]
  for m in METHODS:
    curves = [[p["loss"] for p in r["methods"][m]["curve"]] for r in seeds]
    assert curves[0] != curves[1], m  # another initialisation and data order
    row = report["methods"][m]
    finals = [r["methods"][m]["final"] for r in seeds]
    for k in ("loss", "accuracy"):
      assert row["final"][k] == pytest.approx(sum(f[k] for f in finals) / SEEDS), (m, k)
      assert row["final_ci"][k]["mean"] == pytest.approx(row["final"][k]) and row["final_ci"][k]["n"] == SEEDS
    for i, p in enumerate(row["curve"]):
      assert p["mean"]["loss"] == pytest.approx(sum(r["methods"][m]["curve"][i]["loss"] for r in seeds) / SEEDS)
      assert p["min"]["loss"] <= p["mean"]["loss"] <= p["max"]["loss"]
    if m != "plain":
      d = [r["methods"][m]["final"]["loss"] - r["methods"]["plain"]["final"]["loss"] for r in seeds]
      assert row["vs_plain"]["loss"]["mean"] == pytest.approx(sum(d) / SEEDS)
    assert all(r["methods"][m]["wall_seconds"] > 0 for r in seeds), m
  assert {c["verdict"] for c in report["claims"]} <= {"holds", "fails", "inconclusive"}
  assert len(report["claims"]) == 8  # every paper claim: all their methods ran
  # the stages that do not depend on the target ran once, under ROOT/shared, each in one attempt
  for record in (root / compare.SHARED_DIR).glob("*/*/stage.json"):
    assert len(json.loads(record.read_text())["attempts"]) == 1, record
  assert out.count("[stage reference] running") == 2  # RHO-1's and MiniPLM's reference LMs, once each
  assert out.count("[stage student_plain] running") == SEEDS  # a target per seed
  assert not (root / compare.seed_dir(1) / "rho1" / "reference").exists()
  shared = report["shared_stages"]
  assert shared["shared/salt/teacher"]["methods"] == ["rkd", "salt", "salt_ds"]
  assert shared["seed_1/bliss/target_r0"]["methods"] == ["random", "bliss", "mates"]
  assert shared["shared/rho1/reference"]["methods"] == ["rho1"]  # one method, every seed
  md = (root / "report.md").read_text()
  assert f"{SEEDS} seeds" in md and " ± " in md and any(f"| {v} |" in md for v in ("holds", "fails", "inconclusive"))
  assert "`shared/salt/teacher`" in md


@pytest.mark.integration
def test_report_files_figures_and_tensorboard(clean_run):
  root, report, out = clean_run
  md = (root / "report.md").read_text()
  for m in METHODS:
    assert f"| {m} |" in md
  assert "| plain | " in out  # the script prints the table
  for d in (root, root / compare.seed_dir(0), root / compare.seed_dir(1)):
    for name in ("loss_vs_flops.png", "loss_vs_total_flops.png", "composition.png"):
      assert (d / name).stat().st_size > 10_000, (d, name)
  sel = report["methods"]["bliss"]["selection"]  # the mean over the seeds
  assert set(sel["by_domain"]) <= set(embedded_mixture.DOMAINS) and sum(sel["by_domain"].values()) == pytest.approx(1.0)
  assert 0 <= sel["target_fraction"] <= 1 and report["pool_composition"]["n"] > 0
  assert "Stream and candidate pool " in md and "tokens the token-selecting" in md
  scope = f"\n\n**What this run shows** (20 target steps per method, {SEEDS} seeds): "
  assert md.startswith(f"# Comparison (smoke), {SEEDS} seeds{scope}")
  for m in ("bliss", "mates", "salt_ds", "miniplm"):  # seed 0's highest- and lowest-scored examples
    assert report["scored_documents"][m]["top"] and f"- {m}, lowest:" in md
  # TensorBoard: the comparison's curve of every method under ROOT/seed_<s>/tensorboard/<m>, as that seed's report
  # has it, next to the training logs of every stage under the same ROOT
  report = _seed_report(root, 0)
  root = root / compare.seed_dir(0)
  md = (root / "report.md").read_text()
  assert md.startswith("# Comparison (smoke), seed 0") and scope in md
  tok = report["methods"]["rho1"]["token_selection"]  # the documents of the tokens RHO-1 kept, of 3 batches
  assert tok["steps"] == [5, 10, 15] and 0 < tok["kept"]["n"] < tok["all"]["n"]
  assert set(tok["kept"]["by_domain"]) <= set(tok["all"]["by_domain"]) and "tokens the token-selecting" in md
  # the candidates are a sample of the stream's own split (pool_max_examples)
  assert report["stream_composition"]["n"] >= report["pool_composition"]["n"]
  assert "Stream and candidate pool " in md
  assert "| loss (continuation) | vs plain (continuation) |" in md
  for m in ("bliss", "mates", "salt_ds", "miniplm"):  # the scoring methods: their highest- and lowest-scored examples
    scored = report["methods"][m]["scored_documents"]
    assert len(scored["top"]) == len(scored["bottom"]) == 3
    assert scored["top"][0]["score"] >= scored["bottom"][0]["score"]
    assert scored["top"][0]["text"] and scored["top"][0]["labels"]["domain"] in embedded_mixture.DOMAINS
    assert f"- {m}, lowest:" in md
  assert not any("scored_documents" in report["methods"][m] for m in ("plain", "random", "rho1", "salt"))
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  for m in METHODS:
    acc = event_accumulator.EventAccumulator(str(root / "tensorboard" / m), size_guidance={"tensors": 0})
    acc.Reload()
    got = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors("heldout/loss")]
    assert got == [(p["step"], pytest.approx(p["loss"], rel=1e-6)) for p in report["methods"][m]["curve"]], m
    got = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors("heldout@continuation/loss")]
    assert got == [(p["step"], pytest.approx(p["loss@continuation"], rel=1e-6))
                   for p in report["methods"][m]["curve"]], m
  assert list(root.glob("salt/student_salt/tensorboard/train/events.out.tfevents*"))
  assert list(root.glob("bliss/bliss_r1_bilevel/model/tensorboard/bilevel/events.out.tfevents*"))
  if report["zero_shot_note"] is None:
    z = report["methods"]["plain"]["zero_shot"]["arc_easy"]
    assert 0.0 <= z["acc"] <= 1.0 and "acc_norm" in z
    assert "arc_easy acc" in md


@pytest.mark.integration
def test_rerun_reuses_every_stage_and_writes_the_same_report(clean_run, run_script, tmp_path):
  root, report, _ = clean_run
  log = tmp_path / "rerun.log"
  assert run_script(_args(root), log).wait(timeout=600) == 0, log.read_text()[-3000:]
  text = log.read_text()
  assert "] running" not in text and "done earlier" in text, text[-3000:]
  assert _without_wall_time(json.loads((root / "report.json").read_text())) == _without_wall_time(report)


@pytest.mark.integration
def test_killed_at_stage_boundaries_and_mid_stage_then_rerun_gives_the_same_report(clean_run, kill_when_written,
                                                                                    run_script, tmp_path):
  """One seed here: its seed_0 report must be the clean two-seed run's. Each pipeline's own stages are killed inside
  and at their boundaries in tests/test_pipeline_kills.py; here the comparison's layer: a shared stage, a seed's
  training stage, the comparison's own evaluation stages (curves, zero-shot)."""
  clean_report = _seed_report(clean_run[0], 0)
  root = tmp_path / "killed"
  shared, seed = root / compare.SHARED_DIR, root / compare.seed_dir(0)
  # (file whose appearance triggers the kill, signal), in the order the run reaches them
  kills = [(shared / "rho1" / "reference" / "stage.json", signal.SIGKILL),
           (seed / "salt" / "student_salt" / "checkpoints" / "5", signal.SIGTERM),
           (seed / "bliss" / "bliss_r1_bilevel" / "model", signal.SIGKILL),
           (seed / "curve_plain" / "stage.json", signal.SIGKILL),
           (seed / "zero_shot_rho1" / "stage.json", signal.SIGTERM)]
  for trigger, _ in kills:  # every trigger is a file the clean run wrote (else the test would wait for nothing)
    assert (clean_run[0] / trigger.relative_to(root)).exists(), trigger
  for i, (trigger, sig) in enumerate(kills):
    kill_when_written(_args(root, seeds=1), trigger, sig, tmp_path / f"run{i}.log")
    assert not (root / "report.json").exists()
  log = tmp_path / "final.log"
  assert run_script(_args(root, seeds=1), log).wait(timeout=1800) == 0, log.read_text()[-3000:]
  seeds_apart = lambda r: dict(r, config={k: v for k, v in r["config"].items() if k != "seeds"})  # 1 run here, 2 there
  assert seeds_apart(_without_wall_time(_seed_report(root, 0))) == seeds_apart(_without_wall_time(clean_report))
  aggregate = json.loads((root / "report.json").read_text())
  assert aggregate["methods"]["salt"]["final"] == clean_report["methods"]["salt"]["final"]  # one seed: its values
  # the stages killed inside count both attempts
  for stage in (seed / "salt" / "student_salt", seed / "bliss" / "bliss_r1_bilevel"):
    record = json.loads((stage / "stage.json").read_text())
    ends = [a["end"] for a in record["attempts"]]  # (a SIGTERM at an earlier boundary may land in it too)
    assert len(ends) >= 2 and ends[-1] == "finished" and set(ends[:-1]) == {"interrupted"}, (stage, ends)
    assert record["seconds"] == pytest.approx(sum(a["seconds"] for a in record["attempts"]))
  first = json.loads((seed / "salt" / "student_salt" / "stage.json").read_text())["attempts"][0]
  assert first["seconds"] > 0  # it trained 5 steps and wrote their checkpoint before it was killed


@pytest.mark.integration
def test_notebook_runs_headless_and_shows_the_report(clean_run, script_env, monkeypatch):
  """notebooks/quickstart.ipynb executed top to bottom by nbclient on CPU, running the job in its kernel on the
  finished smoke root (its stages are reused, so this checks the notebook's cells, not the training again)."""
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel
  root = clean_run[0]
  report = _seed_report(root, 0)  # the notebook runs one seed: the aggregate is seed 0's values
  for k, v in script_env.items():
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


def test_eval_sets_name_the_primary_first():
  assert compare.eval_sets_of(None, "t") == (("heldout", "t", "validation"),)
  sets = compare.eval_sets_of({"others": "a_except_b:validation", "b": "ref_b:validation"}, "t")
  assert sets == (("others", "a_except_b", "validation"), ("b", "ref_b", "validation"))
  for bad, match in (({}, "empty"), ({"x y": "t:validation"}, "name 'x y'"), ({"x": "t"}, "not 'task:split'")):
    with pytest.raises(ValueError, match=match):
      compare.eval_sets_of(bad, "t")


def _hand_report(further_sets=False):
  """A report.json as `_report` writes it (sorted keys), by hand: plain and rho1, optionally with a second
  held-out set `b` (loss@b in `final`), the stream's and the pool's compositions."""
  def row(loss, reach, aux, loss_b):
    final = {"step": 100, "loss": loss, "accuracy": 0.25, **({"loss@b": loss_b, "accuracy@b": 0.5} if further_sets
                                                             else {})}
    return {"final": final, "steps_to_plain_final": reach,
            "speedup_steps": None if reach is None else 100 / reach, "speedup_flops": None,
            "flops": {"target_training": 1e12, "auxiliary": {"teacher_training": aux} if aux else {},
                      "auxiliary_total": aux}, "wall_seconds": 90.0}
  cfg = {"train_task": "t", "pool": "t:train", "reference_task": "t", "eval": "t:validation",
         "eval_tokens": 1000.0, "target_steps": 100, "batch_size": 2, "sequence_length": 8,
         "target_params": 1234, "target_step_flops": 1e10, "curve_steps": [50, 100]}
  if further_sets:
    cfg["eval_sets"] = [{"name": "others", "eval": "t:validation", "eval_sample": "whole split", "eval_tokens": 1000.0},
                        {"name": "b", "eval": "ref_b:validation", "eval_sample": "whole split", "eval_tokens": 500.0}]
  return {"scale": "hand", "zero_shot_note": None, "pool_composition": None, "config": cfg,
          "methods": {"rho1": row(3.5, 50, 5e11, 2.0), "plain": row(4.0, 100, 0.0, 2.5)}}  # sorted, as read back


def test_format_report_lists_methods_in_order_with_speedups_by_hand():
  md = compare.format_report(_hand_report(), {"loss_vs_flops": "loss_vs_flops.png"})
  lines = [l for l in md.splitlines() if l.startswith("| plain") or l.startswith("| rho1")]
  assert lines == ["| plain | 4.0000 | 0.2500 | +0.0000 | 100 | 1.00 | — | 0 | 0.00 | 1.5 |",
                   "| rho1 | 3.5000 | 0.2500 | -0.5000 | 50 | 2.00 | — | 5e+11 | 0.50 | 1.5 |"]
  assert "- rho1: teacher_training 5e+11" in md and "![loss_vs_flops](loss_vs_flops.png)" in md
  assert "held-out `t:validation` (whole split, 1,000 tokens)." in md


def test_format_report_shows_every_held_out_set_and_the_stream_next_to_the_pool():
  report = _hand_report(further_sets=True)
  same = {"n": 10, "by_domain": {"books": 0.6, "web": 0.4}, "target_fraction": 0.6}
  report["pool_composition"], report["stream_composition"] = same, dict(same, n=30)
  md = compare.format_report(report, {})
  header = next(l for l in md.splitlines() if l.startswith("| method"))
  assert header.startswith("| method | held-out loss (others) | next-token acc (others) | vs plain (others) | "
                           "loss (b) | vs plain (b) | steps to plain's final loss |")
  assert "| rho1 | 3.5000 | 0.2500 | -0.5000 | 2.0000 | -0.5000 | 50 | 2.00 |" in md
  assert ("held-out sets `others` = `t:validation` (whole split, 1,000 tokens); `b` = `ref_b:validation` "
          "(whole split, 500 tokens); the first is the primary") in md
  report["config"]["eval_sets"][0]["unigram_entropy"] = 6.1164  # the shared stage's value, when the run has it
  assert ("`others` = `t:validation` (whole split, 1,000 tokens, unigram entropy 6.116 nats); `b` = "
          "`ref_b:validation` (whole split, 500 tokens)") in compare.format_report(report, {})
  assert "- candidate pool: books 0.600, web 0.400\n- stream: books 0.600, web 0.400" in md
  assert "Target-like share of the candidate pool: 0.600; of the stream: 0.600" in md
  assert "Stream and candidate pool have the same composition." in md
  report["stream_composition"] = {"n": 30, "by_domain": {"books": 0.5, "web": 0.5}, "target_fraction": 0.5}
  assert "Stream and candidate pool differ in composition" in compare.format_report(report, {})


def test_further_held_out_sets_join_the_primary_curve_by_step():
  primary = [{"step": 5, "loss": 3.0, "accuracy": 0.1, "num_tokens": 9.0}, {"step": 10, "loss": 2.0, "accuracy": 0.2}]
  b = [{"step": 10, "loss": 1.5, "accuracy": 0.4}, {"step": 5, "loss": 2.5, "accuracy": 0.3}]
  assert compare._with_further_sets(primary, {"b": b}) == [  # pylint: disable=protected-access
      {"step": 5, "loss": 3.0, "accuracy": 0.1, "num_tokens": 9.0, "loss@b": 2.5, "accuracy@b": 0.3},
      {"step": 10, "loss": 2.0, "accuracy": 0.2, "loss@b": 1.5, "accuracy@b": 0.4}]
  assert compare._with_further_sets(primary, {}) == primary  # pylint: disable=protected-access
