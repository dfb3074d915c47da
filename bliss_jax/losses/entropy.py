"""Entropy, cross-entropy and KL divergence of categorical distributions over the last axis, float32.

  H(p)      = −Σ_v p(v) log p(v)                  (RHO-1 eq. 8 for a model's next-token distribution)
  CE(p, q)  = −Σ_v p(v) log q(v)                  (SALT eq. 4's distillation term, q = the student's softmax)
  KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v))      (BLISS's regulariser; = CE(p, q) − H(p))

A distribution given by logits is read through log_softmax; one given by probabilities p uses log max(p, 1e-30), so
that a zero-probability class contributes 0 (0 · log 0 = 0).
"""
from typing import Optional

import jax
import jax.numpy as jnp


def log_probs(logits: jax.Array) -> jax.Array:
  """log softmax(logits), float32."""
  return jax.nn.log_softmax(logits.astype(jnp.float32), -1)


def entropy(*, logits: Optional[jax.Array] = None, probs: Optional[jax.Array] = None) -> jax.Array:
  """H(p) of p = softmax(logits) or of the given probabilities (exactly one of the two), per position."""
  if (logits is None) == (probs is None):
    raise ValueError("entropy needs exactly one of logits and probs")
  if logits is not None:
    log_p = log_probs(logits)
    probs = jnp.exp(log_p)
  else:
    log_p = jnp.log(jnp.maximum(probs, 1e-30))
  return -jnp.sum(probs * log_p, -1)


def soft_cross_entropy(target_probs: jax.Array, logits: jax.Array) -> jax.Array:
  """CE(P, softmax(logits)) = −Σ_v P(v) log softmax(logits)(v), per position."""
  return -jnp.sum(target_probs * log_probs(logits), -1)


def kl_divergence(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
  """KL(softmax(p_logits) ‖ softmax(q_logits)) = Σ_v p(v) (log p(v) − log q(v)), per position."""
  log_p, log_q = log_probs(p_logits), log_probs(q_logits)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)
