"""Optimizers and learning-rate schedules, built from optax pieces.

Schedules (step -> learning rate):
* warmup + cosine: linear 0 -> peak over `warmup_steps`, then cosine from peak to `final_fraction`·peak at `total_steps`;
* warmup-stable-decay (WSD): linear warmup, constant peak, then a decay to `final_fraction`·peak over the last
  `decay_fraction` of steps ("linear" or "1-sqrt" shape, as in MiniCPM / Hägele et al. 2024);
* constant (with optional warmup);
any of them times 0.5^⌊step / halve_every⌋ with `halve_every > 0` (BLISS's target LR, halved every round).
"""
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from bliss_jax.choices import check_choice

SCHEDULES = ("cosine", "wsd", "constant")
DECAY_SHAPES = ("linear", "1-sqrt")
OPTIMIZERS = ("adamw", "adafactor")
DECAY_ON = ("matrices", "all")


def make_schedule(name: str = "cosine", *, peak_lr: float, total_steps: int, warmup_steps: int = 0,
                  final_fraction: float = 0.1, decay_fraction: float = 0.2, decay_shape: str = "linear",
                  halve_every: int = 0) -> optax.Schedule:
  if halve_every < 0:
    raise ValueError(f"halve_every={halve_every} must be >= 0 (0: no halving)")
  base = _base_schedule(name, peak_lr=peak_lr, total_steps=total_steps, warmup_steps=warmup_steps,
                        final_fraction=final_fraction, decay_fraction=decay_fraction, decay_shape=decay_shape)
  if not halve_every:
    return base
  return lambda step: base(step) * 0.5 ** (step // halve_every)


def _base_schedule(name, *, peak_lr, total_steps, warmup_steps, final_fraction, decay_fraction, decay_shape):
  if warmup_steps > total_steps:
    raise ValueError(f"warmup_steps={warmup_steps} exceeds total_steps={total_steps}")
  check_choice("schedule", name, SCHEDULES)
  final_lr = peak_lr * final_fraction
  if name == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak_lr, warmup_steps, max(total_steps, warmup_steps + 1), final_lr)
  if name == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, peak_lr, warmup_steps), optax.constant_schedule(peak_lr)],
                                [warmup_steps])
  # "wsd"
  decay_steps = max(1, int(round(decay_fraction * total_steps)))
  stable_end = total_steps - decay_steps
  if stable_end < warmup_steps:
    raise ValueError(f"wsd: decay of {decay_steps} steps overlaps the {warmup_steps} warmup steps")
  check_choice("wsd decay_shape", decay_shape, DECAY_SHAPES)
  if decay_shape == "linear":
    decay = optax.linear_schedule(peak_lr, final_lr, decay_steps)
  else:
    decay = lambda s: final_lr + (peak_lr - final_lr) * (1.0 - jnp.sqrt(jnp.minimum(s, decay_steps) / decay_steps))
  return optax.join_schedules([optax.linear_schedule(0.0, peak_lr, warmup_steps),
                               optax.constant_schedule(peak_lr), decay], [warmup_steps, stable_end])


def decay_mask(params):
  """Weight decay on matrices only (not on norms' scales/biases or projection biases)."""
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(name: str = "adamw", *, schedule: optax.Schedule, weight_decay: float = 0.1, b1: float = 0.9,
                   b2: float = 0.95, eps: float = 1e-8, clip_norm: Optional[float] = 1.0,
                   decay_on: str = "matrices") -> optax.GradientTransformation:
  """AdamW (decoupled decay) or Adafactor (factored second moments, as t5x/SALT), with clipping.

  Weight decay applies to matrices only (`decay_on="matrices"`) or to every parameter ("all", as torch's AdamW on
  `model.parameters()`). Clipping by global norm comes first, so the clip sees the raw gradient (`clip_norm=None`
  disables it).
  """
  check_choice("decay_on", decay_on, DECAY_ON)
  check_choice("optimizer", name, OPTIMIZERS)
  mask = decay_mask if decay_on == "matrices" else None
  if name == "adamw":
    opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
  else:
    opt = optax.adafactor(schedule, weight_decay_rate=weight_decay or None, weight_decay_mask=mask,
                          multiply_by_parameter_scale=False)
  return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm else opt
