"""How a bliss_jax `Transformer` corresponds to Hugging Face's `LlamaForCausalLM` and `GPTNeoXForCausalLM`: which
class computes which `ModelConfig`, the config fields that map one to one, and every HF tensor with the parameters of
ours it holds. Export (`hf`) and import (`hf_import`) both read this one table.

Which HF class (`architecture`):

* `norm="layernorm"` (Pythia / GPT-NeoX presets) -> `GPTNeoXForCausalLM`. Needs the plain exact-GELU MLP,
  multi-head attention (`num_kv_heads == num_heads`) and `head_dim == d_model // num_heads`; parallel or
  sequential residual, any `rotary_fraction` (HF's `rotary_pct`), tied or untied output embedding.
* `norm="rmsnorm"` (tiny, Qwen, TinyLlama, SALT presets) -> `LlamaForCausalLM` (Qwen2's checkpoints have the same
  tensors, with q/k/v biases). Needs a gated MLP ("swiglu": `hidden_act="silu"`, "geglu": `hidden_act="gelu"`, exact
  in both), sequential residual and rotary on every head dim; any number of kv heads (MHA / GQA / MQA), any
  `head_dim`, tied or untied.

Why the two computations agree (checked against transformers 5.23; tests compare logits both ways):

* Rotary: ours and both HF classes use GPT-NeoX's rotate-half layout on the first `rotary_dim` dims of each head,
  with `inv_freq = theta^(-2i/rotary_dim)` and positions 0..T-1, so q/k heads are stored in our order, with no
  permutation (unlike Meta's original Llama checkpoints, which use interleaved pairs).
* GQA: query head j uses kv head j // (num_heads / num_kv_heads) in both (our [kv, group] reshape, HF's
  `repeat_kv`).
* Attention scale 1/sqrt(head_dim), no embedding scaling, norms with the same eps (LayerNorm with the biased
  variance, RMSNorm = x * rsqrt(mean(x^2) + eps) * scale), logits = final-normed hidden @ head (or embedding^T).

Tensor layouts (`tensor_map`; layer i; `our/path` -> HF name). Kernels are stored [in, ..., out] by flax and
[out, in] by torch `nn.Linear`, so every weight is transposed; per-head axes are flattened head-major (head h, dim d
-> h * head_dim + d), which is the order HF's `.view(..., heads, head_dim)` reads back.

  Llama (`model.` prefix): embed/embedding -> embed_tokens.weight; attn_norm/scale -> input_layernorm.weight;
  attention/{query,key,value}/kernel [d, H, hd] -> self_attn.{q,k,v}_proj.weight [H*hd, d] (biases
  [H, hd] -> [H*hd]); attention/out/kernel [H, hd, d] -> self_attn.o_proj.weight [d, H*hd] (bias zeros when only
  q/k/v have biases); mlp_norm/scale -> post_attention_layernorm.weight; mlp/wi_gate (the activated input) ->
  mlp.gate_proj, mlp/wi -> mlp.up_proj, mlp/wo -> mlp.down_proj; final_norm/scale -> norm.weight; lm_head/kernel
  [d, V] -> lm_head.weight [V, d] (absent when tied).

  GPT-NeoX (`gpt_neox.` prefix): embed/embedding -> embed_in.weight; attn_norm/{scale,bias} ->
  input_layernorm.{weight,bias}; mlp_norm -> post_attention_layernorm; attention/{query,key,value} ->
  attention.query_key_value, packed per head as [H, (q, k, v), hd] on the output axis (HF views the packed
  output as [H, 3*hd] and chunks it into q, k, v); attention/out -> attention.dense; mlp/wi ->
  mlp.dense_h_to_4h, mlp/wo -> mlp.dense_4h_to_h (zero biases where ours has none; HF's MLP always has them);
  final_norm -> final_layer_norm; lm_head/kernel -> embed_out.weight (the name of Pythia's checkpoints, which
  transformers 5 renames to lm_head on load; absent when tied).

Where our model has fewer biases than the HF class (q/k/v-only biases, or none in GPT-NeoX whose MLP always has
them), the HF tensor holds zeros, which computes the same function.

This module needs numpy only.
"""
import dataclasses
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from bliss_jax.models.config import ModelConfig

LLAMA = "LlamaForCausalLM"
GPT_NEOX = "GPTNeoXForCausalLM"

# The ModelConfig fields this correspondence understands. Any other field (one added to ModelConfig later) must keep
# its default, or `check_representable` refuses, since it cannot know whether the HF class computes it.
HANDLED_FIELDS = frozenset({
    "vocab_size", "num_layers", "d_model", "num_heads", "d_ff", "num_kv_heads", "head_dim", "mlp", "norm",
    "norm_eps", "parallel_residual", "rotary_fraction", "rope_theta", "use_bias", "qkv_bias", "tie_embeddings",
    # Neither changes the function: parameters are float32 whatever the compute dtype; remat only changes the
    # backward pass.
    "dtype", "remat",
    # Changes the parameter layout only (stacked on a leading layer axis); both directions handle both layouts.
    "scan_layers",
})

# (ModelConfig field, Llama / Qwen2 config.json key, GPT-NeoX config.json key): the fields that map one to one.
# vocab_size is the embedding's rows (the tokenizer may have fewer ids).
DIRECT_FIELDS = (
    ("vocab_size", "vocab_size", "vocab_size"),
    ("num_layers", "num_hidden_layers", "num_hidden_layers"),
    ("d_model", "hidden_size", "hidden_size"),
    ("num_heads", "num_attention_heads", "num_attention_heads"),
    ("d_ff", "intermediate_size", "intermediate_size"),
    ("norm_eps", "rms_norm_eps", "layer_norm_eps"),
    ("tie_embeddings", "tie_word_embeddings", "tie_word_embeddings"),
)
# Llama's `hidden_act` of our gated MLPs (both exact: HF's "gelu" is the erf GELU); GPT-NeoX's plain MLP is "gelu".
GATED_ACT = {"swiglu": "silu", "geglu": "gelu"}
NEOX_ACT = "gelu"


def architecture(cfg: ModelConfig) -> str:
  """The HF class that computes `cfg`'s model: `GPT_NEOX` for LayerNorm models, `LLAMA` for RMSNorm models."""
  return GPT_NEOX if cfg.norm == "layernorm" else LLAMA


def direct_key(field: str, arch: str) -> str:
  """The config.json key of a `DIRECT_FIELDS` field in `arch`'s config."""
  llama, neox = next((l, n) for f, l, n in DIRECT_FIELDS if f == field)
  return neox if arch == GPT_NEOX else llama


def _unsupported(field: str, value: Any, why: str) -> ValueError:
  return ValueError(f"no Hugging Face class computes this model: ModelConfig.{field}={value!r}: {why}")


def check_representable(cfg: ModelConfig) -> None:
  """Raises ValueError, naming the `ModelConfig` field, if `architecture(cfg)` cannot compute `cfg`'s model."""
  for field in dataclasses.fields(cfg):
    if field.name not in HANDLED_FIELDS and getattr(cfg, field.name) != field.default:
      raise _unsupported(field.name, getattr(cfg, field.name),
                         "this field is unknown to bliss_jax.export.hf_layout, which cannot tell whether the HF class "
                         "computes it; extend the correspondence (and its tests) first")
  arch = architecture(cfg)
  if arch == GPT_NEOX:
    if cfg.mlp != "gelu":
      raise _unsupported("mlp", cfg.mlp, f"{GPT_NEOX} (chosen for norm='layernorm') has only the plain GELU MLP "
                         "(mlp='gelu'); gated MLPs export to LlamaForCausalLM, which needs norm='rmsnorm'")
    if cfg.kv_heads != cfg.num_heads:
      raise _unsupported("num_kv_heads", cfg.num_kv_heads, f"{GPT_NEOX} has no grouped-/multi-query attention "
                         f"(needs num_kv_heads == num_heads == {cfg.num_heads})")
    if cfg.dim_per_head * cfg.num_heads != cfg.d_model:
      raise _unsupported("head_dim", cfg.head_dim, f"{GPT_NEOX} needs head_dim == d_model // num_heads "
                         f"({cfg.d_model} / {cfg.num_heads}), got {cfg.dim_per_head}")
    if cfg.rotary_dim == 0:
      raise _unsupported("rotary_fraction", cfg.rotary_fraction,
                         f"no rotary dims at all; {GPT_NEOX}'s rotary_pct must be > 0")
  else:
    if cfg.mlp not in GATED_ACT:
      raise _unsupported("mlp", cfg.mlp, f"{LLAMA} (chosen for norm='rmsnorm') has only gated MLPs "
                         "(mlp='swiglu' or 'geglu'); the plain GELU MLP exports to GPTNeoXForCausalLM, which needs "
                         "norm='layernorm'")
    if cfg.parallel_residual:
      raise _unsupported("parallel_residual", True, f"{LLAMA} has only the sequential pre-norm block "
                         "(parallel residual exports to GPTNeoXForCausalLM, which needs norm='layernorm')")
    if cfg.rotary_dim != cfg.dim_per_head:
      raise _unsupported("rotary_fraction", cfg.rotary_fraction, f"{LLAMA} rotates every head dim (needs "
                         "rotary_fraction=1; partial rotary exports to GPTNeoXForCausalLM, which needs "
                         "norm='layernorm')")
    if cfg.d_model % cfg.num_heads:
      raise _unsupported("d_model", cfg.d_model, f"transformers' LlamaConfig requires d_model to be a multiple of "
                         f"num_heads={cfg.num_heads} (even with an explicit head_dim)")


# How our parameters become one HF tensor (`to_hf`) and back (`from_hf`).
COPY = "copy"        # the same array (embeddings)
VECTOR = "vector"    # flattened to 1-D (norm scales and biases; per-head biases [H, hd] -> [H*hd])
LINEAR1 = "linear1"  # a flax kernel with 1 input axis [in, ...out] -> torch [prod(out), in]
LINEAR2 = "linear2"  # a flax kernel with 2 input axes [H, hd, out] -> torch [out, H*hd]
QKV_KERNEL = "qkv_kernel"  # GPT-NeoX's packed q, k, v kernels [d, H, hd] x 3 -> [H*3*hd, d] ([H, (q,k,v), hd])
QKV_BIAS = "qkv_bias"      # GPT-NeoX's packed q, k, v biases [H, hd] x 3 -> [H*3*hd]


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """One HF tensor and the parameters of ours it holds.

  Attributes:
    hf: the HF tensor's name.
    ours: our parameter paths ("/"-joined), relative to the block for a per-layer tensor; None for a part our model
      lacks (the HF tensor holds zeros there).
    shapes: our parameters' shapes (per layer), one per `ours`.
    layout: how ours become the HF tensor (COPY, VECTOR, LINEAR1, LINEAR2, QKV_KERNEL, QKV_BIAS).
    layer: the block's index, or None for a tensor outside the blocks.
  """
  hf: str
  ours: Tuple[Optional[str], ...]
  shapes: Tuple[Tuple[int, ...], ...]
  layout: str
  layer: Optional[int] = None


def to_hf(layout: str, xs: Sequence[np.ndarray]) -> np.ndarray:
  """The HF tensor of our parameters `xs` (see the layout constants)."""
  x = xs[0]
  if layout == COPY:
    return x
  if layout == VECTOR:
    return x.reshape(-1)
  if layout in (LINEAR1, LINEAR2):
    n_in = int(np.prod(x.shape[:1 if layout == LINEAR1 else 2]))
    return x.reshape(n_in, -1).T
  if layout == QKV_KERNEL:
    return np.stack(xs, axis=2).reshape(x.shape[0], -1).T  # [d, H, 3, hd]
  if layout == QKV_BIAS:
    return np.stack(xs, axis=1).reshape(-1)  # [H, 3, hd]
  raise ValueError(f"unknown layout {layout!r}")


def from_hf(layout: str, x: np.ndarray, shapes: Sequence[Tuple[int, ...]]) -> List[np.ndarray]:
  """Our parameters (of `shapes`) held in the HF tensor `x`: the inverse of `to_hf`."""
  if layout in (COPY, VECTOR):
    return [x.reshape(shapes[0])]
  if layout in (LINEAR1, LINEAR2):
    return [x.T.reshape(shapes[0])]
  if layout == QKV_KERNEL:
    d, h, hd = shapes[0]
    packed = x.T.reshape(d, h, 3, hd)
    return [packed[:, :, j] for j in range(3)]
  if layout == QKV_BIAS:
    h, hd = shapes[0]
    packed = x.reshape(h, 3, hd)
    return [packed[:, j] for j in range(3)]
  raise ValueError(f"unknown layout {layout!r}")


def hf_shape(m: TensorMap) -> Tuple[int, ...]:
  """The HF tensor's shape."""
  return to_hf(m.layout, [np.zeros(s, np.int8) for s in m.shapes]).shape


def head_name(cfg: ModelConfig) -> str:
  """The untied output head's HF name as checkpoints of `architecture(cfg)` store it."""
  return "embed_out.weight" if architecture(cfg) == GPT_NEOX else "lm_head.weight"


def tensor_map(cfg: ModelConfig) -> List[TensorMap]:
  """Every HF tensor of `cfg`'s model and the parameters of ours it holds (module docstring), in a fixed order.

  Raises:
    ValueError: `cfg` is not representable (`check_representable`).
  """
  check_representable(cfg)
  d, h, kv, hd, ff, v = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.dim_per_head, cfg.d_ff, cfg.vocab_size
  attn_bias, full_bias = cfg.use_bias or cfg.qkv_bias, cfg.use_bias
  out: List[TensorMap] = []

  def add(hf, ours, shapes, layout, layer=None):
    out.append(TensorMap(hf, tuple(ours), tuple(tuple(s) for s in shapes), layout, layer))

  def one(hf, ours, shape, layout, layer=None, present=True):
    add(hf, [ours if present else None], [shape], layout, layer)

  if architecture(cfg) == GPT_NEOX:
    one("gpt_neox.embed_in.weight", "embed/embedding", (v, d), COPY)
    for i in range(cfg.num_layers):
      pre = f"gpt_neox.layers.{i}"
      for ours, theirs in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
        one(f"{pre}.{theirs}.weight", f"{ours}/scale", (d,), VECTOR, i)
        one(f"{pre}.{theirs}.bias", f"{ours}/bias", (d,), VECTOR, i)
      parts = ("query", "key", "value")
      add(f"{pre}.attention.query_key_value.weight", [f"attention/{p}/kernel" for p in parts], [(d, h, hd)] * 3,
          QKV_KERNEL, i)
      if attn_bias:
        add(f"{pre}.attention.query_key_value.bias", [f"attention/{p}/bias" for p in parts], [(h, hd)] * 3,
            QKV_BIAS, i)
      one(f"{pre}.attention.dense.weight", "attention/out/kernel", (h, hd, d), LINEAR2, i)
      if attn_bias:
        one(f"{pre}.attention.dense.bias", "attention/out/bias", (d,), VECTOR, i, full_bias)
      one(f"{pre}.mlp.dense_h_to_4h.weight", "mlp/wi/kernel", (d, ff), LINEAR1, i)
      one(f"{pre}.mlp.dense_h_to_4h.bias", "mlp/wi/bias", (ff,), VECTOR, i, full_bias)
      one(f"{pre}.mlp.dense_4h_to_h.weight", "mlp/wo/kernel", (ff, d), LINEAR1, i)
      one(f"{pre}.mlp.dense_4h_to_h.bias", "mlp/wo/bias", (d,), VECTOR, i, full_bias)
    one("gpt_neox.final_layer_norm.weight", "final_norm/scale", (d,), VECTOR)
    one("gpt_neox.final_layer_norm.bias", "final_norm/bias", (d,), VECTOR)
  else:
    one("model.embed_tokens.weight", "embed/embedding", (v, d), COPY)
    for i in range(cfg.num_layers):
      pre = f"model.layers.{i}"
      one(f"{pre}.input_layernorm.weight", "attn_norm/scale", (d,), VECTOR, i)
      one(f"{pre}.post_attention_layernorm.weight", "mlp_norm/scale", (d,), VECTOR, i)
      for part, proj, heads in (("query", "q_proj", h), ("key", "k_proj", kv), ("value", "v_proj", kv)):
        one(f"{pre}.self_attn.{proj}.weight", f"attention/{part}/kernel", (d, heads, hd), LINEAR1, i)
        if attn_bias:
          one(f"{pre}.self_attn.{proj}.bias", f"attention/{part}/bias", (heads, hd), VECTOR, i)
      one(f"{pre}.self_attn.o_proj.weight", "attention/out/kernel", (h, hd, d), LINEAR2, i)
      if attn_bias:
        one(f"{pre}.self_attn.o_proj.bias", "attention/out/bias", (d,), VECTOR, i, full_bias)
      for ours, theirs in (("wi_gate", "gate_proj"), ("wi", "up_proj"), ("wo", "down_proj")):
        shape = (ff, d) if ours == "wo" else (d, ff)
        one(f"{pre}.mlp.{theirs}.weight", f"mlp/{ours}/kernel", shape, LINEAR1, i)
        if full_bias:
          one(f"{pre}.mlp.{theirs}.bias", f"mlp/{ours}/bias", shape[1:], VECTOR, i)
    one("model.norm.weight", "final_norm/scale", (d,), VECTOR)
  if not cfg.tie_embeddings:
    one(head_name(cfg), "lm_head/kernel", (d, v), LINEAR1)
  return out
