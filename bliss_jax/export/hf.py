"""Export of a bliss_jax MODEL_DIR to a Hugging Face `transformers` model directory.

`export(model_dir, out_dir)` writes what `AutoModelForCausalLM.from_pretrained(out_dir)` and
`AutoTokenizer.from_pretrained(out_dir)` need (so lm-evaluation-harness can run `--model hf
--model_args pretrained=OUT_DIR`):

* `model.safetensors`: the parameters, float32, in the layout of the HF class below (`convert_params`).
* `config.json`: the HF config (`hf_config`); `generation_config.json`: bos / eos / pad ids.
* `tokenizer.model` + `tokenizer_config.json`: the tokenizer (`tokenizer_files`).
* `bliss_jax_export.json`: provenance (source MODEL_DIR, step, `ModelConfig`, the vocabulary's record).

The tokenizer is the vocabulary MODEL_DIR recorded (`training.model_vocabulary`); another one given is refused.

Which HF class (`architecture`):

* `norm="layernorm"` (Pythia / GPT-NeoX presets) -> `GPTNeoXForCausalLM`. Needs the plain exact-GELU MLP,
  multi-head attention (`num_kv_heads == num_heads`) and `head_dim == d_model // num_heads`; parallel or
  sequential residual, any `rotary_fraction` (HF's `rotary_pct`), tied or untied output embedding.
* `norm="rmsnorm"` (tiny, Qwen, TinyLlama, SALT presets) -> `LlamaForCausalLM`. Needs a gated MLP ("swiglu":
  `hidden_act="silu"`, "geglu": `hidden_act="gelu"`, exact in both), sequential residual and rotary on every
  head dim; any number of kv heads (MHA / GQA / MQA), any `head_dim`, tied or untied.

Token ids: pad 0, eos 1, unk 2 (our vocabularies' T5 conventions), and bos 0. Every example a model here trained on
began with id 0 (SeqIO's decoder inputs are the targets shifted right behind the pad id), so the export declares 0
its BOS and its tokenizer prepends it: `AutoTokenizer(...)(text)["input_ids"]` is `[0] + ids`. lm-evaluation-harness
(0.4.9.2+ by default; 0.4.2-0.4.9.1 only with `add_bos_token=True`, and those also prepend 0 to an empty
context's continuation) then builds each row as `[0] + context ids + continuation ids` and uses `[0]` for an empty
context, which is what `bliss_jax.eval.loglikelihood` does, so both measure the same numbers. No eos is appended.

A shape the chosen class cannot compute raises `ValueError` naming the `ModelConfig` field. Where our model has
fewer biases than the HF class (q/k/v-only biases, or none in GPT-NeoX whose MLP always has them), the missing
biases are written as zeros, which computes the same function.

Why the two computations agree (checked against transformers 5.23; the test compares logits):

* Rotary: ours and both HF classes use GPT-NeoX's rotate-half layout on the first `rotary_dim` dims of each head,
  with `inv_freq = theta^(-2i/rotary_dim)` and positions 0..T-1, so q/k heads are written in our order, with no
  permutation (unlike Meta's original Llama checkpoints, which use interleaved pairs).
* GQA: query head j uses kv head j // (num_heads / num_kv_heads) in both (our [kv, group] reshape, HF's
  `repeat_kv`).
* Attention scale 1/sqrt(head_dim), no embedding scaling, norms with the same eps (LayerNorm with the biased
  variance, RMSNorm = x * rsqrt(mean(x^2) + eps) * scale), logits = final-normed hidden @ head (or embedding^T).

The tokenizer is exported as transformers' `SentencePieceBackend` over seqio's SentencePiece model proto (see
`tokenizer_files`), so `AutoTokenizer` runs the SentencePiece library itself and reproduces
`seqio.SentencePieceVocabulary.encode` ids exactly, behind the bos.

Caveats: the weights are float32 whatever `ModelConfig.dtype` was; a model trained with bfloat16 activations
evaluated in float32 by HF differs from our bfloat16 forward pass by bfloat16 rounding, not by the export.
config.json's vocab_size is the padded embedding (e.g. 2176 rows for 2148 tokenizer ids); the padding rows were
never targets, so they get negligible probability, but sampling could in principle emit an id the tokenizer
cannot decode. The tokenizer needs transformers 5 (`SentencePieceBackend`; 4.x cannot load it), and its bos
comes from `special_tokens_pattern`, which transformers' `save_pretrained` does not write back: re-saving the
tokenizer drops the bos (re-export instead). Load the exported model in a process that has not imported
TensorFlow first (seqio does): transformers' modeling code pulls in torch._dynamo, whose LLVM then aborts the
process ("LLVM ERROR: inconsistency in registered CommandLine options"); lm-evaluation-harness runs in its own
process, so is unaffected.

This module needs numpy (and `safetensors` to write the weights); it never imports torch or transformers.
"""
import dataclasses
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from bliss_jax.models.config import ModelConfig

LLAMA = "LlamaForCausalLM"
GPT_NEOX = "GPTNeoXForCausalLM"
TOKENIZER_CLASS = "SentencePieceBackend"
SPM_FILE = "tokenizer.model"  # the file name SentencePieceBackend loads
WEIGHTS_FILE = "model.safetensors"
PROVENANCE_FILE = "bliss_jax_export.json"
DEFAULT_MAX_POSITION_EMBEDDINGS = 2048
EXTRA_IDS = 100
PAD_ID, EOS_ID = 0, 1
BOS_ID = 0  # = bliss_jax.eval.loglikelihood.START_ID, the id every training example begins with

# The ModelConfig fields this exporter understands. Any other field (one added to ModelConfig later) must keep its
# default, or `hf_config` refuses, since it cannot know whether the HF class computes it.
_HANDLED_FIELDS = frozenset({
    "vocab_size", "num_layers", "d_model", "num_heads", "d_ff", "num_kv_heads", "head_dim", "mlp", "norm",
    "norm_eps", "parallel_residual", "rotary_fraction", "rope_theta", "use_bias", "qkv_bias", "tie_embeddings",
    # Neither changes the function: parameters are float32 whatever the compute dtype (the export is float32);
    # remat only changes the backward pass.
    "dtype", "remat",
    # Changes the parameter layout only (stacked on a leading layer axis); `convert_params` reads both layouts.
    "scan_layers",
})


def architecture(cfg: ModelConfig) -> str:
  """The HF class `cfg` exports to: `GPT_NEOX` for LayerNorm models, `LLAMA` for RMSNorm models."""
  return GPT_NEOX if cfg.norm == "layernorm" else LLAMA


def _unsupported(field: str, value: Any, why: str) -> ValueError:
  return ValueError(f"cannot export to Hugging Face: ModelConfig.{field}={value!r}: {why}")


def check_exportable(cfg: ModelConfig) -> None:
  """Raises ValueError, naming the `ModelConfig` field, if `architecture(cfg)` cannot compute `cfg`'s model."""
  for field in dataclasses.fields(cfg):
    if field.name not in _HANDLED_FIELDS and getattr(cfg, field.name) != field.default:
      raise _unsupported(field.name, getattr(cfg, field.name),
                         "this field is unknown to bliss_jax.export.hf, which cannot tell whether the HF class "
                         "computes it; extend the exporter (and its test) first")
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
    if cfg.mlp not in ("swiglu", "geglu"):
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


def _partial_rotary_factor(cfg: ModelConfig) -> float:
  """HF's `rotary_pct`: the smallest float f with int(head_dim * f) == our rotary_dim (HF truncates)."""
  hd, rotary_dim = cfg.dim_per_head, cfg.rotary_dim
  f = rotary_dim / hd
  while int(hd * f) < rotary_dim:
    f = math.nextafter(f, 2.0)
  return f


def hf_config(cfg: ModelConfig, *, max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS
             ) -> Dict[str, Any]:
  """The `config.json` dict of `cfg`'s HF model (see the module docstring for the class).

  Field mapping (ours -> HF): vocab_size -> vocab_size (the padded embedding rows; the tokenizer has fewer ids),
  num_layers -> num_hidden_layers, d_model -> hidden_size, num_heads -> num_attention_heads, d_ff ->
  intermediate_size, norm_eps -> rms_norm_eps (Llama) / layer_norm_eps (GPT-NeoX), rope_theta -> rope_theta
  (Llama) / rotary_emb_base (GPT-NeoX), tie_embeddings -> tie_word_embeddings. Llama also: num_kv_heads ->
  num_key_value_heads, head_dim -> head_dim, mlp -> hidden_act ("swiglu": "silu", "geglu": "gelu", both exact),
  use_bias or qkv_bias -> attention_bias, use_bias -> mlp_bias. GPT-NeoX also: parallel_residual ->
  use_parallel_residual, rotary_fraction -> rotary_pct, use_bias or qkv_bias -> attention_bias. The rotary
  settings are also written as transformers 5's `rope_parameters`; the legacy keys keep 4.x readers working.

  Token ids: pad 0, eos 1, bos 0 (the start id every training example begins with; see the module docstring).

  Args:
    cfg: the model's shape.
    max_position_embeddings: the context length advertised (lm-evaluation-harness truncates inputs to it). Rotary
      positions have no learned limit; use the length the model was trained on.

  Raises:
    ValueError: the HF class cannot express `cfg` (see `check_exportable`).
  """
  check_exportable(cfg)
  common = dict(
      architectures=[architecture(cfg)], vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
      intermediate_size=cfg.d_ff, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      tie_word_embeddings=cfg.tie_embeddings, attention_bias=cfg.use_bias or cfg.qkv_bias,
      max_position_embeddings=max_position_embeddings, attention_dropout=0.0, initializer_range=0.02,
      use_cache=True, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, dtype="float32",
      torch_dtype="float32")
  theta = float(cfg.rope_theta)
  if architecture(cfg) == GPT_NEOX:
    pct = _partial_rotary_factor(cfg)
    return dict(common, model_type="gpt_neox", hidden_act="gelu", layer_norm_eps=cfg.norm_eps,
                use_parallel_residual=cfg.parallel_residual, rotary_pct=pct, rotary_emb_base=theta,
                rope_parameters={"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": pct},
                hidden_dropout=0.0, classifier_dropout=0.0)
  return dict(common, model_type="llama", num_key_value_heads=cfg.kv_heads, head_dim=cfg.dim_per_head,
              hidden_act="silu" if cfg.mlp == "swiglu" else "gelu", rms_norm_eps=cfg.norm_eps, rope_theta=theta,
              rope_parameters={"rope_type": "default", "rope_theta": theta}, mlp_bias=cfg.use_bias,
              pretraining_tp=1)


def _leaf(x) -> np.ndarray:
  unbox = getattr(x, "unbox", None)  # a flax `nn.Partitioned` box
  return np.asarray(unbox() if callable(unbox) else x, dtype=np.float32)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f"{prefix}{key}/"))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


class _Params:
  """Our parameters by "/"-joined path, per layer in either layout; remembers which were read."""

  def __init__(self, params: Mapping[str, Any], cfg: ModelConfig):
    self._flat = _flatten(params)
    self._used = set()
    self._scanned = any(k.startswith("layers/block/") for k in self._flat)
    self._cfg = cfg

  def get(self, path: str) -> np.ndarray:
    if path not in self._flat:
      raise ValueError(f"parameter {path!r} missing: do the parameters belong to this ModelConfig? "
                       f"(have: {sorted(self._flat)[:8]}...)")
    self._used.add(path)
    return _leaf(self._flat[path])

  def layer(self, i: int, name: str) -> np.ndarray:
    if self._scanned:
      x = self.get(f"layers/block/{name}")
      if x.shape[0] != self._cfg.num_layers:
        raise ValueError(f"scanned parameter {name!r} has {x.shape[0]} layers, ModelConfig.num_layers="
                         f"{self._cfg.num_layers}")
      return x[i]
    return self.get(f"layer_{i}/{name}")

  def unused(self) -> List[str]:
    return sorted(set(self._flat) - self._used)


def _expect(name: str, x: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
  if x.shape != tuple(shape):
    raise ValueError(f"parameter {name}: shape {x.shape}, expected {tuple(shape)} from the ModelConfig")
  return x


def convert_params(params: Mapping[str, Any], cfg: ModelConfig) -> Dict[str, np.ndarray]:
  """Our `Transformer(cfg)` parameters (a nested dict of arrays) as {HF parameter name: float32 C-order array}.

  Kernels are stored [in, ..., out] by flax and [out, in] by torch `nn.Linear`, so every weight is transposed;
  per-head axes are flattened head-major (head h, dim d -> h * head_dim + d), which is the order HF's
  `.view(..., heads, head_dim)` reads back. The mapping (layer i; `our/path` -> HF name):

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

  Args:
    params: the `params` collection of `Transformer(cfg)`, either layout (`scan_layers` or not); jax or numpy
      arrays (or flax boxes).
    cfg: its shape.

  Returns:
    {HF name: np.float32 array}.

  Raises:
    ValueError: `cfg` is not exportable, or the parameters do not match it (missing, extra, or misshapen).
  """
  check_exportable(cfg)
  p = _Params(params, cfg)
  d, h, kv, hd, ff, v = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.dim_per_head, cfg.d_ff, cfg.vocab_size
  any_attn_bias = cfg.use_bias or cfg.qkv_bias
  out: Dict[str, np.ndarray] = {}

  def linear(name: str, kernel: np.ndarray, in_axes: int) -> None:
    """HF `name.weight` [out, in] from a flax kernel whose first `in_axes` axes are inputs."""
    n_in = int(np.prod(kernel.shape[:in_axes]))
    out[f"{name}.weight"] = kernel.reshape(n_in, -1).T

  def bias(name: str, b: Optional[np.ndarray], size: int) -> None:
    out[f"{name}.bias"] = np.zeros((size,), np.float32) if b is None else b.reshape(size)

  def attn(i, part, heads):
    kernel = _expect(f"layer {i} attention/{part}/kernel", p.layer(i, f"attention/{part}/kernel"), (d, heads, hd))
    b = p.layer(i, f"attention/{part}/bias") if any_attn_bias else None
    return kernel, b

  embedding = _expect("embed/embedding", p.get("embed/embedding"), (v, d))
  if architecture(cfg) == GPT_NEOX:
    out["gpt_neox.embed_in.weight"] = embedding
    for i in range(cfg.num_layers):
      pre = f"gpt_neox.layers.{i}"
      for ours, theirs in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
        out[f"{pre}.{theirs}.weight"] = p.layer(i, f"{ours}/scale")
        out[f"{pre}.{theirs}.bias"] = p.layer(i, f"{ours}/bias")
      (qk, qb), (kk, kb), (vk, vb) = (attn(i, part, h) for part in ("query", "key", "value"))
      linear(f"{pre}.attention.query_key_value", np.stack([qk, kk, vk], axis=2), 1)  # [d, H, 3, hd]
      if any_attn_bias:
        bias(f"{pre}.attention.query_key_value", np.stack([qb, kb, vb], axis=1), 3 * h * hd)  # [H, 3, hd]
      linear(f"{pre}.attention.dense", p.layer(i, "attention/out/kernel"), 2)
      if any_attn_bias:
        bias(f"{pre}.attention.dense", p.layer(i, "attention/out/bias") if cfg.use_bias else None, d)
      linear(f"{pre}.mlp.dense_h_to_4h", _expect(f"layer {i} mlp/wi/kernel", p.layer(i, "mlp/wi/kernel"), (d, ff)),
             1)
      bias(f"{pre}.mlp.dense_h_to_4h", p.layer(i, "mlp/wi/bias") if cfg.use_bias else None, ff)
      linear(f"{pre}.mlp.dense_4h_to_h", p.layer(i, "mlp/wo/kernel"), 1)
      bias(f"{pre}.mlp.dense_4h_to_h", p.layer(i, "mlp/wo/bias") if cfg.use_bias else None, d)
    out["gpt_neox.final_layer_norm.weight"] = p.get("final_norm/scale")
    out["gpt_neox.final_layer_norm.bias"] = p.get("final_norm/bias")
    head_name = "embed_out"
  else:
    out["model.embed_tokens.weight"] = embedding
    for i in range(cfg.num_layers):
      pre = f"model.layers.{i}"
      out[f"{pre}.input_layernorm.weight"] = p.layer(i, "attn_norm/scale")
      out[f"{pre}.post_attention_layernorm.weight"] = p.layer(i, "mlp_norm/scale")
      for part, proj, heads in (("query", "q_proj", h), ("key", "k_proj", kv), ("value", "v_proj", kv)):
        kernel, b = attn(i, part, heads)
        linear(f"{pre}.self_attn.{proj}", kernel, 1)
        if any_attn_bias:
          bias(f"{pre}.self_attn.{proj}", b, heads * hd)
      linear(f"{pre}.self_attn.o_proj", p.layer(i, "attention/out/kernel"), 2)
      if any_attn_bias:
        bias(f"{pre}.self_attn.o_proj", p.layer(i, "attention/out/bias") if cfg.use_bias else None, d)
      for ours, theirs in (("wi_gate", "gate_proj"), ("wi", "up_proj"), ("wo", "down_proj")):
        linear(f"{pre}.mlp.{theirs}", p.layer(i, f"mlp/{ours}/kernel"), 1)
        if cfg.use_bias:
          bias(f"{pre}.mlp.{theirs}", p.layer(i, f"mlp/{ours}/bias"), d if ours == "wo" else ff)
    out["model.norm.weight"] = p.get("final_norm/scale")
    head_name = "lm_head"
  if not cfg.tie_embeddings:
    out[f"{head_name}.weight"] = _expect("lm_head/kernel", p.get("lm_head/kernel"), (d, v)).T
  unused = p.unused()
  if unused:
    raise ValueError(f"parameters not accounted for by the ModelConfig (wrong model_config.json?): {unused}")
  return {k: np.ascontiguousarray(x, dtype=np.float32) for k, x in out.items()}


def tokenizer_files(vocabulary_path: Optional[str] = None, *, extra_ids: int = EXTRA_IDS,
                    model_max_length: int = DEFAULT_MAX_POSITION_EMBEDDINGS) -> Tuple[Dict[str, bytes], int]:
  """The tokenizer's files {name: bytes} and its number of ids.

  `tokenizer.model` is seqio's SentencePiece model proto (`SentencePieceVocabulary.sp_model`): the trained model
  with the `extra_ids` sentinels appended as user-defined pieces "▁<extra_id_N>" (N = extra_ids - 1 at the first
  appended id, N = 0 at the last), exactly as seqio encodes with it. `tokenizer_config.json` names
  `SentencePieceBackend`, transformers 5's class that wraps a bare SentencePiece model with the SentencePiece
  library itself, with `special_tokens_pattern="bos"` (prepend the bos, append nothing), bos `<pad>` (0, see the
  module docstring), eos `</s>` (1), unk `<unk>` (2), pad `<pad>` (0), sep unset; `add_bos_token: true` states the
  same for readers that look for that key. So `AutoTokenizer(...)(text)["input_ids"]` is `[0] +
  vocabulary.encode(text)`, and `vocabulary.encode(text)` with `add_special_tokens=False`. (T5Tokenizer would append
  an eos, and its `tokenizers`-library Unigram breaks ties between equal-score segmentations differently from
  SentencePiece, so its ids differ on some texts.) `split_special_tokens` is on, so a literal "</s>" or "<pad>" in
  text is encoded as characters, as seqio does. Decoding differs from seqio only in how unknown pieces are shown
  ("<unk>" instead of " ⁇ ") and in showing a bos as "<pad>" unless `skip_special_tokens`.

  Args:
    vocabulary_path: the SentencePiece model the run was trained with (default: the embedded corpus's,
      `bliss_jax.data.vocabulary.default_vocabulary_path()`).
    extra_ids: sentinel ids the run's vocabulary appended (bliss_jax's default: 100).
    model_max_length: the tokenizer's advertised maximum length.
  """
  from bliss_jax.data import vocabulary  # pylint: disable=g-import-not-at-top  (seqio is slow to import)
  path = vocabulary_path or vocabulary.default_vocabulary_path()
  vocab = vocabulary.load_vocabulary(path, extra_ids=extra_ids)
  config = dict(tokenizer_class=TOKENIZER_CLASS, special_tokens_pattern="bos", add_bos_token=True,
                add_eos_token=False, bos_token="<pad>", sep_token=None, eos_token="</s>", unk_token="<unk>",
                pad_token="<pad>", model_max_length=model_max_length, split_special_tokens=True,
                clean_up_tokenization_spaces=False)
  files = {SPM_FILE: vocab.sp_model, "tokenizer_config.json": _json_bytes(config)}
  return files, vocab.vocab_size


def _json_bytes(obj) -> bytes:
  return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _write(path: str, data: bytes) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def save_safetensors(tensors: Mapping[str, np.ndarray], path: str, metadata: Optional[Mapping[str, str]] = None
                    ) -> None:
  """Writes `tensors` with `safetensors.numpy`, tagged `format=pt` (transformers refuses files without it).

  The file is written beside `path` and renamed into place, with the usual permissions (safetensors creates it
  owner-only).
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top  (only needed for writing)
  tmp = path + ".tmp"
  save_file(dict(tensors), tmp, metadata={"format": "pt", **(metadata or {})})
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  os.replace(tmp, path)


def export(model_dir: str, out_dir: str, step: Optional[int] = None, vocabulary_path: Optional[str] = None, *,
           max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS) -> str:
  """Writes MODEL_DIR's checkpoint (default: the latest) as a Hugging Face model directory `out_dir`.

  Reads MODEL_DIR/model_config.json and the checkpoint's parameters (not the optimizer state), checks the shape and
  the vocabulary before loading anything, and writes the files listed in the module docstring (existing ones are
  replaced).

  Args:
    model_dir: a bliss_jax training run's directory (model_config.json, checkpoints/).
    out_dir: the HF model directory to write (created).
    step: the checkpoint step (default: the latest).
    vocabulary_path: the SentencePiece model the run was trained with ("default": the embedded one); by default the
      one MODEL_DIR recorded (`model_vocabulary.vocabulary_for`: another one is refused; a MODEL_DIR without a
      record gets the embedded one, with a warning that it could not be checked).
    max_position_embeddings: the context length the HF config and tokenizer advertise (see `hf_config`).

  Returns:
    `out_dir`.

  Raises:
    FileNotFoundError: `model_dir` has no model_config.json or no checkpoint.
    ValueError: the shape cannot be exported, the vocabulary is not the one MODEL_DIR recorded
      (`model_vocabulary.VocabularyMismatch`), or it has more ids than the model's embedding.
  """
  from bliss_jax.data import vocabulary  # pylint: disable=g-import-not-at-top
  from bliss_jax.training import checkpoints, model_vocabulary  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  cfg = ModelDir(model_dir).read_model_config()
  config = hf_config(cfg, max_position_embeddings=max_position_embeddings)
  _, record = model_vocabulary.vocabulary_for(model_dir, vocabulary_path)
  tok_files, n_ids = tokenizer_files(None if record["path"] == vocabulary.DEFAULT else record["path"],
                                     extra_ids=record["extra_ids"], model_max_length=max_position_embeddings)
  if n_ids > cfg.vocab_size:
    raise ValueError(f"the vocabulary has {n_ids} ids but {model_dir}'s model only {cfg.vocab_size}: is "
                     f"{model_vocabulary.summary(record)} the one the run was trained with?")
  step, params = checkpoints.load_params(model_dir, step=step)
  tensors = convert_params(params, cfg)
  os.makedirs(out_dir, exist_ok=True)
  save_safetensors(tensors, os.path.join(out_dir, WEIGHTS_FILE), {"bliss_jax_step": str(step)})
  _write(os.path.join(out_dir, "config.json"), _json_bytes(config))
  _write(os.path.join(out_dir, "generation_config.json"),
         _json_bytes({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}))
  for name, data in tok_files.items():
    _write(os.path.join(out_dir, name), data)
  provenance = {"model_dir": os.path.abspath(model_dir), "step": int(step), "architecture": architecture(cfg),
                "model_config": dataclasses.asdict(cfg), "vocabulary": record, "vocabulary_ids": n_ids}
  _write(os.path.join(out_dir, PROVENANCE_FILE), _json_bytes(provenance))
  return out_dir
