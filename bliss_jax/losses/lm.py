"""The language-modelling loss every method starts from, and the model call on SeqIO decoder features.

A loss function has the signature `loss_fn(params, batch, rng, frozen) -> (loss, metrics)`, where `frozen` holds the
parameters of any frozen models the loss consults (teacher, reference model; None for plain LM training);
`metrics["num_tokens"]` is the loss's denominator (so gradient accumulation can weight micro-batches exactly) and
every other entry is a scalar to log. A loss factory is `factory(model, frozen_models) -> loss_fn`, with
`frozen_models` the dict of frozen Flax modules (by name) matching `frozen`.
"""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

LossFn = Callable[..., tuple]


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


def make_lm_loss(model: nn.Module, frozen_models=None) -> LossFn:
  """Plain next-token CE, token-mean over `decoder_loss_weights` (which packing sets to 0 on padding)."""
  del frozen_models

  def loss_fn(params, batch, rng, frozen=None):
    del rng, frozen
    logits = model_logits(model, params, batch)
    sums = next_token_metrics(logits, batch)
    denom = jnp.maximum(sums["num_tokens"], 1.0)
    loss = sums["ce_sum"] / denom
    return loss, {"loss": loss, "accuracy": sums["correct_sum"] / denom, "num_tokens": sums["num_tokens"]}

  return loss_fn
