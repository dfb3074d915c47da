"""SALT_DS's sequence score (SALT eq. 11): challenging but learnable sequences under a small LM ζ.

  S_{ζ,k}(x) = median_i ( 1{x_i ∈ argtop_k P_ζ(·|x_<i)} · (−log P_ζ(x_i|x_<i)) )

the small LM's per-token CE over the loss-carrying positions of the sequence, restricted to the positions where the
true token is among ζ's k most likely ones, then the median; higher = selected first. The out-of-top-k positions are
handled by `out_of_top_k`:
* `"remove"` (the default; the paper's prose: "we remove all losses where the ground-truth token is not in top-k
  outputs of the model before aggregating"): the median over the in-top-k positions only; a sequence with none scores
  −1 (`NO_TOP_K_SCORE`), below every sequence with one (a CE is ≥ 0), so it is never preferred to one;
* `"zero"` (eq. 11 as typeset, and "zero out noisy tokens" in the paper's related work): those positions count as 0
  in the median, so every sequence with more than half its positions outside the top k scores exactly 0.
Conventions here:
* top-k membership: x_i is in the top k iff fewer than k tokens have a strictly larger logit (a tie at the k-th place
  counts for the true token);
* median over n values v_(1) ≤ … ≤ v_(n): v_((n+1)/2) for odd n, (v_(n/2) + v_(n/2+1)) / 2 for even n (as
  `np.median`); with `"zero"` a row with no loss-carrying position scores 0.
The paper scores with an early checkpoint ζ_{n0} on data it has not seen, with k = 10 (App. K).
"""
import jax
import jax.numpy as jnp

from bliss_jax.choices import check_choice
from bliss_jax.losses.lm import masked_mean, model_logits, token_cross_entropy

OUT_OF_TOP_K = ("remove", "zero")
NO_TOP_K_SCORE = -1.0  # finite, as selection rules require; below every CE


def in_top_k(logits: jax.Array, targets: jax.Array, k: int) -> jax.Array:
  """1{x_i ∈ argtop_k(logits_i)} per position: fewer than k logits strictly above the target's. [..., V] -> [...]."""
  logits = logits.astype(jnp.float32)
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)
  return jnp.sum(logits > target_logit, -1) < k


def masked_median(values: jax.Array, weights: jax.Array, empty: float = 0.0) -> jax.Array:
  """Median of each row's values where `weights` > 0 ([B, T] -> [B]); the mean of the two middle values for an even
  count, `empty` for a row with none."""
  valid = weights > 0
  n = jnp.sum(valid, -1)
  ordered = jnp.sort(jnp.where(valid, values.astype(jnp.float32), jnp.inf), -1)  # the n valid values come first
  lo = jnp.maximum((n - 1) // 2, 0)[:, None]
  hi = (n // 2)[:, None]
  median = 0.5 * (jnp.take_along_axis(ordered, lo, -1)[:, 0] + jnp.take_along_axis(ordered, hi, -1)[:, 0])
  return jnp.where(n > 0, median, jnp.float32(empty))


def salt_ds_token_scores(logits: jax.Array, targets: jax.Array, k: int) -> jax.Array:
  """1{x_i ∈ argtop_k P_ζ(·|x_<i)} · (−log P_ζ(x_i|x_<i)) per position: the terms of eq. 11."""
  return jnp.where(in_top_k(logits, targets, k), token_cross_entropy(logits, targets), 0.0)


def salt_ds_score(logits: jax.Array, targets: jax.Array, weights: jax.Array, k: int = 10,
                  out_of_top_k: str = "remove") -> jax.Array:
  """S_{ζ,k}(x) (SALT eq. 11) per row: the median of the token CE over the loss-carrying positions whose true token
  is in ζ's top k (`"remove"`; `NO_TOP_K_SCORE` without one), or over all of them with the others zeroed
  (`"zero"`)."""
  check_choice("out_of_top_k", out_of_top_k, OUT_OF_TOP_K)
  if out_of_top_k == "zero":
    return masked_median(salt_ds_token_scores(logits, targets, k), weights)
  kept = (weights > 0) & in_top_k(logits, targets, k)
  return masked_median(token_cross_entropy(logits, targets), kept, empty=NO_TOP_K_SCORE)


def make_salt_ds_scorer(model, k: int = 10, with_token_scores: bool = False, out_of_top_k: str = "remove"):
  """Scorer for `offline_scoring.score_split`: `salt_ds` (eq. 11, `out_of_top_k` as in `salt_ds_score`),
  `mean_logp` and `frac_in_top_k` per example (+ `tok_salt_ds`, the top-k masked per-token CE, with
  `with_token_scores`)."""
  if k < 1:
    raise ValueError(f"k={k} must be >= 1")
  check_choice("out_of_top_k", out_of_top_k, OUT_OF_TOP_K)

  def score_fn(params, batch):
    logits = model_logits(model, params, batch)
    targets, w = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
    out = {"salt_ds": salt_ds_score(logits, targets, w, k, out_of_top_k),
           "mean_logp": masked_mean(-token_cross_entropy(logits, targets), w, -1),
           "frac_in_top_k": masked_mean(in_top_k(logits, targets, k).astype(jnp.float32), w, -1)}
    if with_token_scores:
      out["tok_salt_ds"] = salt_ds_token_scores(logits, targets, k) * (w > 0)
    return out

  return score_fn
