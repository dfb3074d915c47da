"""A scorer network: an LM backbone, mean-pooled over positions, and a Linear(d, 1) head.

Pooling: over the example's loss-carrying tokens (`pooling="tokens"`), or over every position of the row
(`"all"`, the BLISS reference's average pool over the whole chunk; the same thing on a full chunk).

Used by MiniPLM_prx (regressing exact difference scores, MiniPLM App. C.3) and BLISS (the score model, sigmoid on).
Parameters: {"backbone": Transformer params without the output head, "head": {"kernel", "bias"}}, so a backbone is
initialised from any LM checkpoint of the same shape with `from_lm_params`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bliss_jax.choices import check_choice
from bliss_jax.models.config import ModelConfig
from bliss_jax.models.transformer import Transformer

POOLINGS = ("tokens", "all")
HEAD_INITS = ("uniform", "zeros")


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Σ_t m_t·h_t / max(Σ_t m_t, 1) over positions: [B, T, d] → [B, d]."""
  m = mask.astype(jnp.float32)[..., None]
  return jnp.sum(hidden.astype(jnp.float32) * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)


class ScoreModel(nn.Module):
  """score(x) = head(mean_t h_t(x)) [B] (sigmoid of it with `sigmoid=True`); `pooling` in `POOLINGS`."""
  cfg: ModelConfig
  sigmoid: bool = False
  pooling: str = "tokens"

  @nn.compact
  def __call__(self, tokens, segment_ids=None, positions=None, prefix_mask=None, pool_mask=None):
    check_choice("pooling", self.pooling, POOLINGS)
    hidden = Transformer(self.cfg, name="backbone")(tokens, segment_ids, positions, prefix_mask, return_hidden="only")
    if self.pooling == "all":
      mask = jnp.ones_like(tokens)
    else:
      mask = pool_mask if pool_mask is not None else (segment_ids if segment_ids is not None
                                                      else jnp.ones_like(tokens))
    pooled = mean_pool(hidden, mask > 0)
    score = nn.Dense(1, kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed", None)),
                     name="head")(pooled)[:, 0]
    return jax.nn.sigmoid(score) if self.sigmoid else score


def init_head(d_model: int, kind: str = "uniform", seed: int = 0) -> dict:
  """Linear(d, 1) parameters: "uniform" = torch.nn.Linear's default, kernel and bias ~ U(−1/√d, 1/√d); "zeros"."""
  check_choice("head init", kind, HEAD_INITS)
  if kind == "zeros":
    return {"kernel": np.zeros((d_model, 1), np.float32), "bias": np.zeros((1,), np.float32)}
  bound = 1.0 / np.sqrt(d_model)
  rng = np.random.default_rng(seed)
  return {"kernel": rng.uniform(-bound, bound, (d_model, 1)).astype(np.float32),
          "bias": rng.uniform(-bound, bound, (1,)).astype(np.float32)}


def from_lm_params(lm_params: dict, head_params: dict) -> dict:
  """Score-model parameters whose backbone is an LM's (its output head, if untied, is dropped)."""
  return {"backbone": {k: v for k, v in lm_params.items() if k != "lm_head"}, "head": head_params}


def score_batch(model: ScoreModel, params, batch) -> jax.Array:
  """Scores of a SeqIO decoder batch, pooled as `model.pooling` says (`"tokens"`: the loss-carrying positions)."""
  return model.apply({"params": params}, batch["decoder_input_tokens"], segment_ids=batch.get("decoder_segment_ids"),
                     positions=batch.get("decoder_positions"), prefix_mask=batch.get("decoder_causal_attention"),
                     pool_mask=batch["decoder_loss_weights"])
