"""FLOP accounting for the decoder: one function per kind of pass, used by every pipeline and report.

Following PaLM (Chowdhery et al. 2022, App. B), a forward pass costs, per token,
    2·N + 4·L·H·Q·T
FLOPs, where N counts the parameters used in matrix multiplies (the input-embedding lookup excluded; the output head
included when the pass computes logits), L layers, H query heads of width Q, and T the sequence length (the
attention-score and -value products). The other passes are multiples of it:
  - train step (forward + backward, the backward twice the forward): 3 × forward with head = 6·N + 12·L·H·Q·T;
  - forward without the head (a score model's backbone, hidden states only): 2·N' + 4·L·H·Q·T, N' = N − V·d;
  - forward-mode jvp (`jax.jvp`) of the per-token losses along a direction: 3 × forward with head (the primal
    forward, and the tangent's two products per matmul, ẋ·W + x·Ẇ);
  - Hessian-vector product by forward-over-reverse (`bilevel.hvp`): the jvp of a train step's reverse pass. With
    the gradient kept (the single pass's lower step): 3 × train step. Tangent only (a solver's product): the
    primal weight gradients xᵀ·δ are dead code, leaving 8 of those 9 forward-sized products: 8/3 × train step.
A score model (backbone + mean pool + Linear(d, 1)) adds 2·d per sequence to its backbone's forward.
"""
from bliss_jax.models.config import ModelConfig, count_params


def matmul_params(cfg: ModelConfig, head: bool = True) -> int:
  """Parameters that take part in matmuls: everything but the input-embedding lookup (kept when tied to the head),
  and without the output head when `head=False`."""
  n = count_params(cfg)
  n = n if cfg.tie_embeddings else n - cfg.vocab_size * cfg.d_model
  return n if head else n - cfg.vocab_size * cfg.d_model


def forward_flops_per_token(cfg: ModelConfig, sequence_length: int, head: bool = True) -> float:
  """One forward pass: 2·N + 4·L·H·Q·T (`head=False`: hidden states only, no output projection)."""
  return 2.0 * matmul_params(cfg, head) + 4.0 * cfg.num_layers * cfg.num_heads * cfg.dim_per_head * sequence_length


def train_flops_per_token(cfg: ModelConfig, sequence_length: int) -> float:
  """Forward + backward (twice the forward): 6·N + 12·L·H·Q·T."""
  return 3.0 * forward_flops_per_token(cfg, sequence_length)


def hvp_flops_per_token(cfg: ModelConfig, sequence_length: int, with_gradient: bool = False) -> float:
  """A Hessian-vector product of an LM loss by forward-over-reverse: 8/3 × a train step, or 3 × with the gradient
  kept (`with_gradient`)."""
  return (3.0 if with_gradient else 8.0 / 3.0) * train_flops_per_token(cfg, sequence_length)


def jvp_flops_per_token(cfg: ModelConfig, sequence_length: int) -> float:
  """A forward-mode jvp of the per-token losses (primal and tangent forward): 3 × a forward with head."""
  return 3.0 * forward_flops_per_token(cfg, sequence_length)


def score_forward_flops_per_token(cfg: ModelConfig, sequence_length: int) -> float:
  """A score model (`models.score_model`) on one token: its backbone without head, plus its Linear(d, 1) head's
  2·d per sequence spread over the sequence's tokens."""
  return forward_flops_per_token(cfg, sequence_length, head=False) + 2.0 * cfg.d_model / sequence_length


def score_train_flops_per_token(cfg: ModelConfig, sequence_length: int) -> float:
  """Forward + backward of a score model: 3 × its forward."""
  return 3.0 * score_forward_flops_per_token(cfg, sequence_length)
