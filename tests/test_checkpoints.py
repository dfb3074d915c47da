"""Asynchronous checkpoint saves (`checkpoints.RunCheckpoints`): the loop goes on while a save is written, nothing reads
or deletes around a save in flight, a failed one is named where it is waited for, and a run killed mid-save resumes
from the checkpoint before it, bit-exact (docs/RELIABILITY.md)."""
import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.path import atomicity

from bliss_jax.data.synthetic import synthetic_source
from bliss_jax.models.config import preset
from bliss_jax.training import checkpoints, trainer
from bliss_jax.training.model_dir import ModelDir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD_SECONDS = 30  # a held save is let go after this, so code that waits for it fails its test instead of hanging


@pytest.fixture
def held_commit(monkeypatch):
  """Holds every save at orbax's final rename (its files written under the temporary directory, not yet committed)
  until the returned event is set."""
  release, real = threading.Event(), atomicity.on_commit_callback

  async def held(tmp_dir, **kw):
    release.wait(timeout=HOLD_SECONDS)
    await real(tmp_dir, **kw)

  monkeypatch.setattr(atomicity, "on_commit_callback", held)
  return release


def _state(seed):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return {"params": {"w": jax.random.normal(k1, (64, 64))}, "opt_state": {"mu": jax.random.normal(k2, (64,))}}


_update = jax.jit(lambda s: jax.tree.map(lambda x: 2.0 * x + 1.0, s), donate_argnums=(0,))  # as a train step does


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_an_async_save_returns_before_its_files_are_committed_and_a_restore_gets_the_saved_state(tmp_path, held_commit):
  state = _state(0)
  saved = jax.tree.map(np.array, state)  # a host copy of what is saved
  with checkpoints.RunCheckpoints(str(tmp_path), keep=None) as ckpts:
    assert ckpts.save(1, state, {"position": 7})
    assert not held_commit.is_set()  # returned while the commit is held
    state = _update(_update(state))  # the loop goes on, donating the saved state's buffers
    assert ModelDir(str(tmp_path)).checkpoint_steps() == []  # a save in flight is not listed for any reader
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
      checkpoints.load_params(str(tmp_path), abstract_params=_abstract(state["params"]))
    threading.Timer(0.5, held_commit.set).start()
    restored, data = ckpts.restore(_abstract(state))  # waits for the save in flight
  assert data == {"position": 7} and _equal(restored, saved)
  assert not _equal(state, saved)
  assert ModelDir(str(tmp_path)).checkpoint_steps() == [1]


def test_retention_deletes_nothing_while_the_newer_save_is_in_flight(tmp_path, held_commit):
  run = ModelDir(str(tmp_path))
  with checkpoints.RunCheckpoints(str(tmp_path), keep=1) as ckpts:
    held_commit.set()
    ckpts.save(2, _state(2), {"position": 2})
    ckpts.step_succeeded(3)
    ckpts.wait()
    assert run.checkpoint_steps() == [2]
    held_commit.clear()
    ckpts.save(4, _state(4), {"position": 4})
    ckpts.step_succeeded(5)  # verifies step 4, which with keep=1 leaves step 2 to delete: not before 4 is on disk
    assert run.checkpoint_steps() == [2]
    held_commit.set()
    ckpts.wait()
    assert run.checkpoint_steps() == [4]


def test_a_full_disk_in_the_background_write_is_named_where_it_is_waited_for(tmp_path, monkeypatch):
  with checkpoints.RunCheckpoints(str(tmp_path), keep=None) as ckpts:
    assert ckpts.save(1, _state(1), {"position": 1})
    ckpts.wait()

    async def full_disk(tmp_dir, **kw):
      raise OSError(errno.ENOSPC, "No space left on device", str(tmp_dir.get()))
    monkeypatch.setattr(atomicity, "on_commit_callback", full_disk)
    assert ckpts.save(2, _state(2), {"position": 2})  # dispatched; the failure comes from the background write
    with pytest.raises(checkpoints.DiskFull, match=r"while saving checkpoint step 2 .*No space left on device.*"
                                                   r"The last good checkpoint \(step 1\)"):
      ckpts.wait()
    assert ckpts.latest_step() == 1
  assert ModelDir(str(tmp_path)).checkpoint_steps() == [1]


# --- a run killed while a save is in flight ---------------------------------------------------------------------------
V, B, T, STEPS = 128, 4, 16, 6


def _spec():
  return trainer.TrainSpec(model_config=preset("tiny", vocab_size=V), num_steps=STEPS, batch_size=B,
                           sequence_length=T, optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=0,
                           checkpoint_every=2, log_every=1)


def _train(model_dir, **kw):
  return trainer.train(model_dir=str(model_dir), spec=_spec(), progress_bar=False, mesh_data=1,
                       devices=jax.devices()[:1],
                       batch_source=synthetic_source(vocab_size=V, batch_size=B, sequence_length=T), **kw)


# A run whose save of step 4 never commits: it says so, goes on training, and waits for that save at step 6's.
_HELD_AT_4 = """
import sys, time
import jax
from orbax.checkpoint._src.path import atomicity
from bliss_jax.data.synthetic import synthetic_source
from bliss_jax.models.config import preset
from bliss_jax.training import trainer
real = atomicity.on_commit_callback
async def held(tmp_dir, **kw):
  if tmp_dir.get_final().name == "4":
    print("holding 4", flush=True)
    time.sleep(3600)
  await real(tmp_dir, **kw)
atomicity.on_commit_callback = held
spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=%d), num_steps=%d, batch_size=%d, sequence_length=%d,
                         optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=0, checkpoint_every=2,
                         log_every=1)
trainer.train(model_dir=sys.argv[1], spec=spec, progress_bar=False, mesh_data=1, devices=jax.devices()[:1],
              batch_source=synthetic_source(vocab_size=%d, batch_size=%d, sequence_length=%d))
""" % (V, STEPS, B, T, V, B, T)


def _logged_steps(d):
  """The train steps in metrics.jsonl so far ([] while a line is half-written)."""
  try:
    return [r["step"] for r in ModelDir(str(d)).metrics("train")]
  except ValueError:
    return []


def _train_rows(d):
  return [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in ModelDir(str(d)).metrics("train")]


@pytest.mark.integration
def test_a_run_killed_while_a_save_is_in_flight_resumes_from_the_previous_checkpoint_bit_exact(tmp_path, caplog):
  straight = tmp_path / "straight"
  _train(straight, async_checkpoints=False)
  d = tmp_path / "killed"
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, "-c", _HELD_AT_4, str(d)], env=env, stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "holding 4"
    deadline = time.monotonic() + 300
    while 5 not in _logged_steps(d) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert proc.poll() is None
    assert _logged_steps(d)[:5] == [1, 2, 3, 4, 5]  # it trained on while step 4's save was in flight
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  names = sorted(os.listdir(d / "checkpoints"))
  assert names[0] == "2" and names[1].startswith("4" + checkpoints.ORBAX_TMP_MARK) and len(names) == 2, names
  assert ModelDir(str(d)).latest_step() == 2
  with caplog.at_level(logging.WARNING):
    result = _train(d)
  assert result.final_step == STEPS and f"removing {d / 'checkpoints' / names[1]}" in caplog.text
  assert sorted(os.listdir(d / "checkpoints")) == sorted(os.listdir(straight / "checkpoints"))
  assert _train_rows(d) == _train_rows(straight)
  _, resumed = checkpoints.load_params(str(d))
  _, expected = checkpoints.load_params(str(straight))
  assert _equal(resumed, expected)
