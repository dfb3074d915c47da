"""The language-modelling loss every method starts from, and the model call on SeqIO decoder features.

A loss function has the signature `loss_fn(params, batch, rng, frozen) -> (loss, metrics)`, where `frozen` holds the
parameters of any frozen models the loss consults (teacher, reference model; None for plain LM training);
the loss's denominator, the count it is a mean over, is `metrics["denominator"]` when present (e.g. the number of
sequences of a per-sequence mean), else `metrics["num_tokens"]` (so gradient accumulation can weight micro-batches
exactly), and every other entry is a scalar to log. A loss factory is `factory(model, frozen_models) -> loss_fn`, with
`frozen_models` the dict of frozen Flax modules (by name) matching `frozen`.
"""
from typing import Callable, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bliss_jax.choices import check_choice

LossFn = Callable[..., tuple]
AVERAGES = ("token", "sequence")


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-token CE −log softmax(logits)[target], float32, shape of `targets`."""
  logits = logits.astype(jnp.float32)
  return jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]


def model_logits(model: nn.Module, params, batch: dict, **kwargs) -> jax.Array:
  """Run `model` on a SeqIO decoder batch (packed or not, causal or prefix-LM)."""
  return model.apply({"params": params}, batch["decoder_input_tokens"],
                     segment_ids=batch.get("decoder_segment_ids"), positions=batch.get("decoder_positions"),
                     prefix_mask=batch.get("decoder_causal_attention"), **kwargs)


def next_token_metrics(logits: jax.Array, batch: dict) -> dict:
  """Sums (not means) over the loss-carrying tokens, so they add across batches and hosts: CE, correct, count."""
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"].astype(jnp.float32)
  ce = token_cross_entropy(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return {"ce_sum": jnp.sum(ce * weights), "correct_sum": jnp.sum(correct * weights), "num_tokens": jnp.sum(weights)}


def masked_mean(values: jax.Array, weights: jax.Array, axis=None, count=None) -> jax.Array:
  """Σ v·w / max(n, 1) over `axis` (all axes by default), n = Σ w over `axis` or the given `count`.

  With w = `decoder_loss_weights` this is the mean over the loss-carrying positions (0 where there are none); with
  `(w, count) = averaging_weights(batch, average)`, the batch mean of either average. The weights are cast to float32.
  """
  w = weights.astype(jnp.float32)
  return jnp.sum(values * w, axis) / jnp.maximum(jnp.sum(w, axis) if count is None else count, 1.0)


def averaging_weights(batch: dict, average: str = "token") -> Tuple[jax.Array, jax.Array]:
  """`(c, n)`: per-position coefficients and the denominator of a batch mean Σ_t c_t ℓ_t / n over the loss-carrying
  positions (`decoder_loss_weights` w).

    token     c_t = w_t,                 n = Σ_t w_t              (the mean over all tokens of the batch)
    sequence  c_t = w_t / Σ_{t'∈s(t)} w_t',  n = #sequences      (the mean over sequences of each one's token mean)

  A sequence s(t) is a packed segment (`decoder_segment_ids`; without them, a row) with at least one loss-carrying
  position, so Σ_t c_t = n in both cases. float32, c of the batch's shape.
  """
  check_choice("average", average, AVERAGES)
  w = batch["decoder_loss_weights"].astype(jnp.float32)
  if average == "token":
    return w, jnp.sum(w)
  segments = batch.get("decoder_segment_ids")
  segments = jnp.ones(w.shape, jnp.int32) if segments is None else segments.astype(jnp.int32)
  per_segment = jax.vmap(lambda s, x: jax.ops.segment_sum(x, s, num_segments=w.shape[-1] + 1))(segments, w)
  own = jnp.take_along_axis(per_segment, segments, -1)
  return jnp.where(w > 0, w / jnp.maximum(own, 1e-30), 0.0), jnp.sum(per_segment > 0).astype(jnp.float32)


def make_lm_loss(model: nn.Module, frozen_models=None, average: str = "token") -> LossFn:
  """Plain next-token CE over `decoder_loss_weights` (which packing sets to 0 on padding): the mean over the batch's
  tokens (`average="token"`), or over its sequences of each one's token mean (`"sequence"`, SALT Algorithm 1's
  l(x;θ) = (1/T) Σ_t −log P_θ(x_t|x_<t) averaged over the batch); see `averaging_weights`."""
  del frozen_models
  check_choice("average", average, AVERAGES)

  def loss_fn(params, batch, rng, frozen=None):
    del rng, frozen
    logits = model_logits(model, params, batch)
    targets = batch["decoder_target_tokens"]
    c, n = averaging_weights(batch, average)
    loss = masked_mean(token_cross_entropy(logits, targets), c, count=n)
    return loss, {"loss": loss, "accuracy": masked_mean(jnp.argmax(logits, -1) == targets, c, count=n),
                  "num_tokens": jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)),
                  **({"num_sequences": n, "denominator": n} if average == "sequence" else {})}

  return loss_fn
