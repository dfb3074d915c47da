"""Checks of configuration values where they enter a training run, each failing with a `ValueError` that names the
setting, its value and what is expected (before anything is built or written)."""
import math
import numbers
from typing import Optional, Sequence

from bliss_jax.choices import check_choice
from bliss_jax.training.optimizers import DECAY_SHAPES, OPTIMIZERS, SCHEDULES


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def check_int(name: str, v, *, minimum: int = 1, optional: bool = False, why: str = "") -> None:
  """`v` is an integer >= `minimum` (or None when `optional`)."""
  if optional and v is None:
    return
  if not _is_int(v) or v < minimum:
    raise ValueError(f"{name}={v!r}: expected an integer >= {minimum}" + (" or None" if optional else "") +
                     (f" ({why})" if why else ""))


def check_real(name: str, v, *, low: float = 0.0, high: float = math.inf, low_open: bool = False,
               high_open: bool = False, optional: bool = False) -> None:
  """`v` is a finite number in the interval [low, high] (ends open as asked), or None when `optional`."""
  if optional and v is None:
    return
  ok = _is_real(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
  if not ok:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ValueError(f"{name}={v!r}: expected a finite number in {interval}" + (" or None" if optional else ""))


def check_optimizer(opt, name: str = "optimizer") -> None:
  """An `OptimizerConfig`'s fields."""
  check_choice(f"{name}.name", opt.name, OPTIMIZERS)
  check_choice(f"{name}.schedule", opt.schedule, SCHEDULES)
  check_real(f"{name}.peak_lr", opt.peak_lr, low_open=True)
  check_int(f"{name}.warmup_steps", opt.warmup_steps, minimum=0)
  check_real(f"{name}.final_fraction", opt.final_fraction)
  check_real(f"{name}.decay_fraction", opt.decay_fraction, high=1.0, low_open=True)
  check_choice(f"{name}.decay_shape", opt.decay_shape, DECAY_SHAPES)
  check_int(f"{name}.halve_every", opt.halve_every, minimum=0)
  check_real(f"{name}.weight_decay", opt.weight_decay)
  check_real(f"{name}.b1", opt.b1, high=1.0, high_open=True)
  check_real(f"{name}.b2", opt.b2, high=1.0, high_open=True)
  check_real(f"{name}.clip_norm", opt.clip_norm, low_open=True, optional=True)


def check_loop(*, num_steps, checkpoint_every, keep_checkpoints: Optional[int], log_every,
               stop_at_step=None) -> None:
  """The settings every training loop shares: steps, checkpoint cadence and retention, logging."""
  check_int("num_steps", num_steps)
  check_int("checkpoint_every", checkpoint_every)
  check_int("keep_checkpoints", keep_checkpoints, optional=True,
            why="0 would delete every checkpoint, the final one included; None keeps all")
  check_int("log_every", log_every)
  check_int("stop_at_step", stop_at_step, optional=True)


def check_train(*, num_steps, batch_size, sequence_length, num_microbatches, seed, eval_every, eval_batches,
                checkpoint_every, keep_checkpoints, log_every, stop_at_step, vocab_size, optimizer,
                loss_phase_ends: Sequence[int] = ()) -> None:
  """Every value `trainer.train` takes that is not a model, a function or a path."""
  check_loop(num_steps=num_steps, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
             log_every=log_every, stop_at_step=stop_at_step)
  check_int("batch_size", batch_size)
  check_int("sequence_length", sequence_length)
  check_int("num_microbatches", num_microbatches)
  check_int("seed", seed, minimum=0)
  check_int("eval_every", eval_every, minimum=0)
  check_int("eval_batches", eval_batches, minimum=0, optional=True)
  check_int("vocab_size", vocab_size, optional=True)
  check_optimizer(optimizer)
  if batch_size % num_microbatches:
    raise ValueError(f"batch_size={batch_size} is not divisible into num_microbatches={num_microbatches}")
  for last in loss_phase_ends:
    check_int("loss_phases' last step", last)
  if list(loss_phase_ends) != sorted(loss_phase_ends):
    raise ValueError(f"loss_phases must be in increasing step order, got {list(loss_phase_ends)}")
