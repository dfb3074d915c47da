"""BLISS's objectives (spec `bliss.md` §Bilevel problem), as pure functions of logits, scores and batches.

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
from bliss_jax.losses.lm import masked_mean, model_logits, token_cross_entropy

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


def lower_objective(proxy_logits: jax.Array, weights: jax.Array, batch: dict, proxy_params, *,
                    target_logits=None, gamma: float = 0.0, l2: float = 0.0,
                    kl_direction: str = "target_proxy"):
  """(G) and its parts: (G, {"weighted_ce", "kl", "l2", "ce_mean"}). `weights` are P (already normalised)."""
  ce = per_sample_ce(proxy_logits, batch)
  weighted = jnp.sum(weights * ce)
  parts = {"weighted_ce": weighted, "ce_mean": jnp.mean(ce)}
  total = weighted
  if gamma:
    if target_logits is None:
      raise ValueError("gamma > 0 needs the target's logits")
    kl = masked_mean(token_kl(jax.lax.stop_gradient(target_logits), proxy_logits, kl_direction),
                     batch["decoder_loss_weights"])
    total, parts["kl"] = total + gamma * kl, kl
  if l2:
    sq = otu.tree_sum(jax.tree.map(lambda x: jnp.sum(jnp.square(x.astype(jnp.float32))), proxy_params))
    total, parts["l2"] = total + l2 * sq, sq
  return total, parts


def upper_objective(logits: jax.Array, batch: dict) -> jax.Array:
  """(F): token-mean CE over the reference batch's loss-carrying tokens."""
  return masked_mean(token_cross_entropy(logits, batch["decoder_target_tokens"]), batch["decoder_loss_weights"])


def reference_objective(model, params, batch: dict) -> jax.Array:
  """(F) of `model` on a reference batch: causal attention on every row, prefix-LM rows included (their
  `decoder_causal_attention` is ignored; the context is excluded by the loss weights only, as the reference code
  scores LAMBADA)."""
  causal = {k: v for k, v in batch.items() if k != "decoder_causal_attention"}
  return upper_objective(model_logits(model, params, causal), batch)
