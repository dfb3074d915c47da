"""Model shapes: one `ModelConfig` for every decoder in the seeds, named presets, and the parameter-count formula.

The presets mirror the shapes the papers train (see `../shared/specs/`):

* Pythia / GPT-NeoX (BLISS targets and proxies): LayerNorm with biases, parallel attention+MLP residual, rotary on
  25% of each head, exact GELU, untied output embedding, vocab 50,304 (50,277 padded to a multiple of 128).
* Qwen-1.5 (MiniPLM): RMSNorm, SwiGLU, full rotary (theta 1e6), bias on q/k/v only, vocab 151,936. Tied embeddings for
  the 104M/200M/500M shapes and untied for 1.2B [inferred: that is what makes the published sizes add up].
* SALT (UL2 LMs): multi-query attention, gated MLP, tied embeddings, vocab 256,000 [inferred from the sizes].
* Llama (RHO-1's TinyLlama-1.1B): RMSNorm, SwiGLU, grouped-query attention (4 kv heads), untied, vocab 32,000.
"""
import dataclasses
from typing import Optional

import jax.numpy as jnp

from bliss_jax.choices import check_choice
from bliss_jax.recorded_fields import RECORDED_UNLESS_DEFAULT, UNRECORDED, recorded_items

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "geglu")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ATTENTIONS = ("einsum", "cudnn")
# Fields that change how the model computes (precision, activation memory, kernels), not its parameters: a checkpoint
# of one setting loads into another.
COMPUTE_ONLY_FIELDS = frozenset({"dtype", "remat", "attention", "head_dtype"})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and style of a decoder-only Transformer.

  Attributes:
    vocab_size: rows of the embedding (and of the output head).
    num_layers, d_model, num_heads: depth, width and query heads.
    num_kv_heads: key/value heads; `None` = num_heads (MHA), 1 = multi-query, in between = grouped-query.
    head_dim: per-head width; `None` = d_model // num_heads.
    d_ff: hidden width of the MLP (of each of the two input matrices for gated MLPs).
    mlp: "gelu" (2 matrices, exact GELU), "swiglu" or "geglu" (3 matrices, gated).
    norm: "layernorm" (scale+bias) or "rmsnorm" (scale only); `norm_eps` its epsilon.
    parallel_residual: GPT-NeoX x + attn(ln1 x) + mlp(ln2 x) instead of the sequential pre-norm block.
    rotary_fraction: fraction of each head's dims that get rotary embeddings (Pythia 0.25); `rope_theta` its base.
    use_bias: biases on every projection (GPT-NeoX); `qkv_bias`: biases on q/k/v only (Qwen).
    tie_embeddings: output head = transposed input embedding.
    dtype: activation/compute dtype ("float32" or "bfloat16"); parameters are always float32.
    remat: rematerialise each block in the backward pass (saves activation memory).
    scan_layers: run the blocks with `nn.scan` (parameters stacked on a leading "layers" axis; compile time
      independent of depth).
    attention: "einsum" (scores [B, heads, T, T] in float32, softmax, weighted values: XLA fuses what it can) or
      "cudnn" (`jax.nn.dot_product_attention`'s cuDNN flash-attention kernel, which never writes the scores out;
      NVIDIA GPUs, bfloat16). Same function up to float rounding; decoding with a cache always takes "einsum". The
      kernel has reverse-mode derivatives only, so BLISS's proxy (differentiated in forward mode too) keeps "einsum".
      Not recorded (`recorded_fields.UNRECORDED`).
    head_dtype: the dtype the output head's matmul runs in, its logits then cast to float32 for the loss: "float32"
      or "bfloat16" (what PyTorch's autocast does); `None` = float32 for an untied head, the compute dtype for a tied
      one. Recorded only when set (`recorded_fields.RECORDED_UNLESS_DEFAULT`).
  """
  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int
  d_ff: int
  num_kv_heads: Optional[int] = None
  head_dim: Optional[int] = None
  mlp: str = "swiglu"
  norm: str = "rmsnorm"
  norm_eps: float = 1e-6
  parallel_residual: bool = False
  rotary_fraction: float = 1.0
  rope_theta: float = 10_000.0
  use_bias: bool = False
  qkv_bias: bool = False
  tie_embeddings: bool = False
  dtype: str = "float32"
  remat: bool = False
  scan_layers: bool = False
  attention: str = dataclasses.field(default="einsum", metadata=UNRECORDED)
  head_dtype: Optional[str] = dataclasses.field(default=None, metadata=RECORDED_UNLESS_DEFAULT)

  def __post_init__(self):
    check_choice("ModelConfig.norm", self.norm, NORMS)
    check_choice("ModelConfig.mlp", self.mlp, MLPS)
    check_choice("ModelConfig.dtype", self.dtype, DTYPES)
    check_choice("ModelConfig.attention", self.attention, ATTENTIONS)
    if self.head_dtype is not None:
      check_choice("ModelConfig.head_dtype", self.head_dtype, DTYPES)
    if self.attention == "cudnn" and self.dtype != "bfloat16":
      raise ValueError(f"ModelConfig.attention='cudnn' computes in bfloat16 or float16 only; dtype={self.dtype!r} "
                       "(set ModelConfig.dtype='bfloat16', or attention='einsum')")
    if self.num_heads % self.kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.kv_heads}")
    if not 0.0 <= self.rotary_fraction <= 1.0:
      raise ValueError(f"rotary_fraction={self.rotary_fraction} must lie in [0, 1]")
    if self.rotary_dim % 2:
      raise ValueError(f"rotary dims {self.rotary_dim} (head_dim x rotary_fraction) must be even")

  @property
  def kv_heads(self) -> int:
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def rotary_dim(self) -> int:
    return int(round(self.dim_per_head * self.rotary_fraction))

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def head_compute_dtype(self):
    """The dtype of the output head's matmul (`head_dtype` resolved)."""
    if self.head_dtype is not None:
      return DTYPES[self.head_dtype]
    return self.compute_dtype if self.tie_embeddings else jnp.float32


def as_record(cfg) -> dict:
  """`dataclasses.asdict(cfg)` with the fields its records hold only (`recorded_fields.recorded_items`)."""
  recorded = recorded_items(cfg)
  return {k: v for k, v in dataclasses.asdict(cfg).items() if k in recorded}


def count_params(cfg: ModelConfig) -> int:
  """Number of parameters implied by the shape formula (what `Transformer.init` must produce).

  Per layer: attention d·hd·(H + 2·H_kv) + H·hd·d (+ biases), MLP (2 or 3)·d·d_ff (+ biases), two norms;
  plus embedding V·d, final norm, and an untied head d·V.
  """
  d, hd, h, kv, ff, v = cfg.d_model, cfg.dim_per_head, cfg.num_heads, cfg.kv_heads, cfg.d_ff, cfg.vocab_size
  qkv_out = hd * (h + 2 * kv)
  attn = d * qkv_out + h * hd * d
  if cfg.use_bias or cfg.qkv_bias:
    attn += qkv_out
  if cfg.use_bias:
    attn += d
  gated = cfg.mlp in ("swiglu", "geglu")
  mlp = (3 if gated else 2) * d * ff
  if cfg.use_bias:
    mlp += (2 if gated else 1) * ff + d
  norm = d * (2 if cfg.norm == "layernorm" else 1)
  per_layer = attn + mlp + 2 * norm
  head = 0 if cfg.tie_embeddings else d * v
  return cfg.num_layers * per_layer + v * d + norm + head


def _pythia(num_layers, d_model, num_heads):
  return dict(vocab_size=50_304, num_layers=num_layers, d_model=d_model, num_heads=num_heads, d_ff=4 * d_model,
              mlp="gelu", norm="layernorm", norm_eps=1e-5, parallel_residual=True, rotary_fraction=0.25,
              use_bias=True, tie_embeddings=False)


def _qwen(num_layers, d_model, num_heads, d_ff, tie):
  return dict(vocab_size=151_936, num_layers=num_layers, d_model=d_model, num_heads=num_heads, d_ff=d_ff,
              mlp="swiglu", norm="rmsnorm", norm_eps=1e-6, rope_theta=1_000_000.0, qkv_bias=True,
              tie_embeddings=tie)


def _salt(num_layers, d_model, num_heads, d_ff):
  return dict(vocab_size=256_000, num_layers=num_layers, d_model=d_model, num_heads=num_heads, num_kv_heads=1,
              d_ff=d_ff, mlp="geglu", norm="rmsnorm", tie_embeddings=True)


# name -> (shape, nominal size in the source or None, exact published count or None)
PRESETS = {
    # `tiny` is for tests and the CPU quickstart; vocab is overridden by the task's vocabulary.
    "tiny": (dict(vocab_size=512, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, d_ff=256), None, None),
    "tiny_neox": (dict(_pythia(2, 64, 4), vocab_size=512), None, None),
    "tiny_mqa": (dict(_salt(2, 64, 4, 128), vocab_size=512), None, None),
    # Pythia (EleutherAI), exact counts from the released checkpoints.
    "pythia_14m": (_pythia(6, 128, 4), 14e6, 14_067_712),
    "pythia_31m": (_pythia(6, 256, 8), 31e6, 30_494_720),
    "pythia_70m": (_pythia(6, 512, 8), 70e6, 70_426_624),
    "pythia_160m": (_pythia(12, 768, 12), 160e6, 162_322_944),
    "pythia_410m": (_pythia(24, 1024, 16), 410e6, 405_334_016),
    "pythia_1b": (_pythia(16, 2048, 8), 1.0e9, 1_011_781_632),
    # MiniPLM Table (Qwen-1.5 architecture), nominal sizes only.
    "qwen_104m": (_qwen(8, 512, 8, 1408, tie=True), 104e6, None),
    "qwen_200m": (_qwen(12, 768, 12, 2112, tie=True), 200e6, None),
    "qwen_500m": (_qwen(24, 1024, 16, 2816, tie=True), 500e6, None),
    "qwen_1p2b": (_qwen(24, 1536, 16, 4224, tie=False), 1.2e9, None),
    # Qwen-1.5-1.8B, MiniPLM's teacher; exact count of the released model.
    "qwen_1p8b": (_qwen(24, 2048, 16, 5504, tie=False), 1.8e9, 1_836_828_672),
    # SALT (App. E / App. K).
    "salt_1p5b": (_salt(44, 1024, 4, 8192), 1.5e9, None),
    "salt_2p8b": (_salt(92, 1024, 4, 8192), 2.8e9, None),
    "salt_8p6b": (_salt(32, 4096, 32, 16384), 8.6e9, None),
    # TinyLlama-1.1B (RHO-1), exact count of the released model.
    "tinyllama_1p1b": (dict(vocab_size=32_000, num_layers=22, d_model=2048, num_heads=32, num_kv_heads=4, d_ff=5632,
                            mlp="swiglu", norm="rmsnorm", norm_eps=1e-5, tie_embeddings=False), 1.1e9, 1_100_048_384),
}


def preset(name: str, **overrides) -> ModelConfig:
  """The named preset's `ModelConfig`, with any field overridden (e.g. `vocab_size=`, `dtype="bfloat16"`)."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  bad = sorted(set(overrides) - fields)
  if bad:
    raise ValueError(f"unknown ModelConfig field(s) {bad} overriding preset {name!r}; fields: {sorted(fields)}")
  return ModelConfig(**{**PRESETS[name][0], **overrides})
