"""The language-modelling loss every method starts from, and the model call on SeqIO decoder features.

A loss function has the signature `loss_fn(params, batch, rng, frozen) -> (loss, metrics)`, where `frozen` holds the
parameters of any frozen models the loss consults (teacher, reference model; None for plain LM training);
the loss's denominator, the count it is a mean over, is `metrics["denominator"]` when present (e.g. the number of
sequences of a per-sequence mean), else `metrics["num_tokens"]` (so gradient accumulation can weight micro-batches
exactly), and every other entry is a scalar to log. A loss factory is `factory(model, frozen_models) -> loss_fn`, with
`frozen_models` the dict of frozen Flax modules (by name) matching `frozen`.
"""
import functools
import os
from typing import Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bliss_jax.choices import check_choice
from bliss_jax.models.config import ModelConfig
from bliss_jax.models.transformer import head_logits, head_weight

LossFn = Callable[..., tuple]
AVERAGES = ("token", "sequence")
CHUNK_TOKENS = 256  # make_lm_loss's default chunk of the fused output head + CE (head_cross_entropy)


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-token CE −log softmax(logits)[target], float32, shape of `targets`."""
  logits = logits.astype(jnp.float32)
  return jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]


def token_correct(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """The training accuracy's per-token term: 1 where the target's logit is the largest, float32, shape of `targets`.
  A tie with another token counts as correct (no first-index rule as argmax's), so a chunked head reads it off the
  max its log-sum-exp takes anyway, without a second (index-carrying) reduction over the vocabulary."""
  logits = logits.astype(jnp.float32)
  return (jnp.take_along_axis(logits, targets[..., None], -1)[..., 0] >= jnp.max(logits, -1)).astype(jnp.float32)


def _ce_and_correct(logits: jax.Array, targets: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Per-token CE (`token_cross_entropy`) and `token_correct`."""
  return token_cross_entropy(logits, targets), token_correct(logits, targets)


def position_chunks(x: jax.Array, length: int) -> jax.Array:
  """[B, T, ...] -> [T / length, B, length, ...] (T padded with zeros to a multiple of `length`)."""
  b, t = x.shape[:2]
  n = -(-t // length)
  x = jnp.pad(x, [(0, 0), (0, n * length - t)] + [(0, 0)] * (x.ndim - 2))
  return jnp.moveaxis(x.reshape((b, n, length) + x.shape[2:]), 1, 0)


def _unchunked(x: jax.Array, t: int) -> jax.Array:
  """The inverse of `position_chunks`: [n, B, length, ...] -> [B, t, ...]."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape((x.shape[0], -1) + x.shape[3:])[:, :t]


def _head_scan(cfg: ModelConfig, length: int, weight, hidden, targets, coefficients, with_grads: bool):
  """Σ_t c_t ℓ_t, ℓ [B, T], correct [B, T] and, `with_grads`, the gradients of the sum w.r.t. `weight` and `hidden`,
  over chunks of `length` positions (`lax.scan`: one chunk's logits [B, length, V] live at a time)."""
  t = hidden.shape[1]
  xs = tuple(position_chunks(x, length) for x in (hidden, targets, coefficients))

  def body(d_weight, x):
    h, y, c = x
    if not with_grads:
      return d_weight, _ce_and_correct(head_logits(cfg, weight, h), y) + (None,)
    logits, pull = jax.vjp(lambda w, hh: head_logits(cfg, w, hh), weight, h)
    # one log-sum-exp for the CE and its gradient (`token_cross_entropy`'s, as jax.nn.logsumexp computes it)
    top = jax.lax.stop_gradient(jnp.max(logits, -1, keepdims=True))
    exp = jnp.exp(logits - top)
    total_exp = jnp.sum(exp, -1, keepdims=True)
    target_logit = jnp.take_along_axis(logits, y[..., None], -1)[..., 0]
    ce = (jnp.log(total_exp) + top)[..., 0] - target_logit
    correct = (target_logit >= top[..., 0]).astype(jnp.float32)  # `token_correct` from the same max
    # ∂(c·ℓ)/∂logits = c·(softmax(logits) − onehot(target))
    g = c[..., None] * (exp / total_exp - jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype))
    dw, dh = pull(g)
    return d_weight + dw, (ce, correct, dh)

  d_weight = jnp.zeros(weight.shape, jnp.float32) if with_grads else None
  d_weight, (ce, correct, dh) = jax.lax.scan(body, d_weight, xs)
  ce, correct = _unchunked(ce, t), _unchunked(correct, t)
  total = jnp.sum(ce * coefficients)
  if not with_grads:
    return total, ce, correct
  return total, ce, correct, d_weight.astype(weight.dtype), _unchunked(dh, t)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fused_head_cross_entropy(cfg, length, weight, hidden, targets, coefficients):
  return _head_scan(cfg, length, weight, hidden, targets, coefficients, with_grads=False)


def _fused_fwd(cfg, length, weight, hidden, targets, coefficients):
  total, ce, correct, d_weight, d_hidden = _head_scan(cfg, length, weight, hidden, targets, coefficients, True)
  return (total, ce, correct), (d_weight, d_hidden, ce)


def _fused_bwd(cfg, length, residuals, cotangents):
  del cfg, length
  d_weight, d_hidden, ce = residuals
  g = cotangents[0]  # ℓ and correct leave `head_cross_entropy` through stop_gradient: their cotangents are zero
  scaled = lambda x: (g * x).astype(x.dtype)
  return scaled(d_weight), scaled(d_hidden), None, scaled(ce)


_fused_head_cross_entropy.defvjp(_fused_fwd, _fused_bwd)


def head_cross_entropy(cfg: ModelConfig, weight: jax.Array, hidden: jax.Array, targets: jax.Array,
                       coefficients: jax.Array, chunk_tokens: int) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """(Σ_t c_t ℓ_t, ℓ [B, T], correct [B, T]) of the output head (`models.transformer.head_logits`) on final hidden
  states [B, T, d], without materialising the [B, T, V] logits: ℓ_t = `token_cross_entropy` and correct_t =
  `token_correct`, computed over chunks of ⌈chunk_tokens / B⌉ positions of every row.

  Differentiated, the forward pass also computes the sum's gradient w.r.t. the head weight and the hidden states,
  chunk by chunk (∂ℓ_t/∂logits_t = softmax − onehot), so each chunk's logits are computed once and the backward pass
  only scales the stored gradients; the sum is differentiable in `weight`, `hidden` and `coefficients` c. ℓ and
  correct are metrics and carry no gradient.
  """
  length = max(1, min(hidden.shape[1], -(-chunk_tokens // hidden.shape[0])))
  total, ce, correct = _fused_head_cross_entropy(cfg, length, weight, hidden, targets.astype(jnp.int32),
                                                 coefficients.astype(jnp.float32))
  return total, jax.lax.stop_gradient(ce), jax.lax.stop_gradient(correct)


def model_logits(model: nn.Module, params, batch: dict, **kwargs) -> jax.Array:
  """Run `model` on a SeqIO decoder batch (packed or not, causal or prefix-LM)."""
  return model.apply({"params": params}, batch["decoder_input_tokens"],
                     segment_ids=batch.get("decoder_segment_ids"), positions=batch.get("decoder_positions"),
                     prefix_mask=batch.get("decoder_causal_attention"), **kwargs)


def next_token_metrics(logits: jax.Array, batch: dict) -> dict:
  """Sums (not means) over the loss-carrying tokens, so they add across batches and hosts: CE, correct, count."""
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"].astype(jnp.float32)
  ce = token_cross_entropy(logits, targets)
  correct = token_correct(logits, targets)
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


LOSS_CHUNK_VARIABLE = "BLISS_JAX_LOSS_CHUNK"


def default_chunk_tokens() -> int:
  """`make_lm_loss`'s chunk when none is given: $BLISS_JAX_LOSS_CHUNK where set (0: the full logits, e.g. to rerun a
  job on the unchunked path and compare its results), else `CHUNK_TOKENS`."""
  value = os.environ.get(LOSS_CHUNK_VARIABLE, "").strip()
  if not value:
    return CHUNK_TOKENS
  if not value.isdigit():
    raise ValueError(f"{LOSS_CHUNK_VARIABLE}={value!r}: expected a number of tokens >= 0 (0: the full logits)")
  return int(value)


def make_lm_loss(model: nn.Module, frozen_models=None, average: str = "token", *,
                 chunk_tokens: Optional[int] = None) -> LossFn:
  """Plain next-token CE over `decoder_loss_weights` (which packing sets to 0 on padding): the mean over the batch's
  tokens (`average="token"`), or over its sequences of each one's token mean (`"sequence"`, SALT Algorithm 1's
  l(x;θ) = (1/T) Σ_t −log P_θ(x_t|x_<t) averaged over the batch); see `averaging_weights`.

  `chunk_tokens`: compute the output head and the CE together over chunks of about this many tokens
  (`head_cross_entropy`: the [B, T, V] logits never exist at once, and each chunk's logits are computed once per
  step); 0: from the model's full logits; None: `default_chunk_tokens()`. Both give the same loss, gradients and
  metrics up to float summation order, so a run's record leaves it out (`training.run_config.COMPUTE_ONLY_ARGUMENTS`)
  and a resume may change it.
  """
  del frozen_models
  check_choice("average", average, AVERAGES)
  if chunk_tokens is None:
    chunk_tokens = default_chunk_tokens()

  def loss_fn(params, batch, rng, frozen=None):
    del rng, frozen
    targets = batch["decoder_target_tokens"]
    c, n = averaging_weights(batch, average)
    if chunk_tokens:
      hidden = model_logits(model, params, batch, return_hidden="only")
      total, _, correct = head_cross_entropy(model.cfg, head_weight(model.cfg, params), hidden, targets, c,
                                             chunk_tokens)
      loss = total / jnp.maximum(n, 1.0)
    else:
      logits = model_logits(model, params, batch)
      loss = masked_mean(token_cross_entropy(logits, targets), c, count=n)
      correct = token_correct(logits, targets)
    return loss, {"loss": loss, "accuracy": masked_mean(correct, c, count=n),
                  "num_tokens": jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)),
                  **({"num_sequences": n, "denominator": n} if average == "sequence" else {})}

  return loss_fn
