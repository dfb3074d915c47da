"""RHO-1's Selective Language Modeling (Lin et al. 2024, "Not All Tokens Are What You Need"): CE on the top-k% tokens.

The trained model still reads (forwards and backpropagates through) every token; only the loss is restricted to the
tokens that rank in the top k% by a score S computed from a frozen reference model (RM):

* `excess`            S = L_Δ = L_θ − L_RM (Eq. 3), keep the HIGHEST (the paper's default);
* `reference_loss`    S = L_RM (Eq. 1), keep the LOWEST (self-reference, App. H);
* `reference_entropy` S = H_RM (Eq. 8), keep the LOWEST (self-reference, App. H).

Two scores, each with its own ratio, combine by `union` or `intersection` (App. H, Table 4: H_RM ∩ L_Δ at 70% ∩ 70%,
which keeps about 60%, was best). L_θ is detached wherever it enters a score, so the gradient is that of Eq. 4 with the
selection held fixed.

Ranking scope: `batch` ranks all valid target positions (loss weight > 0) of the batch together, as the paper
implements it (§2.2, "ranking the tokens in a batch"); `sequence` ranks each row separately (Eq. 4 read per sequence).
Inside `jax.jit` the batch is the GLOBAL batch whatever its sharding, so batch-level selection under data parallelism
is the same as on one device. With gradient accumulation (`num_microbatches > 1`) the batch a selection sees is the
micro-batch.

The reference losses come from the RM in the same step (`reference='online'`: one extra forward of the RM, no
gradient) or from the batch (`reference='offline'`: `ref_loss` [B, T], and `ref_entropy` for `reference_entropy`,
aligned with `decoder_target_tokens`; see `bliss_jax.selection.reference_losses`).
"""
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from bliss_jax.choices import check_choice
from bliss_jax.counting import fraction_to_count
from bliss_jax.losses.entropy import entropy
from bliss_jax.losses.lm import LossFn, masked_mean, model_logits, token_correct, token_cross_entropy

# score name -> whether the HIGHEST scores are kept.
SCORES = {"excess": True, "reference_loss": False, "reference_entropy": False}
SCOPES = ("batch", "sequence")
COMBINES = ("union", "intersection")
REFERENCES = ("online", "offline")


def excess_loss(model_loss: jax.Array, reference_loss: jax.Array) -> jax.Array:
  """Eq. 3: L_Δ(x_i) = L_θ(x_i) − L_RM(x_i), with L_θ detached (it ranks tokens; it is not differentiated)."""
  return jax.lax.stop_gradient(model_loss) - reference_loss


def top_fraction_mask(scores: jax.Array, valid: jax.Array, ratio: float, *, largest: bool = True,
                      scope: str = "batch") -> jax.Array:
  """Eq. 5: I_k%(x_i) = 1 iff x_i ranks in the top k% of the valid positions by its score.

  Args:
    scores: [B, T] float scores.
    valid: [B, T] bool, the positions that may be selected (target tokens with loss weight > 0).
    ratio: k%, as a fraction in [0, 1]; k = floor(ratio · n_valid) of the group's n_valid valid positions
      (`selection.fraction_to_count`, exact in int32: the count a host-side selection of n_valid items keeps).
    largest: keep the highest (True) or lowest (False) scores.
    scope: `batch` (one group: all positions of the batch) or `sequence` (one group per row).

  Returns:
    [B, T] bool mask with exactly k True positions per group, all valid. Ties go to the lower flat (row-major) index;
    NaN scores rank last; −0.0 and 0.0 are equal.
  """
  check_choice("selection scope", scope, SCOPES)
  shape = scores.shape
  groups = (1, -1) if scope == "batch" else (shape[0], -1)
  key = scores.astype(jnp.float32).reshape(groups)
  valid = valid.reshape(groups)
  key = -key if largest else key
  key = jnp.where(jnp.isnan(key), jnp.inf, key)
  key = jnp.where(key == 0, 0.0, key)  # one zero, so the sort's total order agrees with `<` below
  invalid = (~valid).astype(jnp.int32)
  index = jax.lax.broadcasted_iota(jnp.int32, key.shape, 1)
  _, sorted_key, sorted_index = jax.lax.sort((invalid, key, index), dimension=1, num_keys=3)
  k = fraction_to_count(jnp.sum(valid, 1, dtype=jnp.int32), ratio)[:, None]
  # The k-th smallest (key, index) of the group is a valid position (k ≤ n_valid); keep everything up to it.
  last = jnp.maximum(k - 1, 0)
  last_key = jnp.take_along_axis(sorted_key, last, 1)
  last_index = jnp.take_along_axis(sorted_index, last, 1)
  keep = (key < last_key) | ((key == last_key) & (index <= last_index))
  return (keep & valid & (k > 0)).reshape(shape)


def combine_selections(masks: Sequence[jax.Array], how: str = "intersection") -> jax.Array:
  """The union or intersection of several selections (App. H: H_RM ∪ L_Δ, H_RM ∩ L_Δ)."""
  check_choice("combine", how, COMBINES)
  out = masks[0]
  for m in masks[1:]:
    out = (out | m) if how == "union" else (out & m)
  return out


def selective_cross_entropy(token_ce: jax.Array, weights: jax.Array,
                            selected: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Eq. 4: L_SLM(θ) = (1 / (N·k%)) Σ_i I_k%(x_i) · (−log P(x_i | x_<i; θ)), the mean CE over the selected tokens.

  Loss weights multiply as in plain CE (with 0/1 weights, N·k% is the number of selected tokens); with every valid
  token selected this is the token-mean CE of `losses.lm`, the same formula (its gradient is bitwise the same; the
  value may differ in the last bit, as XLA may order the sum differently). Returns (loss, denominator).
  """
  w = weights.astype(jnp.float32) * selected.astype(jnp.float32)
  return masked_mean(token_ce, w), jnp.sum(w)


def _as_tuple(score, ratio) -> Tuple[Tuple[str, ...], Tuple[float, ...]]:
  scores = (score,) if isinstance(score, str) else tuple(score)
  ratios = (float(ratio),) * len(scores) if isinstance(ratio, (int, float)) else tuple(float(r) for r in ratio)
  if not scores or len(ratios) != len(scores):
    raise ValueError(f"score={score!r} and ratio={ratio!r}: give one ratio, or one per score")
  for s in scores:
    check_choice("selection score", s, SCORES)
  for r in ratios:
    fraction_to_count(0, r)  # refuses a ratio outside [0, 1] or without an exact count now, not when traced
  return scores, ratios


def make_token_selection(model: nn.Module, frozen_models: Optional[Dict[str, nn.Module]] = None, *,
                         ratio: Union[float, Sequence[float]] = 0.6, score: Union[str, Sequence[str]] = "excess",
                         scope: str = "batch", combine: str = "intersection", reference: str = "online",
                         reference_name: str = "reference") -> Callable[..., Dict[str, Optional[jax.Array]]]:
  """The tokens SLM trains on (Eq. 5, or App. H's combinations) as `select(params, batch, frozen) -> {"selected": [B, T]
  bool, "logits", "ce" (L_θ), "ref_loss" (L_RM), "ref_entropy" (H_RM, None unless a score uses it), "excess" (L_Δ)}`.
  The arguments are `make_selective_loss`'s, which computes its loss from this; called on its own (jitted), it gives
  the selection a training step made from the same parameters and batch."""
  scores, ratios = _as_tuple(score, ratio)
  check_choice("selection scope", scope, SCOPES)
  check_choice("combine", combine, COMBINES)
  check_choice("reference", reference, REFERENCES)
  need_entropy = "reference_entropy" in scores
  ref_model = None
  if reference == "online":
    ref_model = (frozen_models or {}).get(reference_name)
    if ref_model is None:
      raise ValueError(f"reference='online' needs a frozen model {reference_name!r} (train(frozen_model_dirs="
                       f"{{{reference_name!r}: MODEL_DIR}})); got {sorted(frozen_models or {})}")

  def reference_stats(batch, frozen):
    """(L_RM [B, T], H_RM [B, T] or None), without gradient."""
    if reference == "offline":
      missing = [k for k in ["ref_loss"] + (["ref_entropy"] if need_entropy else []) if k not in batch]
      if missing:
        raise KeyError(f"reference='offline' needs batch features {missing} (bliss_jax.selection.reference_losses); "
                       f"the batch has {sorted(batch)}")
      ent = batch["ref_entropy"].astype(jnp.float32) if need_entropy else None
      return batch["ref_loss"].astype(jnp.float32), ent
    if frozen is None or reference_name not in frozen:
      raise ValueError(f"reference='online': the step got no parameters for frozen model {reference_name!r}")
    ref_logits = jax.lax.stop_gradient(model_logits(ref_model, frozen[reference_name], batch))
    ref_loss = token_cross_entropy(ref_logits, batch["decoder_target_tokens"])
    return ref_loss, (entropy(logits=ref_logits) if need_entropy else None)  # H_RM, eq. 8

  def select(params, batch, frozen=None):
    logits = model_logits(model, params, batch)
    ce = token_cross_entropy(logits, batch["decoder_target_tokens"])
    ref_loss, ref_entropy = reference_stats(batch, frozen)
    delta = excess_loss(ce, ref_loss)
    valid = batch["decoder_loss_weights"].astype(jnp.float32) > 0
    values = {"excess": delta, "reference_loss": ref_loss, "reference_entropy": ref_entropy}
    selected = combine_selections(
        [top_fraction_mask(values[s], valid, r, largest=SCORES[s], scope=scope) for s, r in zip(scores, ratios)],
        combine)
    return {"selected": selected, "logits": logits, "ce": ce, "ref_loss": ref_loss, "ref_entropy": ref_entropy,
            "excess": delta}

  return select


def make_selective_loss(model: nn.Module, frozen_models: Optional[Dict[str, nn.Module]] = None, *,
                        ratio: Union[float, Sequence[float]] = 0.6, score: Union[str, Sequence[str]] = "excess",
                        scope: str = "batch", combine: str = "intersection", reference: str = "online",
                        reference_name: str = "reference") -> LossFn:
  """The SLM loss (Eq. 4) as a `loss_fn(params, batch, rng, frozen) -> (loss, metrics)` (see `losses.lm`).

  Args:
    model: the trained model.
    frozen_models: {name: module}; with `reference='online'`, `frozen_models[reference_name]` is the RM, and
      `frozen[reference_name]` its parameters at call time (the trainer's `frozen_model_dirs={"reference": DIR}`).
    ratio: k% per score (one value for all, or one per score).
    score: a name in `SCORES`, or several (e.g. `("reference_entropy", "excess")`) combined by `combine`.
    scope: `batch` or `sequence` ranking (see the module docstring). Either way the loss is the mean over all
      selected tokens of the batch (not a mean of per-sequence means), as plain CE is a token mean.
    combine: `union` or `intersection` of the per-score selections.
    reference: `online` (RM forward in the step) or `offline` (`batch["ref_loss"]`, `batch["ref_entropy"]`).
    reference_name: the frozen model's name.

  The selection is `make_token_selection`'s. Metrics: `loss` (= `ce_selected`, Eq. 4), `num_tokens` (its denominator,
  the selected tokens), `selected_fraction` (selected / valid), `ce_unselected`, `ce_all` (plain CE over every valid
  token, the CLM loss of Eq. 2), `reference_loss` (mean L_RM), `excess_loss` (mean L_Δ), `reference_entropy` (mean
  H_RM, when a score uses it), `accuracy` (next-token accuracy over every valid token), `num_valid_tokens`.
  """
  select = make_token_selection(model, frozen_models, ratio=ratio, score=score, scope=scope, combine=combine,
                                reference=reference, reference_name=reference_name)

  def loss_fn(params, batch, rng, frozen=None):
    del rng
    sel = select(params, batch, frozen)
    logits, ce, selected, delta = sel["logits"], sel["ce"], sel["selected"], sel["excess"]
    ref_loss, ref_entropy = sel["ref_loss"], sel["ref_entropy"]
    targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"].astype(jnp.float32)
    loss, num_selected = selective_cross_entropy(ce, weights, selected)

    num_valid = jnp.sum(weights)
    mean = lambda x, w: masked_mean(jax.lax.stop_gradient(x), w)
    unselected = weights * (1.0 - selected.astype(jnp.float32))
    correct = token_correct(logits, targets)
    metrics = {"loss": loss, "num_tokens": num_selected, "num_valid_tokens": num_valid,
               "selected_fraction": num_selected / jnp.maximum(num_valid, 1.0),
               "ce_selected": jax.lax.stop_gradient(loss), "ce_unselected": mean(ce, unselected),
               "ce_all": mean(ce, weights), "reference_loss": mean(ref_loss, weights),
               "excess_loss": mean(delta, weights), "accuracy": mean(correct, weights)}
    if ref_entropy is not None:
      metrics["reference_entropy"] = mean(ref_entropy, weights)
    return loss, metrics

  return loss_fn
