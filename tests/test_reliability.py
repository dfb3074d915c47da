"""Training runs under bad input and faults: a locked run directory, a changed configuration on resume, a poisoned or
unreadable checkpoint, a frozen model with another vocabulary, failed commands, invalid values (docs/RELIABILITY.md)."""
import dataclasses
import functools
import glob
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest

from bliss_jax import cli
from bliss_jax.data.synthetic import synthetic_source
from bliss_jax.losses.lm import make_lm_loss
from bliss_jax.losses.selective import make_selective_loss
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.pipelines.stages import run_stage
from bliss_jax.training import checkpoints, run_loop, trainer
from bliss_jax.training.model_dir import ModelDir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, B, T = 128, 4, 16


SPEC_FIELDS = {f.name for f in dataclasses.fields(trainer.TrainSpec)}


def _kw(model_dir, **over):
  """A tiny run: 6 steps of 4 x 16 synthetic tokens, checkpoints every 2 steps, one device. `over` may name
  `TrainSpec` fields as well as `train` arguments."""
  spec = dict(model_config=preset("tiny", vocab_size=V), num_steps=6, batch_size=B, sequence_length=T,
              optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=0, checkpoint_every=2, log_every=1)
  kw = dict(model_dir=str(model_dir), batch_source=synthetic_source(vocab_size=V, batch_size=B, sequence_length=T),
            progress_bar=False, mesh_data=1, devices=jax.devices()[:1])
  for k, v in over.items():
    (spec if k in SPEC_FIELDS else kw)[k] = v
  return dict(kw, spec=trainer.TrainSpec(**spec))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
  """A run of 6 steps stopped at step 4 (checkpoints 2 and 4); tests work on copies."""
  d = tmp_path_factory.mktemp("stopped") / "run"
  trainer.train(**_kw(d, stop_at_step=4))
  return d


def _copy(src, tmp_path):
  dst = tmp_path / "run"
  shutil.copytree(src, dst)
  return dst


def _files(d):
  """{relative path: bytes} of every file under `d` but the lock."""
  out = {}
  for p in glob.glob(os.path.join(d, "**"), recursive=True):
    if os.path.isfile(p) and not p.endswith(".lock"):
      with open(p, "rb") as f:
        out[os.path.relpath(p, d)] = f.read()
  return out


def _train_steps(d):
  return [r["step"] for r in map(json.loads, open(os.path.join(d, "metrics.jsonl"))) if r["split"] == "train"]


def _subprocess(code, *args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)


# --- one process per run directory ------------------------------------------------------------------------------------
_HOLDER = """
import sys, jax
from bliss_jax.data.synthetic import synthetic_source
from bliss_jax.models.config import preset
from bliss_jax.training import trainer
base = synthetic_source(vocab_size=128, batch_size=4, sequence_length=16)
def source(split, **kw):
  if split == "train":
    print("training", flush=True)
    sys.stdin.readline()  # hold the run open until the test says go
  return base(split, **kw)
spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=128), num_steps=6, batch_size=4, sequence_length=16,
                         optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=0, checkpoint_every=2,
                         log_every=1)
trainer.train(model_dir=sys.argv[1], spec=spec, batch_source=source, progress_bar=False, mesh_data=1,
              devices=jax.devices()[:1])
"""


@pytest.mark.integration
def test_a_second_run_in_a_model_dir_is_refused_naming_the_holder(tmp_path):
  d = tmp_path / "run"
  holder = _subprocess(_HOLDER, d)
  try:
    assert holder.stdout.readline().strip() == "training"  # the holder is about to take its first step
    with pytest.raises(RuntimeError, match=rf"in use by another training run: pid {holder.pid} on host "
                                           rf"{re.escape(socket.gethostname())}"):
      trainer.train(**_kw(d))
  finally:
    holder.communicate("\n", timeout=300)
  assert holder.returncode == 0
  assert _train_steps(d) == [1, 2, 3, 4, 5, 6]  # every step once, by the holder
  assert sorted(os.listdir(d / "checkpoints")) == ["2", "4", "6"]


def test_a_killed_runs_stale_lock_and_unfinished_save_are_reported_and_cleared(stopped_run, tmp_path, caplog):
  d = _copy(stopped_run, tmp_path)
  # what a run killed while saving step 6 leaves: its lock record, orbax's temporary directory
  (d / "run.lock").write_text(json.dumps({"pid": 999999, "host": "gone-host", "started": "2020-01-01T00:00:00"}))
  tmp = d / "checkpoints" / "6.orbax-checkpoint-tmp-1700000000000000"
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "partial").write_text("x")
  with caplog.at_level(logging.WARNING):
    result = trainer.train(**_kw(d))
  assert result.final_step == 6
  assert "stale lock record of pid 999999 on host gone-host" in caplog.text
  assert f"removing {tmp}" in caplog.text and not tmp.exists()
  assert sorted(os.listdir(d / "checkpoints")) == ["2", "4", "6"]
  assert (d / "run.lock").read_text() == ""  # released cleanly


_STAGE_HOLDER = """
import sys
from bliss_jax.pipelines.stages import run_stage
def fn(stage_dir):
  print("running", flush=True)
  sys.stdin.readline()
  return {"by": "holder"}
run_stage(sys.argv[1], "train", fn, {"x": 1}, log=lambda m: None)
"""


@pytest.mark.integration
def test_a_running_pipeline_stage_is_refused_to_a_second_process(tmp_path):
  holder = _subprocess(_STAGE_HOLDER, tmp_path)
  calls = []
  try:
    assert holder.stdout.readline().strip() == "running"
    with pytest.raises(RuntimeError, match=rf"in use by another pipeline stage 'train': pid {holder.pid}"):
      run_stage(str(tmp_path), "train", lambda d: calls.append(d) or {"by": "second"}, {"x": 1}, log=lambda m: None)
  finally:
    holder.communicate("\n", timeout=120)
  assert holder.returncode == 0 and calls == []
  assert run_stage(str(tmp_path), "train", lambda d: calls.append(d), {"x": 1}, log=lambda m: None) == {"by": "holder"}


# --- the configuration a checkpoint was trained with ------------------------------------------------------------------
def test_resume_refuses_a_changed_configuration_naming_each_field(stopped_run, tmp_path):
  d = _copy(stopped_run, tmp_path)
  before = _files(d)
  with pytest.raises(ValueError) as e:
    trainer.train(**_kw(d, batch_size=8, batch_source=synthetic_source(vocab_size=V, batch_size=8, sequence_length=T),
                        optimizer=trainer.OptimizerConfig(warmup_steps=1, peak_lr=3e-3)))
  message = str(e.value)
  assert "batch_size: 4 -> 8" in message and "optimizer.peak_lr: 0.001 -> 0.003" in message
  assert "data.closure.batch_size: 4 -> 8" in message and "step 4" in message
  assert _files(d) == before  # nothing in the run changed
  # cadence, retention and the stop step are not part of the computation: they change freely
  assert trainer.train(**_kw(d, eval_every=3, checkpoint_every=1, keep_checkpoints=2, log_every=2,
                             stop_at_step=5)).final_step == 5
  # an explicitly allowed change resumes, and the record says what changed where
  result = trainer.train(**_kw(d, optimizer=trainer.OptimizerConfig(warmup_steps=1, peak_lr=3e-4),
                               allow_config_change=("optimizer.peak_lr",)))
  assert result.final_step == 6 and np.isfinite(result.last_train_metrics["loss"])
  record = json.load(open(d / "run_config.json"))
  assert record["optimizer"]["peak_lr"] == 3e-4
  assert record["changes"] == [{"step": 5, "fields": {"optimizer.peak_lr": [1e-3, 3e-4]}}]


def test_num_steps_below_the_checkpoint_is_refused_and_above_needs_permission(stopped_run, tmp_path):
  d = _copy(stopped_run, tmp_path)
  before = _files(d)
  with pytest.raises(ValueError, match="num_steps=3 is below the latest checkpoint's step 4"):
    trainer.train(**_kw(d, num_steps=3))
  with pytest.raises(ValueError, match="num_steps=3 is below the latest checkpoint's step 4"):
    trainer.train(**_kw(d, num_steps=3, allow_config_change=("num_steps",)))  # whatever is allowed
  with pytest.raises(ValueError, match=r"num_steps: 6 -> 8"):
    trainer.train(**_kw(d, num_steps=8))
  assert _files(d) == before
  assert trainer.train(**_kw(d, num_steps=8, allow_config_change=("num_steps",))).final_step == 8
  assert _train_steps(d) == list(range(1, 9))


# --- the NaN guard keeps only checkpoints a run can continue from ---------------------------------------------------
def _loss_and_grad_norm(params, cfg):
  batch = next(synthetic_source(vocab_size=V, batch_size=B, sequence_length=T)("train"))
  loss_fn = make_lm_loss(Transformer(cfg))
  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, jax.random.PRNGKey(0), None)
  return float(loss), float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads))))


def test_nan_guard_keeps_a_checkpoint_the_next_step_can_run_from(tmp_path):
  # warm-up to 1e33 over 1000 steps: step 1 runs at lr 0, step 2 at 1e30, which leaves |params| ~ 1e30 (finite);
  # step 3's gradient from them is NaN
  huge = trainer.OptimizerConfig(peak_lr=1e33, schedule="constant", warmup_steps=1000, clip_norm=None)
  kw = _kw(tmp_path, num_steps=1000, stop_at_step=6, checkpoint_every=1, optimizer=huge)
  with pytest.raises(run_loop.NonFiniteLossError, match="at step 3") as e:
    trainer.train(**kw)
  kept = int(re.search(r"last good checkpoint \(step (\d+)\)", str(e.value)).group(1))
  assert kept == max(int(s) for s in os.listdir(tmp_path / "checkpoints"))
  cfg = ModelDir(str(tmp_path)).read_model_config()
  loss, grad_norm = _loss_and_grad_norm(checkpoints.load_params(str(tmp_path))[1], cfg)
  assert np.isfinite(loss) and np.isfinite(grad_norm)
  assert kept == 1 and os.listdir(tmp_path / "rejected_checkpoints") == ["2"]
  # resuming with a lower learning rate, as the message advises, continues from the kept checkpoint
  kw.update(spec=kw["spec"].replace(optimizer=dataclasses.replace(huge, peak_lr=1e-3)),
            allow_config_change=("optimizer.peak_lr",))
  result = trainer.train(**kw)
  assert result.final_step == 6 and np.isfinite(result.last_train_metrics["loss"])


def test_nan_guard_between_sync_points_names_the_first_bad_step(tmp_path):
  # as above, step 3 is the first NaN step; metrics reach the host only at steps 4 (checkpoint) and 5 (log)
  huge = trainer.OptimizerConfig(peak_lr=1e33, schedule="constant", warmup_steps=1000, clip_norm=None)
  kw = _kw(tmp_path, num_steps=1000, stop_at_step=8, checkpoint_every=4, log_every=5, optimizer=huge)
  with pytest.raises(run_loop.NonFiniteLossError, match="at step 3; stopped without saving"):
    trainer.train(**kw)
  assert not os.listdir(tmp_path / "checkpoints")  # step 4's state was never saved
  assert not os.path.exists(tmp_path / "metrics.jsonl") or _train_steps(tmp_path) == []


def test_a_state_with_a_non_finite_value_is_never_saved(tmp_path):
  ckpts = checkpoints.RunCheckpoints(str(tmp_path), keep=3)
  state = {"params": {"w": np.ones((2, 2), np.float32)}, "opt_state": {"nu": np.array([1.0, np.inf], np.float32)}}
  assert not ckpts.save(1, state, {"position": 1})
  assert ckpts.latest_step() is None and not glob.glob(str(tmp_path / "checkpoints" / "*"))
  state["opt_state"]["nu"][1] = 2.0
  assert ckpts.save(1, state, {"position": 1}) and ckpts.latest_step() == 1
  ckpts.close()


# --- an unreadable newest checkpoint -------------------------------------------------------------------------------
def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(stopped_run, tmp_path, caplog):
  d = _copy(stopped_run, tmp_path)
  for f in glob.glob(str(d / "checkpoints" / "4" / "state" / "**" / "d" / "*"), recursive=True):
    os.truncate(f, os.path.getsize(f) // 2)  # a save cut off by a full disk
  with caplog.at_level(logging.WARNING):
    step, params = checkpoints.load_params(str(d))
  assert step == 2 and "checkpoint step 4" in caplog.text and "unreadable" in caplog.text
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  result = trainer.train(**_kw(d))
  assert result.final_step == 6
  assert (d / "rejected_checkpoints" / "4").is_dir() and sorted(os.listdir(d / "checkpoints")) == ["2", "4", "6"]
  assert _train_steps(d) == [1, 2, 3, 4, 5, 6]  # the rows of the lost steps 3-4 were retrained, not duplicated


# --- frozen models share the trained model's vocabulary ---------------------------------------------------------------
def test_a_frozen_reference_with_another_vocabulary_is_refused_at_load(stopped_run, tmp_path):
  slm = functools.partial(make_selective_loss, ratio=0.5, reference="online")
  with pytest.raises(ValueError, match=r"frozen model 'reference' .* has another vocabulary: vocab_size 128"):
    trainer.train(**_kw(tmp_path, model_config=preset("tiny", vocab_size=256), loss_factory=slm,
                        batch_source=synthetic_source(vocab_size=256, batch_size=B, sequence_length=T),
                        frozen_model_dirs={"reference": str(stopped_run)}))
  assert not os.path.exists(tmp_path / "checkpoints") and not os.path.exists(tmp_path / "run_config.json")


# --- a failed command leaves an existing run as it was --------------------------------------------------------------
CLI = ["--gin_file=base.gin", "--gin_file=models/tiny.gin", "--gin_file=data/synthetic.gin", "--tasks_module=bliss_jax",
       "--gin.NUM_STEPS=4", "--gin.SEQUENCE_LENGTH=16", "--gin.TrainSpec.eval_every=0",
       "--gin.TrainSpec.checkpoint_every=2", "--gin.OptimizerConfig.warmup_steps=1", "--gin.train.progress_bar=False"]


def _cli_train(model_dir, *extra):
  gin.clear_config()
  try:
    args = cli.parse_args([*CLI, f"--gin.MODEL_DIR='{model_dir}'", *extra])
    cli.setup(args)
    return cli.run_gin_function("train", args)
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
  """A run made by the training CLI: 4 steps, checkpoints 2 and 4."""
  d = tmp_path_factory.mktemp("cli") / "run"
  _cli_train(d)
  return d


@pytest.mark.parametrize("bad", [
    ["--gin.model_config.d_model=96"],            # a refused resume: another shape
    ["--gin.model_config.preset='tinyy'"],        # a typo'd preset
    ["--gin.OptimizerConfig.peak_lr=-0.001"],     # a bad learning rate
    ["--gin.TrainSpec.checkpoint_every=0"],       # a bad cadence
])
def test_a_failed_command_changes_nothing_in_an_existing_run(cli_run, tmp_path, bad):
  d = _copy(cli_run, tmp_path)
  before = _files(d)
  assert {"config.gin", "model_config.json"} <= set(before)
  with pytest.raises(ValueError):
    _cli_train(d, *bad)
  assert _files(d) == before
  assert checkpoints.load_params(str(d))[0] == 4


# --- invalid values fail before anything is written -------------------------------------------------------------------
@pytest.mark.parametrize("over, name", [
    (dict(keep_checkpoints=0), "keep_checkpoints"), (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(num_steps=2.5), "num_steps"), (dict(num_steps=-1), "num_steps"), (dict(sequence_length=0), "sequence_length"),
    (dict(stop_at_step=0), "stop_at_step"), (dict(batch_size=True), "batch_size"),
    (dict(optimizer=trainer.OptimizerConfig(peak_lr=float("nan"))), "optimizer.peak_lr"),
    (dict(optimizer=trainer.OptimizerConfig(b2=1.5)), "optimizer.b2"),
])
def test_invalid_values_are_refused_before_anything_is_written(tmp_path, over, name):
  with pytest.raises(ValueError, match=re.escape(name) + "="):
    trainer.train(**_kw(tmp_path / "run", **over))
  assert not os.path.exists(tmp_path / "run")


def test_a_gin_bound_loss_parameter_is_in_the_record_and_a_change_is_refused():
  import bliss_jax.configurables  # noqa: F401  (the gin edge: registers selective_loss and the bindings lookup)
  from bliss_jax.training import run_config
  gin.clear_config()
  try:
    gin.parse_config("RATIO = 0.6\nselective_loss.ratio = %RATIO")
    loss = gin.get_configurable("selective_loss")
    old = {"loss": run_config.loss_schedule(loss, None)}
    assert old["loss"][0][1]["bound"] == {"ratio": 0.6}
    assert run_config.check_resume(old, {"loss": run_config.loss_schedule(loss, None)}, 4) == {}
    gin.parse_config("RATIO = 0.3")
    with pytest.raises(run_config.RunConfigChanged, match=r'loss: .*"bound": \{"ratio": 0.6\}.* -> .*"bound": \{"ratio": 0.3\}'):
      run_config.check_resume(old, {"loss": run_config.loss_schedule(loss, None)}, 4)
  finally:
    gin.clear_config()
  # a configurable with nothing bound is described as before (so earlier runs' records still match)
  assert run_config.loss_schedule(gin.get_configurable("selective_loss"), None) == [
      [None, run_config.describe(make_selective_loss)]]


def test_a_full_disk_while_saving_names_the_cause_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
  import errno  # pylint: disable=g-import-not-at-top
  state = {"w": jax.numpy.arange(4.0)}
  with checkpoints.RunCheckpoints(str(tmp_path), keep=None) as ckpts:
    assert ckpts.save(1, state, {"position": 1})
    real_save = checkpoints.save

    def full_disk(*args, **kw):
      try:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoints" / "2"))
      except OSError as e:
        raise ValueError("Error writing local file: commit failed") from e  # as a storage layer wraps it
    monkeypatch.setattr(checkpoints, "save", full_disk)
    with pytest.raises(checkpoints.DiskFull, match=r"no space left on the device while saving checkpoint step 2 .*"
                                                   r"OSError: \[Errno 28\] No space left on device.*Free space, then "
                                                   r"rerun to resume\. The last good checkpoint \(step 1\)"):
      ckpts.save(2, state, {"position": 2})
    tensorstore_message = ('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database: Failed to write 247023 bytes '
                           "to file 7: No space left on device [os_error_code='28']")  # what orbax raised on a full tmpfs
    monkeypatch.setattr(checkpoints, "save", lambda *a, **k: (_ for _ in ()).throw(ValueError(tensorstore_message)))
    with pytest.raises(checkpoints.DiskFull, match=r"while saving checkpoint step 2 .*RESOURCE_EXHAUSTED.*step 1"):
      ckpts.save(2, state, {"position": 2})
    monkeypatch.setattr(checkpoints, "save", lambda *a, **k: (_ for _ in ()).throw(ValueError("another failure")))
    with pytest.raises(ValueError, match="another failure"):  # other errors pass through unchanged
      ckpts.save(2, state, {"position": 2})
    monkeypatch.setattr(checkpoints, "save", real_save)
    assert ckpts.latest_step() == 1
