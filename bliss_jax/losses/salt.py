"""SALT's KD stage (Algorithm 1): the KD loss of `kd.py` with a distillation weight ω that depends on the step.

Steps 1..n_KD train on l^ω = (1 − ω(j))·l + ω(j)·l_KD (SALT eq. 4, implemented once in `kd.kd_token_loss`); later
steps train on the plain LM loss and never run the teacher (the trainer's `loss_phases` compile them as another step).
ω(j) for the 1-based optimizer step j, by transition strategy (SALT App. H, with n_KD,1 < n_KD,2 = n_KD):

  step          ω(j) = ω₀ for j ≤ n_KD, 0 after                           (Algorithm 1; the default)
  linear        ω(j) = ω₀ · clip((n_KD,2 − j) / (n_KD,2 − n_KD,1), 0, 1)    (App. H, "linear decay")
  linear_ratio  r(j) = ω₀/(1 − ω₀) · clip((n_KD,2 − j) / (n_KD,2 − n_KD,1), 0, 1),
                ω(j) = r(j) / (1 + r(j))                                  (App. H, "linear ratio decay"; ω(r) inferred)

so ω = ω₀ up to n_KD,1, decays over [n_KD,1, n_KD,2], and is 0 from n_KD,2 on. RKD is `step` with n_KD = the number of
training steps. The paper's values: ω₀ = 0.667, ρ = 0.25, n_KD = 36K of 208K steps, n_KD,1 = 32K. The batch loss is
the mean over sequences of l^ω(x), each a mean over its tokens (Algorithm 1; `average="sequence"`, the default here),
or the mean over the batch's tokens (`average="token"`).
"""
import functools
from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp

from bliss_jax.choices import check_choice
from bliss_jax.losses.kd import make_kd_loss

TRANSITIONS = ("step", "linear", "linear_ratio")
OmegaSchedule = Callable[[jax.Array], jax.Array]


def _decay_fraction(step, start: int, end: int) -> jax.Array:
  """clip((end − step) / (end − start), 0, 1): 1 up to `start`, linear to 0 at `end`, float32."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.clip((end - step) / float(end - start), 0.0, 1.0)


def step_omega(step, *, omega: float, n_kd: int) -> jax.Array:
  """ω(j) = ω₀ for j ≤ n_KD, else 0 (SALT Algorithm 1, "step" transition)."""
  return jnp.where(jnp.asarray(step) <= n_kd, jnp.float32(omega), jnp.float32(0.0))


def linear_omega(step, *, omega: float, n_kd_start: int, n_kd: int) -> jax.Array:
  """ω(j) = ω₀ · clip((n_KD,2 − j) / (n_KD,2 − n_KD,1), 0, 1) (SALT App. H, linear decay)."""
  return jnp.float32(omega) * _decay_fraction(step, n_kd_start, n_kd)


def linear_ratio_omega(step, *, omega: float, n_kd_start: int, n_kd: int) -> jax.Array:
  """r(j) = ω₀/(1 − ω₀) · clip((n_KD,2 − j) / (n_KD,2 − n_KD,1), 0, 1); ω(j) = r/(1 + r) (SALT App. H, linear ratio
  decay: the ratio of the KD weight to the LM weight decays linearly)."""
  r = jnp.float32(omega / (1.0 - omega)) * _decay_fraction(step, n_kd_start, n_kd)
  return r / (1.0 + r)


def omega_schedule(transition: str = "step", *, omega: float = 0.667, n_kd: int,
                   n_kd_start: Optional[int] = None) -> OmegaSchedule:
  """ω(step) for a transition strategy: `step` (ω₀ until n_kd, then 0), `linear` or `linear_ratio` (ω₀ until
  n_kd_start, decaying to 0 at n_kd). Works on Python ints and traced int32 steps alike."""
  if not 0.0 <= omega <= 1.0:
    raise ValueError(f"omega={omega} outside [0, 1]")
  if n_kd < 0:
    raise ValueError(f"n_kd={n_kd} must be >= 0")
  if transition == "step":
    return functools.partial(step_omega, omega=omega, n_kd=n_kd)
  check_choice("transition", transition, TRANSITIONS)
  if n_kd_start is None or not 0 <= n_kd_start < n_kd:
    raise ValueError(f"the {transition!r} transition needs 0 <= n_kd_start < n_kd, got n_kd_start={n_kd_start}, "
                     f"n_kd={n_kd}")
  if transition == "linear":
    return functools.partial(linear_omega, omega=omega, n_kd_start=n_kd_start, n_kd=n_kd)
  if omega >= 1.0:
    raise ValueError("the 'linear_ratio' transition needs omega < 1 (the ratio ω/(1 − ω) is infinite at 1)")
  return functools.partial(linear_ratio_omega, omega=omega, n_kd_start=n_kd_start, n_kd=n_kd)


def make_salt_kd_loss(model, frozen_models, omega_schedule: Union[float, OmegaSchedule] = 0.667, rho: float = 0.25,
                      teacher: str = "teacher", average: str = "sequence"):
  """SALT's KD-stage loss: `kd.make_kd_loss` with ω = omega_schedule(step) (a float is a constant ω), averaged per
  sequence (`average="sequence"`, Algorithm 1) or per token (`"token"`).

  A loss with a `step` parameter: `make_train_step` passes the 1-based optimizer step. Metrics are those of
  `make_kd_loss` plus `omega`. The teacher/vocabulary checks of `make_kd_loss` run here, when the loss is built.
  """
  make_kd_loss(model, frozen_models, omega=0.0, rho=rho, teacher=teacher,
               average=average)  # fails early on a missing/mismatched teacher or an unknown average
  schedule = omega_schedule if callable(omega_schedule) else (lambda step, w=float(omega_schedule): jnp.float32(w))

  def loss_fn(params, batch, rng, frozen, step):
    omega = schedule(step)
    loss, metrics = make_kd_loss(model, frozen_models, omega=omega, rho=rho, teacher=teacher,
                                 average=average)(params, batch, rng, frozen)
    return loss, dict(metrics, omega=jnp.asarray(omega, jnp.float32))

  return loss_fn


def salt_kd_loss_factory(omega: float = 0.667, rho: float = 0.25, *, transition: str = "step", n_kd: int,
                         n_kd_start: Optional[int] = None, teacher: str = "teacher", average: str = "sequence"):
  """A loss factory `(model, frozen_models) -> loss_fn` for `trainer.train(loss_phases=[(n_kd, factory)])`."""
  schedule = omega_schedule(transition, omega=omega, n_kd=n_kd, n_kd_start=n_kd_start)
  return lambda model, frozen_models: make_salt_kd_loss(model, frozen_models, schedule, rho, teacher, average)
