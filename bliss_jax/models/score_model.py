"""A scorer network: an LM backbone, mean-pooled over the example's tokens, and a Linear(d, 1) head.

Used by MiniPLM_prx (regressing exact difference scores, MiniPLM App. C.3) and BLISS (the score model, sigmoid on).
Parameters: {"backbone": Transformer params without the output head, "head": {"kernel", "bias"}}, so a backbone is
initialised from any LM checkpoint of the same shape with `from_lm_params`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from bliss_jax.models.config import ModelConfig
from bliss_jax.models.transformer import Transformer


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Σ_t m_t·h_t / max(Σ_t m_t, 1) over positions: [B, T, d] → [B, d]."""
  m = mask.astype(jnp.float32)[..., None]
  return jnp.sum(hidden.astype(jnp.float32) * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)


class ScoreModel(nn.Module):
  """score(x) = head(mean_t h_t(x)) [B] (sigmoid of it with `sigmoid=True`)."""
  cfg: ModelConfig
  sigmoid: bool = False

  @nn.compact
  def __call__(self, tokens, segment_ids=None, positions=None, prefix_mask=None, pool_mask=None):
    hidden = Transformer(self.cfg, name="backbone")(tokens, segment_ids, positions, prefix_mask, return_hidden="only")
    mask = pool_mask if pool_mask is not None else (segment_ids if segment_ids is not None
                                                    else jnp.ones_like(tokens))
    pooled = mean_pool(hidden, mask > 0)
    score = nn.Dense(1, kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed", None)),
                     name="head")(pooled)[:, 0]
    return jax.nn.sigmoid(score) if self.sigmoid else score


def from_lm_params(lm_params: dict, head_params: dict) -> dict:
  """Score-model parameters whose backbone is an LM's (its output head, if untied, is dropped)."""
  return {"backbone": {k: v for k, v in lm_params.items() if k != "lm_head"}, "head": head_params}


def score_batch(model: ScoreModel, params, batch) -> jax.Array:
  """Scores of a SeqIO decoder batch, pooled over the loss-carrying positions."""
  return model.apply({"params": params}, batch["decoder_input_tokens"], segment_ids=batch.get("decoder_segment_ids"),
                     positions=batch.get("decoder_positions"), prefix_mask=batch.get("decoder_causal_attention"),
                     pool_mask=batch["decoder_loss_weights"])
