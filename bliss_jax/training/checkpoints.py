"""Orbax checkpoints of the train state plus the data-pipeline position, keep-last-N, resume from the latest.

Each checkpoint directory `MODEL_DIR/checkpoints/<step>/` holds two items: `state` (the sharded TrainState, written by
every process) and `data` (JSON: the batch iterator's position and anything else the loop needs to resume exactly).
Orbax writes to a temporary directory and renames it when complete, so a killed save never shadows a good checkpoint.
`RunCheckpoints` is how the training loops use them: saves are asynchronous (the state is copied off the device, the
files are written in the background while training continues), only finite states are saved, a checkpoint whose next
step is non-finite is set aside, an unreadable newest checkpoint falls back to the previous one, and the temporary
directory of a killed save is removed.
"""
import errno
import logging
import os
import shutil
from typing import Optional

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from bliss_jax.training import model_vocabulary
from bliss_jax.training.model_dir import ModelDir

ORBAX_TMP_MARK = ".orbax-checkpoint-tmp"


def make_manager(model_dir: str, *, max_to_keep: Optional[int] = 3, save_interval_steps: int = 1,
                 async_save: bool = False) -> ocp.CheckpointManager:
  """The orbax manager of MODEL_DIR/checkpoints; `async_save`: its saves return once the state is off the device and
  finish in the background (`manager.wait_until_finished()`)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
                                         create=True, enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(os.path.abspath(ModelDir(model_dir).checkpoints_dir), options=options,
                               item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state, data: dict, *, force: bool = False,
         wait: bool = True) -> bool:
  """Write `state` and `data` as checkpoint `step`; returns whether the manager saved. `wait=False` on an asynchronous
  manager returns once the save is dispatched (the files are complete after `manager.wait_until_finished()`)."""
  saved = manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     data=ocp.args.JsonSave(data)), force=force)
  if wait:
    manager.wait_until_finished()
  return saved


def restore(manager: ocp.CheckpointManager, abstract_state, step: Optional[int] = None):
  """(state, data) of `step` (default: latest), or None if there is none.

  `abstract_state` is a pytree of `jax.ShapeDtypeStruct`s carrying the target shardings.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                      data=ocp.args.JsonRestore()))
  return out.state, out.data


def abstract_params_on_device(cfg, device):
  """ShapeDtypeStructs of `Transformer(cfg)`'s parameters, placed on one device."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(lambda: nn.unbox(Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
                                           ["params"]))
  sharding = jax.sharding.SingleDeviceSharding(device)
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)


def load_params(model_dir: str, abstract_params=None, step: Optional[int] = None):
  """(step, params) of a MODEL_DIR's checkpoint (default: latest) without its optimizer state.

  `abstract_params`: ShapeDtypeStructs with shardings to lay the parameters out on a mesh; default: the shapes of
  MODEL_DIR/model_config.json on the first local device. Only the parameters are read, not the optimizer state.
  """
  run = ModelDir(model_dir)
  if abstract_params is None:
    abstract_params = abstract_params_on_device(run.read_model_config(), jax.local_devices()[0])
  manager = ocp.CheckpointManager(os.path.abspath(run.checkpoints_dir), item_names=("state", "data"))
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise FileNotFoundError(f"no checkpoint under {run.checkpoints_dir}")
  item = {"params": abstract_params}
  restore_args = ocp.checkpoint_utils.construct_restore_args(item)
  args = ocp.args.Composite(state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True))
  try:
    found, out = _restore_newest(manager, steps, args, run.checkpoints_dir)
  finally:
    manager.close()
  return found, out.state["params"]


class UnreadableCheckpoint(RuntimeError):
  """No checkpoint of a MODEL_DIR could be read."""


def _first_line(e: BaseException) -> str:
  return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


def _restore_newest(manager, steps, args, checkpoints_dir, on_bad=None):
  """(step, restored) of the first of `steps` that reads, warning about (and passing to `on_bad`) each newer one that
  does not. If none reads, the error names the newest step's failure: then it is not one damaged checkpoint but an
  incompatible request (another model shape, another MODEL_DIR), and nothing is set aside."""
  errors = []
  for s in steps:
    try:
      out = manager.restore(s, args=args)
    except Exception as e:  # pylint: disable=broad-except  # orbax/TensorStore raise many types for damaged files
      errors.append((s, e))
      continue
    for bad, e in errors:
      logging.warning("checkpoint step %d under %s is unreadable (truncated or empty?): %s; using step %d instead",
                      bad, checkpoints_dir, _first_line(e), s)
      if on_bad is not None:
        on_bad(bad, _first_line(e))
    return s, out
  s, e = errors[0]
  raise UnreadableCheckpoint(
      f"no checkpoint under {checkpoints_dir} could be restored (tried steps {[x for x, _ in errors]}); step "
      f"{s}: {_first_line(e)}. When every one fails alike, what is asked for differs from what they hold (another "
      "model shape or optimizer structure), not the files.") from e


@jax.jit
def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def all_finite(tree) -> bool:
  """Whether every floating-point value in `tree` (parameters, optimizer moments) is finite."""
  return bool(jax.device_get(_all_finite(tree)))


class DiskFull(OSError):
  """A checkpoint could not be written for lack of space (the cause is named; the error chain keeps the rest)."""


def no_space_cause(e: BaseException) -> Optional[str]:
  """The first error in `e`'s chain (causes and contexts) that says the device is full, as text; None if none does.
  Orbax and TensorStore wrap the OSError(ENOSPC) of a full disk in their own errors, or keep only its message."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e):
      return _first_line(e)
    e = e.__cause__ or e.__context__
  return None


class RunCheckpoints:
  """A MODEL_DIR's checkpoints as a training loop writes them (construct it while holding the run's lock).

  * `save` writes a state only if all its parameters and optimizer state are finite. With `async_save` (the default)
    it returns once the state is copied off the device, and the files are written in the background; the next `save`,
    `wait`, `latest_step`, `restore`, `reject_after_failed_step`, `run_finished` and `close` first wait for that save
    to be complete on disk (a failed one raises there). A checkpoint is listed under MODEL_DIR/checkpoints/<step> only
    once complete (orbax's rename), so a run killed mid-save resumes from the checkpoint before it.
  * A checkpoint is verified when the step after it computes a finite loss and gradient from it (`step_succeeded`);
    when that step is not finite, the checkpoint it started from is what made it so (or that step's batch) and
    `reject_after_failed_step` moves it to MODEL_DIR/rejected_checkpoints/, so a rerun resumes from the one before.
    (Move it back to resume from it, e.g. when the batch was at fault.)
  * Retention keeps the newest `keep` checkpoints (None: all), and also the newest verified one while the newest of
    all is not verified yet (mid-run, or after a stop before the last step), so setting one aside never leaves the run
    without a checkpoint; once the run has reached its last step, exactly `keep`. Nothing is deleted while a save is
    in flight: older checkpoints go once the newer one is complete.
  * `restore` falls back to the previous checkpoint when the newest is unreadable, setting the bad one aside.
  * On opening, temporary directories of saves killed mid-write are reported and removed.
  """

  def __init__(self, model_dir: str, keep: Optional[int], *, async_save: bool = True):
    self.model_dir = os.path.abspath(model_dir)
    self.dir = ModelDir(self.model_dir)
    self.keep = keep
    self.async_save = async_save
    self._clean_killed_saves()
    self.manager = make_manager(self.model_dir, max_to_keep=None, async_save=async_save)
    self._newest_verified = False
    self._pending: Optional[int] = None  # the step of a save dispatched and not yet waited for

  def _clean_killed_saves(self) -> None:
    root = self.dir.checkpoints_dir
    if jax.process_index() != 0 or not os.path.isdir(root):
      return
    for name in sorted(os.listdir(root)):
      if ORBAX_TMP_MARK in name:
        logging.warning("removing %s: the temporary directory of a checkpoint save that never finished (a killed "
                        "run)", os.path.join(root, name))
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step (after waiting for a save in flight), or None."""
    self.wait()
    return self.manager.latest_step()

  def restore(self, abstract_state):
    """(state, data) of the newest readable checkpoint, or None if there is none."""
    self.wait()
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
    step, out = _restore_newest(self.manager, steps, args, self.dir.checkpoints_dir,
                                on_bad=lambda s, why: self._set_aside(s, f"unreadable: {why}"))
    self._newest_verified = False
    return out.state, out.data

  def save(self, step: int, state, data: dict) -> bool:
    """Save `state` (and the loop's `data`) as `step`, unless it holds a non-finite value; returns whether it did
    (with `async_save`: whether the save was dispatched). A save that fails for lack of space raises `DiskFull` naming
    the step, the directory and the kept checkpoint (an asynchronous one at the next wait)."""
    if not all_finite(state):
      return False
    self.wait()
    try:
      save(self.manager, step, state, data, force=True, wait=False)
    except Exception as e:  # pylint: disable=broad-except
      self._raise_disk_full_or(e, step)
    self._pending = step
    self._newest_verified = False
    if not self.async_save:
      self.wait()
    return True

  def wait(self) -> None:
    """Block until the save in flight (if any) is complete on disk, then apply retention. Raises `DiskFull` (or the
    storage error) if that save failed; the run's checkpoints are then those before it."""
    step, self._pending = self._pending, None
    if step is None:
      return
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._newest_verified = False
      self._raise_disk_full_or(e, step)
    self._prune()

  def _raise_disk_full_or(self, e: Exception, step: int):
    """Raise `DiskFull` for the failed save of `step` if `e` says the device is full, else `e` itself."""
    cause = no_space_cause(e)
    if cause is None:
      raise e
    self.manager.reload()
    raise DiskFull(f"no space left on the device while saving checkpoint step {step} under "
                   f"{self.dir.checkpoints_dir} ({cause}). Free space, then rerun to resume. "
                   f"{self.kept_note()}") from e

  def step_succeeded(self, step: int) -> None:
    """Step `step` computed a finite loss and gradient, which verifies a checkpoint saved at `step - 1`."""
    if not self._newest_verified and self.manager.latest_step() == step - 1:
      self._newest_verified = True
      self._prune()

  def reject_after_failed_step(self, step: int) -> Optional[int]:
    """Step `step` was not finite: set aside a checkpoint saved at `step - 1`; returns the newest kept step."""
    self.wait()
    if self.manager.latest_step() == step - 1:
      self._set_aside(step - 1, f"step {step}, the first after it, computed a non-finite loss or gradient from it")
    return self.manager.latest_step()

  def run_finished(self) -> None:
    """The run reached its last step: keep exactly the newest `keep` checkpoints."""
    self.wait()
    self._newest_verified = True
    self._prune()

  def _prune(self) -> None:
    steps = sorted(self.manager.all_steps())
    if self._pending is not None or self.keep is None or len(steps) <= self.keep:
      return
    keep = set(steps[-self.keep:])
    if not self._newest_verified:
      keep.add(steps[-2])
    for s in steps:
      if s not in keep:
        self.manager.delete(s)

  def _set_aside(self, step: int, why: str) -> None:
    src = self.dir.checkpoint_dir(step)
    dst = os.path.join(self.dir.rejected_dir, str(step))
    if jax.process_index() == 0 and os.path.isdir(src):
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      n = 1
      while os.path.exists(dst):
        dst, n = os.path.join(self.dir.rejected_dir, f"{step}.{n}"), n + 1
      os.rename(src, dst)
      logging.warning("checkpoint step %d set aside to %s (%s)", step, dst, why)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"set_aside_{step}")
    self.manager.reload()

  def close(self) -> None:
    """Wait for the save in flight, then release the manager."""
    try:
      self.wait()
    finally:
      self.manager.close()

  def __enter__(self) -> "RunCheckpoints":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
      return
    try:  # leaving on an error: the save in flight still completes, and its own failure does not hide the error
      self.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.error("while stopping on %s, the checkpoint save in flight failed too: %s", exc_type.__name__,
                    _first_line(e))

  def kept_note(self) -> str:
    """A sentence for error messages: which checkpoint a rerun will resume from."""
    kept = self.latest_step()
    if kept is None:
      return "No checkpoint is left: a rerun starts from step 0."
    return f"The last good checkpoint (step {kept}) under {self.dir.checkpoints_dir} is kept."


def check_vocabulary(name: str, model_dir: str, vocab_size: int, task_vocab_size: Optional[int] = None,
                     vocabulary: Optional[dict] = None) -> None:
  """Refuse a frozen model (teacher, reference LM, proxy) whose vocabulary differs from the one it serves: another
  `vocab_size`, or (when both are known) another task vocabulary size recorded in its run_config.json, or another
  vocabulary than `vocabulary` (a `data.vocabulary.vocabulary_record`) by its recorded fingerprint
  (`model_vocabulary.check`; a MODEL_DIR without a record is let through with a warning). Token ids and logits of
  different vocabularies do not correspond (a reference LM's loss on an id it lacks is NaN)."""
  run = ModelDir(model_dir)
  cfg = run.read_model_config()
  recorded = (run.read_run_config() or {}).get("task_vocab_size")
  if cfg.vocab_size != vocab_size or (task_vocab_size and recorded and recorded != task_vocab_size):
    raise ValueError(
        f"frozen model {name!r} ({model_dir}) has another vocabulary: vocab_size {cfg.vocab_size} (task vocabulary "
        f"{recorded or 'not recorded'}) where this run has {vocab_size} (task vocabulary "
        f"{task_vocab_size or 'not given'}); frozen models must use the trained model's tokenizer")
  if vocabulary is not None:
    model_vocabulary.check(model_dir, vocabulary, what=f"the run that loads it as frozen model {name!r}")
