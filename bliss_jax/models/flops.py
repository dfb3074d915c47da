"""FLOP accounting for the decoder (the numbers MFU, equal-compute comparisons and KD overheads are stated in).

Following PaLM (Chowdhery et al. 2022, App. B): a training step costs, per token,
    6·N + 12·L·H·Q·T
FLOPs, where N counts the parameters used in matrix multiplies (the output head included; the input-embedding lookup
excluded), L layers, H query heads of width Q, and T the sequence length (the attention-score and -value products).
A forward pass alone costs one third of that: 2·N + 4·L·H·Q·T.
"""
from bliss_jax.models.config import ModelConfig, count_params


def matmul_params(cfg: ModelConfig) -> int:
  """Parameters that take part in matmuls: everything but the input-embedding lookup (kept when tied to the head)."""
  n = count_params(cfg)
  return n if cfg.tie_embeddings else n - cfg.vocab_size * cfg.d_model


def forward_flops_per_token(cfg: ModelConfig, sequence_length: int) -> float:
  return 2.0 * matmul_params(cfg) + 4.0 * cfg.num_layers * cfg.num_heads * cfg.dim_per_head * sequence_length


def train_flops_per_token(cfg: ModelConfig, sequence_length: int) -> float:
  """Forward + backward (twice the forward): 6·N + 12·L·H·Q·T."""
  return 3.0 * forward_flops_per_token(cfg, sequence_length)
