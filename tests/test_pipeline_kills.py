"""Each method pipeline on its own through `scripts/run_pipeline.py` (RHO-1, SALT, MiniPLM, the selection rounds with
BLISS and MATES), killed (SIGKILL / SIGTERM) inside its stages and at their boundaries, rerun each time with the same
command in the same directory, ends with the report of an uninterrupted run.

Every pipeline runs its CPU config (gin_configs/methods/*_cpu.gin) shrunk on the command line to the comparison
smoke's size (compare/smoke.gin): the embedded mixture instead of the benchmark mixture (no data files needed), a
1-layer d=32 model in every slot, 20 target steps of 4 x 32 tokens checkpointed every 5, 10 steps of each small or
auxiliary model. Nothing is learned at this size: it checks that a killed run resumes to the same numbers.
"""
import json
import signal

import pytest

pytestmark = pytest.mark.integration

SMALL_MODEL = ("num_layers=1", "d_model=32", "num_heads=2", "num_kv_heads=1", "d_ff=128")
EMBEDDED = "'embedded_mixture'"
REFERENCE = "'embedded_mixture_reference'"


def _small(*scopes, steps):
  """Bindings that make each `scope`'s model the 1-layer one, trained `steps` steps, checkpointed every 5."""
  return [f"--gin.{s}/{b}" for s in scopes for b in (*(f"model_config.{m}" for m in SMALL_MODEL),
                                                     f"TrainSpec.num_steps={steps}", "TrainSpec.checkpoint_every=5")]


SIZE = ["--gin.L=32", "--gin.B=4", "--gin.cpu/OptimizerConfig.warmup_steps=5"]

# pipeline: its command's flags after --pipeline
COMMANDS = {
    "rho1": ["--gin_file=methods/rho1_compare_cpu.gin", *SIZE, f"--gin.rho1.train_task={EMBEDDED}",
             f"--gin.rho1.reference_task={REFERENCE}", f"--gin.rho1.eval_task={REFERENCE}",
             "--gin.rho1.eval_max_batches=4", "--gin.rho1.token_selection_batches=2",
             *_small("reference", steps=10), *_small("student", steps=20)],
    "salt": ["--gin_file=methods/salt_cpu.gin", *SIZE, "--gin.STEPS=20", "--gin.N_KD=5",
             f"--gin.salt.task={EMBEDDED}", "--gin.salt.feature_converter='decoder'",
             "--gin.salt.students=('salt', 'salt_ds')", f"--gin.salt.pool_task={EMBEDDED}",
             "--gin.salt.pool_max_examples=1000", "--gin.salt.scorer_step=5", "--gin.salt.score_batch_size=32",
             "--gin.salt.selection_report=None", f"--gin.salt.eval_task={REFERENCE}", "--gin.salt.eval_max_batches=4",
             *_small("teacher", steps=20), *_small("student", steps=20)],
    "miniplm": ["--gin_file=methods/miniplm_cpu.gin", *SIZE, "--gin.STUDENT_STEPS=20",
                f"--gin.miniplm.pool_task={EMBEDDED}", "--gin.miniplm.pool_split='train'",
                "--gin.miniplm.pool_max_examples=1000", f"--gin.miniplm.teacher_task={EMBEDDED}",
                f"--gin.miniplm.eval_task={REFERENCE}", "--gin.miniplm.eval_max_batches=4",
                "--gin.miniplm.score_batch_size=32", "--gin.miniplm.students=('miniplm', 'vanilla_kd')",
                *_small("teacher", "reference", steps=10), *_small("student", steps=20)],
    "bliss": ["--gin_file=methods/bliss_cpu.gin", "--gin_file=methods/mates.gin", *SIZE, "--gin.ROUNDS=1",
              f"--gin.bliss.pool_task={EMBEDDED}", "--gin.bliss.pool_split='train'",
              "--gin.bliss.pool_max_examples=1000", f"--gin.bliss.reference_task={REFERENCE}",
              f"--gin.bliss.eval_task={REFERENCE}", "--gin.bliss.eval_max_batches=4", "--gin.bliss.eval_batches=4",
              "--gin.bliss.bilevel_steps=4", "--gin.bliss.bilevel_batch_size=4", "--gin.bliss.score_batch_size=32",
              "--gin.bliss.selection_report=None", "--gin.bliss.methods=('random', 'bliss', 'mates')",
              "--gin.bliss.variants={}", "--gin.bliss.scorers=%SCORERS", "--gin.target/TrainSpec.eval_every=10",
              *_small("target", steps=20), *_small("proxy", steps=10), "--gin.MatesScorer.num_probe=16",
              "--gin.MatesScorer.fit_steps=4", "--gin.MatesScorer.reference_batches=2",
              "--gin.MatesScorer.score_batch_size=32"],
}

# pipeline: (file whose appearance triggers the kill, relative to ROOT; signal; the stage killed inside it, or None
# at a boundary), in the order the run reaches them: checkpoints inside training stages (the teachers, references,
# proxies and students, the bilevel loop, which checkpoints every step here) and stage records at the boundaries
# (after scoring, after fitting)
KILLS = {
    "rho1": [("reference/checkpoints/5", signal.SIGKILL, "reference"),
             ("student_rho1/checkpoints/10", signal.SIGTERM, "student_rho1")],
    "salt": [("teacher/checkpoints/10", signal.SIGTERM, "teacher"),
             ("score/stage.json", signal.SIGKILL, None),
             ("student_salt_ds/checkpoints/15", signal.SIGKILL, "student_salt_ds")],
    "miniplm": [("teacher/checkpoints/5", signal.SIGKILL, "teacher"),
                ("score/stage.json", signal.SIGTERM, None),
                ("student_miniplm/checkpoints/10", signal.SIGKILL, "student_miniplm")],
    "bliss": [("proxy_warmup/model/checkpoints/5", signal.SIGTERM, "proxy_warmup"),
              ("bliss_r1_bilevel/model/checkpoints/2", signal.SIGKILL, "bliss_r1_bilevel"),
              ("mates_r1_fit/stage.json", signal.SIGTERM, None),
              ("mates_target/checkpoints/15", signal.SIGKILL, "mates_r1_target")],
}

# keys whose values are the wall-clock time something took: the only ones that differ between two runs
VOLATILE = ("wall_seconds", "eval_seconds", "seconds", "wall_seconds_total")


def _args(pipeline, root):
  return ["scripts/run_pipeline.py", f"--pipeline={pipeline}", *COMMANDS[pipeline], f"--gin.ROOT='{root}'"]


def _report(root):
  """ROOT/report.json with ROOT written as `ROOT` (the runs are in other directories) and without wall times."""
  def strip(x):
    if isinstance(x, dict):
      return {k: strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
      return [strip(v) for v in x]
    return x
  return strip(json.loads((root / "report.json").read_text().replace(str(root), "ROOT")))


@pytest.fixture(scope="module", params=sorted(COMMANDS))
def clean_run(request, tmp_path_factory, run_script):
  """(pipeline, ROOT) of an uninterrupted run of each pipeline, shared by the tests of that pipeline."""
  pipeline = request.param
  root = tmp_path_factory.mktemp(pipeline) / "clean"
  log = root.parent / "clean.log"
  assert run_script(_args(pipeline, root), log).wait(timeout=1800) == 0, log.read_text()[-5000:]
  return pipeline, root


def test_killed_inside_and_between_stages_then_rerun_gives_the_same_report(clean_run, kill_when_written, run_script,
                                                                         tmp_path):
  pipeline, clean_root = clean_run
  root = tmp_path / "killed"
  for trigger, _, _ in KILLS[pipeline]:  # every trigger is in a directory the clean run wrote (a checkpoint step
    assert (clean_root / trigger).parent.exists(), trigger  # may be gone: only the last few are kept)
  for i, (trigger, sig, _) in enumerate(KILLS[pipeline]):
    kill_when_written(_args(pipeline, root), root / trigger, sig, tmp_path / f"run{i}.log")
    assert not (root / "report.json").exists()
  log = tmp_path / "final.log"
  assert run_script(_args(pipeline, root), log).wait(timeout=1800) == 0, log.read_text()[-3000:]
  assert _report(root) == _report(clean_root)
  for _, _, stage in KILLS[pipeline]:  # a stage killed inside records its interrupted attempt(s), then the finished one
    if stage:  # (two interrupted when a SIGTERM sent at the boundary before it was handled only once it had started:
      record = json.loads((root / stage / "stage.json").read_text())  # Python runs handlers between bytecodes)
      ends = [a["end"] for a in record["attempts"]]
      assert len(ends) >= 2 and ends[-1] == "finished" and set(ends[:-1]) == {"interrupted"}, (stage, ends)


def test_rerun_of_a_finished_run_reuses_every_stage(clean_run, run_script, tmp_path):
  pipeline, root = clean_run
  before = _report(root)
  log = tmp_path / "rerun.log"
  assert run_script(_args(pipeline, root), log).wait(timeout=600) == 0, log.read_text()[-3000:]
  text = log.read_text()
  assert "] running" not in text and "done earlier" in text, text[-3000:]
  assert _report(root) == before
