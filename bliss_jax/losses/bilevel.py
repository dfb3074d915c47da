"""BLISS's objectives (spec `bliss.md` §Bilevel problem), as pure functions of logits (or of final hidden states and
the output head, over chunks of positions), scores and batches.

  (G)  G(θp, θs) = Σ_i P_i·L_i(θp) + γ·KL + λ‖θp‖²     lower level: the proxy θp on a candidate batch
  (P)  P = softmax(s) over the GLOBAL batch, s_i = score_model(θs; ξ_i)
  (F)  F(θp) = token-mean CE on the reference batch     upper level (only loss-carrying tokens: a task with a context,
                                                        as LAMBADA, puts loss weight on the continuation only; the
                                                        proxy reads every row causally, as it was trained)
L_i is the per-sample mean token CE. KL and ‖θp‖² are not weighted by P; the target's logits are constants (the
current target checkpoint). The KL is a token mean over the batch's loss-carrying tokens, in the direction
`kl_direction`: "target_proxy" = Σ p_LLM(log p_LLM − log p_proxy) (the reference code's) or "proxy_target" (the
paper's text). Under `jax.jit` with the batch sharded over the mesh's "data" axis, the softmax over axis 0 IS over
the global batch (XLA inserts the cross-device reductions); tests check it equals the 1-device value.
"""
import jax
import jax.numpy as jnp
import optax.tree_utils as otu

from bliss_jax.choices import check_choice
from bliss_jax.losses.entropy import kl_divergence
from bliss_jax.losses.lm import (CHUNK_TOKENS, head_cross_entropy, masked_mean, model_logits, position_chunks,
                                 token_cross_entropy)
from bliss_jax.models.transformer import head_logits, head_weight

WEIGHTINGS = ("softmax", "normalized")
KL_DIRECTIONS = ("target_proxy", "proxy_target")


def sample_weights(scores: jax.Array, weighting: str = "softmax") -> jax.Array:
  """(P): P = softmax(s); or the "no reparameterisation" ablation P = s / Σ s (needs s > 0, i.e. a sigmoid head)."""
  check_choice("weighting", weighting, WEIGHTINGS)
  if weighting == "softmax":
    return jax.nn.softmax(scores.astype(jnp.float32))
  s = scores.astype(jnp.float32)
  return s / jnp.sum(s)


def per_sample_ce(logits: jax.Array, batch: dict) -> jax.Array:
  """L_i: mean CE over example i's loss-carrying tokens, [B] (0 for an example without any)."""
  return masked_mean(token_cross_entropy(logits, batch["decoder_target_tokens"]), batch["decoder_loss_weights"], -1)


def token_kl(target_logits: jax.Array, proxy_logits: jax.Array, direction: str = "target_proxy") -> jax.Array:
  """Per-token KL between the target's and the proxy's next-token distributions, [B, T]."""
  check_choice("kl_direction", direction, KL_DIRECTIONS)
  if direction == "target_proxy":
    return kl_divergence(target_logits, proxy_logits)
  return kl_divergence(proxy_logits, target_logits)


def sample_terms(proxy_logits: jax.Array, batch: dict, target_logits=None, kl_direction: str = "target_proxy"):
  """(L [B], KL) of (G) from the proxy's logits [B, T, V]: the per-sample CE and, with `target_logits`, the KL's token
  mean over the batch's loss-carrying tokens (None without)."""
  ce = per_sample_ce(proxy_logits, batch)
  if target_logits is None:
    return ce, None
  kl = masked_mean(token_kl(jax.lax.stop_gradient(target_logits), proxy_logits, kl_direction),
                   batch["decoder_loss_weights"])
  return ce, kl


def chunk_length(batch_size: int, sequence_length: int, chunk_tokens: int = CHUNK_TOKENS) -> int:
  """Positions per chunk of `chunked_sample_terms`: ⌈chunk_tokens / B⌉, at most T."""
  return max(1, min(sequence_length, -(-chunk_tokens // batch_size)))


def logit_chunks(cfg, weight: jax.Array, hidden: jax.Array, chunk_tokens: int = CHUNK_TOKENS) -> jax.Array:
  """A model's logits [n, B, length, V] in `chunked_sample_terms`' chunks, from its final hidden states [B, T, d] and
  head weight: the head runs on the chunked hidden states, so the logits exist in this layout only (the target's
  logits of the KL, computed once per batch and read by every pass over the chunks)."""
  return head_logits(cfg, weight, position_chunks(hidden, chunk_length(*hidden.shape[:2], chunk_tokens)))


def chunked_sample_terms(cfg, weight: jax.Array, hidden: jax.Array, batch: dict, target_chunks=None,
                         kl_direction: str = "target_proxy", chunk_tokens: int = CHUNK_TOKENS):
  """`sample_terms` from the proxy's final hidden states [B, T, d] and its output head weight (`models.transformer
  .head_weight`, applied by `head_logits`), over chunks of `chunk_length` positions: each chunk's logits are
  recomputed when differentiated (`jax.checkpoint`), so one chunk's [B, length, V] logits (and, under `jax.jvp`, their
  tangents) live at a time, to any order of differentiation. The target's logits come as `logit_chunks` (same
  `chunk_tokens`). Same values as `sample_terms` up to float summation order."""
  b, t = hidden.shape[:2]
  length = chunk_length(b, t, chunk_tokens)
  w = batch["decoder_loss_weights"].astype(jnp.float32)
  with_kl = target_chunks is not None
  xs = tuple(position_chunks(x, length) for x in (hidden, batch["decoder_target_tokens"], w))
  if with_kl:
    if target_chunks.shape[:3] != xs[0].shape[:3]:
      raise ValueError(f"target logit chunks {target_chunks.shape} do not match the batch's chunks "
                       f"{xs[0].shape[:3]} (make them with `logit_chunks` at the same chunk_tokens)")
    xs += (target_chunks,)

  @jax.checkpoint
  def body(_, x):
    h, y, m = x[:3]
    logits = head_logits(cfg, weight, h)
    ce = jnp.sum(token_cross_entropy(logits, y) * m, -1)
    # the target's chunks enter the scan as they come (a differentiated caller's scan then keeps them by reference)
    kl = jnp.sum(token_kl(jax.lax.stop_gradient(x[3]), logits, kl_direction) * m) if with_kl else jnp.zeros(())
    return None, (ce, kl)

  _, (ce, kl) = jax.lax.scan(body, None, xs)
  ce = jnp.sum(ce, 0) / jnp.maximum(jnp.sum(w, -1), 1.0)
  return ce, (jnp.sum(kl) / jnp.maximum(jnp.sum(w), 1.0) if with_kl else None)


def lower_objective(ce: jax.Array, weights: jax.Array, proxy_params, *, kl=None, gamma: float = 0.0,
                    l2: float = 0.0):
  """(G) and its parts: (G, {"weighted_ce", "kl", "l2", "ce_mean"}) from the per-sample CE L [B] and the KL of
  `sample_terms` / `chunked_sample_terms`; `weights` are P (already normalised)."""
  weighted = jnp.sum(weights * ce)
  parts = {"weighted_ce": weighted, "ce_mean": jnp.mean(ce)}
  total = weighted
  if gamma:
    if kl is None:
      raise ValueError("gamma > 0 needs the target's logits")
    total, parts["kl"] = total + gamma * kl, kl
  if l2:
    sq = otu.tree_sum(jax.tree.map(lambda x: jnp.sum(jnp.square(x.astype(jnp.float32))), proxy_params))
    total, parts["l2"] = total + l2 * sq, sq
  return total, parts


def upper_objective(logits: jax.Array, batch: dict) -> jax.Array:
  """(F): token-mean CE over the reference batch's loss-carrying tokens."""
  return masked_mean(token_cross_entropy(logits, batch["decoder_target_tokens"]), batch["decoder_loss_weights"])


def reference_objective(model, params, batch: dict, chunk_tokens: int = CHUNK_TOKENS) -> jax.Array:
  """(F) of `model` on a reference batch: causal attention on every row, prefix-LM rows included (their
  `decoder_causal_attention` is ignored; the context is excluded by the loss weights only, as the reference code
  scores LAMBADA). The head and CE run over chunks of about `chunk_tokens` tokens (`losses.lm.head_cross_entropy`,
  first-order differentiable; 0: from the full logits by `upper_objective`)."""
  causal = {k: v for k, v in batch.items() if k != "decoder_causal_attention"}
  if not chunk_tokens:
    return upper_objective(model_logits(model, params, causal), batch)
  w = batch["decoder_loss_weights"].astype(jnp.float32)
  hidden = model_logits(model, params, causal, return_hidden="only")
  total, _, _ = head_cross_entropy(model.cfg, head_weight(model.cfg, params), hidden, batch["decoder_target_tokens"],
                                   w, chunk_tokens)
  return total / jnp.maximum(jnp.sum(w), 1.0)
