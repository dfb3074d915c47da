"""Per-token and per-sequence scores of frozen language models (pure functions of params and a batch).

A scorer is `score_fn(params, batch) -> {name: [B] per-example values, "tok_"+name: [B, T] per-token values}`; the
offline runner (`offline_scoring.score_split`) stores the [B] entries as columns and the "tok_" ones as token columns.
"""
import jax
import jax.numpy as jnp

from bliss_jax.losses.lm import masked_mean, model_logits, token_cross_entropy


def token_log_probs(model, params, batch) -> jax.Array:
  """log p(x_t | x_<t) of every target token [B, T], float32; 0 where `decoder_loss_weights` is 0."""
  logits = model_logits(model, params, batch)
  w = batch["decoder_loss_weights"].astype(jnp.float32)
  return -token_cross_entropy(logits, batch["decoder_target_tokens"]) * w


def make_lm_scorer(model, with_token_losses: bool = False):
  """Scores under one model: `mean_logp`, `sum_logp` and `num_tokens` per example (+ `tok_loss`, the CE per token)."""
  def score_fn(params, batch):
    lp = token_log_probs(model, params, batch)
    w = batch["decoder_loss_weights"]
    out = {"mean_logp": masked_mean(lp, w, -1), "sum_logp": jnp.sum(lp, -1)}
    if with_token_losses:
      out["tok_loss"] = -lp
    return out
  return score_fn


def difference_score(logp_teacher: jax.Array, logp_reference: jax.Array, weights: jax.Array,
                     reduce: str = "mean") -> jax.Array:
  """MiniPLM Difference Sampling score (MiniPLM eq. 4): log p(x) − log p_ref(x) per example.

  `reduce="sum"` is the sequence log-likelihood ratio of eq. 4 itself; `"mean"` divides by |x| (the per-token form the
  paper uses, = loss_ref − loss_teacher; the same ranking when every instance has the same length).
  """
  diff = (logp_teacher - logp_reference) * weights.astype(jnp.float32)
  if reduce == "sum":
    return jnp.sum(diff, -1)
  if reduce == "mean":
    return masked_mean(logp_teacher - logp_reference, weights, -1)
  raise ValueError(f"reduce={reduce!r}: expected 'mean' or 'sum'")


def make_difference_scorer(teacher_model, reference_model):
  """`score_fn((teacher_params, reference_params), batch)` -> MiniPLM scores and both models' mean log-probs."""
  def score_fn(params, batch):
    teacher_params, reference_params = params
    lp_t = token_log_probs(teacher_model, teacher_params, batch)
    lp_r = token_log_probs(reference_model, reference_params, batch)
    w = batch["decoder_loss_weights"]
    return {"difference": difference_score(lp_t, lp_r, w, "mean"),
            "difference_sum": difference_score(lp_t, lp_r, w, "sum"),
            "teacher_mean_logp": masked_mean(lp_t, w, -1), "reference_mean_logp": masked_mean(lp_r, w, -1)}
  return score_fn
