"""`make_train_step`: one optimizer step for any loss function, with gradient accumulation over micro-batches.

The loss function decides the objective (CE, KD, selective CE, bilevel lower level, ...); this factory only
differentiates it, accumulates and applies the update. Randomness is a pure function of (seed, step):
`rng = fold_in(base_rng, step)`, so a resumed run draws the same numbers.
"""
import inspect

import jax
import jax.numpy as jnp
import optax

from bliss_jax.training.train_state import TrainState


COUNT_METRICS = ("num_tokens", "num_sequences", "denominator")  # summed over micro-batches, not averaged


def split_microbatches(batch: dict, num_microbatches: int) -> dict:
  """[B, ...] -> [num_microbatches, B / num_microbatches, ...] (contiguous slices)."""
  def split(x):
    if x.shape[0] % num_microbatches:
      raise ValueError(f"batch of {x.shape[0]} is not divisible into {num_microbatches} micro-batches")
    return x.reshape((num_microbatches, x.shape[0] // num_microbatches) + x.shape[1:])
  return jax.tree.map(split, batch)


def make_train_step(loss_fn, tx: optax.GradientTransformation, *, schedule=None, num_microbatches: int = 1):
  """Returns `train_step(state, batch, base_rng, frozen=None) -> (state, metrics)`, ready for `jax.jit`.

  A loss with a `step` keyword gets the 1-based number of the optimizer step being taken (a traced int32).
  `frozen` (e.g. a teacher's or reference model's parameters) is passed through to `loss_fn(params, batch, rng,
  frozen)` as a jit argument, so frozen models are sharded like the trained one and never baked into the program.

  With `num_microbatches > 1` the batch is processed in slices by `lax.scan` and the gradient is the average of the
  slices' gradients weighted by each slice's loss denominator (`metrics["denominator"]`, else `metrics["num_tokens"]`;
  `losses.lm`): for a token mean (weights = tokens) or a per-sequence mean (weights = sequences) this equals the
  full-batch gradient exactly (up to float summation order). Metrics are weighted the same way, except the counts
  (`COUNT_METRICS`), which are summed.
  """
  if "step" in inspect.signature(loss_fn).parameters:  # losses that change with the step (e.g. SALT's ω(step))
    step_loss = loss_fn
  else:
    step_loss = lambda params, batch, rng, frozen, step: loss_fn(params, batch, rng, frozen)
  grad_fn = jax.value_and_grad(step_loss, has_aux=True)  # differentiates params only

  def train_step(state: TrainState, batch: dict, base_rng: jax.Array, frozen=None):
    rng = jax.random.fold_in(base_rng, state.step)
    if num_microbatches == 1:
      (_, metrics), grads = grad_fn(state.params, batch, rng, frozen, state.step + 1)
    else:
      def body(carry, mb_and_index):
        mb, i = mb_and_index
        (_, m), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i), frozen, state.step + 1)
        w = m.get("denominator", m.get("num_tokens", jnp.float32(1.0)))
        grads, msum, wsum = carry
        grads = jax.tree.map(lambda a, b: a + w * b, grads, g)
        msum = {k: msum[k] + (m[k] if k in COUNT_METRICS else w * m[k]) for k in m}
        return (grads, msum, wsum + w), None

      mbs = split_microbatches(batch, num_microbatches)
      zeros_g = jax.tree.map(jnp.zeros_like, state.params)
      m_shape = jax.eval_shape(lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], mbs), rng, frozen, state.step + 1)[0][1])
      zeros_m = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape)
      (gsum, msum, wsum), _ = jax.lax.scan(body, (zeros_g, zeros_m, jnp.float32(0.0)),
                                           (mbs, jnp.arange(num_microbatches)))
      wsum = jnp.maximum(wsum, 1e-9)
      grads = jax.tree.map(lambda g: g / wsum, gsum)
      metrics = {k: v if k in COUNT_METRICS else v / wsum for k, v in msum.items()}
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    if schedule is not None:
      metrics["learning_rate"] = schedule(state.step)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step
