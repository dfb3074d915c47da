"""The step loop every resumable run shares (`trainer.train`, the BLISS bilevel loop): progress bar, the guard against
non-finite steps and states, metric rows every `log_every` steps, checkpoints every `checkpoint_every` steps and at
the last one.
"""
import sys
import time
from typing import Any, Callable, Optional, Tuple

import jax
import tqdm

from bliss_jax.training.checkpoints import RunCheckpoints


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss or gradient; the last good checkpoint is kept untouched."""


def last_step(first_step: int, num_steps: int, stop_at_step: Optional[int]) -> int:
  """The step a run resumed after `first_step` ends at: `num_steps`, or `stop_at_step` when that comes first (never
  before `first_step`)."""
  return max(first_step, num_steps if stop_at_step is None else min(stop_at_step, num_steps))


def run_loop(state, step_fn: Callable[[Any, int], Tuple[Any, dict]], *, first_step: int, last_step: int,
             num_steps: int, checkpoints: RunCheckpoints, checkpoint_every: int,
             checkpoint_data: Callable[[int], dict], writer, log_every: int,
             nonfinite: Callable[[int, dict], Optional[str]], unsaved: str, advice: str,
             desc: str, progress_bar: bool, postfix: Callable[[dict], dict],
             tokens: Optional[Callable[[dict], float]] = None,
             after_step: Optional[Callable[[int, Any], None]] = None, after_step_every: int = 1) -> Tuple[Any, dict]:
  """Run steps `first_step + 1 .. last_step` of a `num_steps` run; returns (state, the last step's metrics).

  Each step: `state, metrics = step_fn(state, step)`, dispatched without waiting for the device: the metrics stay on
  it until the next sync point, a step that logs (every `log_every` steps and at `num_steps`), checkpoints (every
  `checkpoint_every` steps and at `last_step`) or calls `after_step`. There all the metrics since the last one come
  to the host in one transfer (as Python floats) and are checked in step order: `nonfinite(step, metrics)` says why
  a step's metrics stop the run (None: they do not), which sets aside a checkpoint saved at step − 1 and raises
  `NonFiniteLossError` naming that first bad step. So a run stops at the sync point after its first bad step, never
  later, and every checkpoint it saved holds a state whose steps were all checked. At log steps the metrics go to
  `writer` (with `tokens_per_sec`, the throughput of `tokens(metrics)` summed over the steps since the last row, when
  `tokens` is given) and `postfix(metrics)` to the progress bar; then, every `after_step_every` steps,
  `after_step(step, state)` (e.g. an evaluation); then, at checkpoint steps, the state is saved with
  `checkpoint_data(step)` unless it holds a non-finite value (then `NonFiniteLossError` with
  `unsaved.format(step=step)`). Saves are dispatched and written in the background (`RunCheckpoints.save`): the
  next save, a stop on a non-finite step and the end of the loop wait for the one in flight (and
  `RunCheckpoints.close` on any other error), so no step's checkpoint is lost to the overlap. The errors end with `checkpoints.kept_note()` and `advice`. A run that
  reaches `num_steps` keeps exactly its checkpoints' `keep` (`RunCheckpoints.run_finished`).
  """
  bar = tqdm.tqdm(total=num_steps, initial=first_step, desc=desc,
                  disable=not progress_bar or jax.process_index() != 0, dynamic_ncols=True,
                  mininterval=1.0 if sys.stderr.isatty() else 30.0)

  def stop(message):
    bar.close()
    raise NonFiniteLossError(f"{message}. {checkpoints.kept_note()} {advice}")

  metrics, pending = {}, []  # pending: (step, its metrics on the device) since the last sync point
  t_last, tokens_since = time.perf_counter(), 0.0

  def sync() -> dict:
    """The pending steps' metrics on the host, checked in step order; returns the last step's."""
    nonlocal tokens_since
    rows = [{k: float(v) for k, v in m.items()} for m in jax.device_get([m for _, m in pending])]
    steps = [s for s, _ in pending]
    pending.clear()
    for s, m in zip(steps, rows):
      why = nonfinite(s, m)
      if why is not None:
        checkpoints.reject_after_failed_step(s)
        stop(f"{why}; stopped without saving")
      checkpoints.step_succeeded(s)
      if tokens is not None:
        tokens_since += tokens(m)
    return rows[-1]

  for step in range(first_step + 1, last_step + 1):
    state, step_metrics = step_fn(state, step)
    pending.append((step, step_metrics))
    log = step % log_every == 0 or step == num_steps
    save = step % checkpoint_every == 0 or step == last_step
    after = after_step is not None and step % after_step_every == 0
    if log or save or after:
      metrics = sync()
    if log:
      if tokens is not None:
        now = time.perf_counter()
        metrics["tokens_per_sec"] = tokens_since / max(now - t_last, 1e-9)
        t_last, tokens_since = now, 0.0
      writer.write_scalars(step, metrics)
      bar.set_postfix(**postfix(metrics))
    bar.update(1)
    if after:
      after_step(step, state)
    if save:
      if not checkpoints.save(step, state, checkpoint_data(step)):
        stop(unsaved.format(step=step))
  bar.close()
  checkpoints.wait()
  if last_step == num_steps:
    checkpoints.run_finished()
  return state, metrics
