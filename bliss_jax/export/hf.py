"""Export of a bliss_jax MODEL_DIR to a Hugging Face `transformers` model directory.

`export(model_dir, out_dir)` writes what `AutoModelForCausalLM.from_pretrained(out_dir)` and
`AutoTokenizer.from_pretrained(out_dir)` need (so lm-evaluation-harness can run `--model hf
--model_args pretrained=OUT_DIR`):

* `model.safetensors`: the parameters, float32, in the layout of the HF class below (`convert_params`).
* `config.json`: the HF config (`hf_config`); `generation_config.json`: bos / eos / pad ids.
* `tokenizer.model` + `tokenizer_config.json`: the tokenizer (`tokenizer_files`).
* `bliss_jax_export.json`: provenance (source MODEL_DIR, step, `ModelConfig`, the vocabulary's record).

The tokenizer is the vocabulary MODEL_DIR recorded (`training.model_vocabulary`); another one given is refused. A
MODEL_DIR imported from Hugging Face (`hf_import`), or trained on its tokenizer, exports that tokenizer's files as they
are, with its own bos / eos / pad ids in the configs (`data.hf_tokenizer.config_token_ids`); what follows about token
ids concerns our own vocabularies.

The HF class, the config fields and every tensor's layout are `hf_layout`'s (shared with the import,
`hf_import`): LayerNorm models become `GPTNeoXForCausalLM`, RMSNorm models `LlamaForCausalLM`. A shape the chosen
class cannot compute raises `ValueError` naming the `ModelConfig` field. Where our model has fewer biases than the HF
class, the missing biases are written as zeros, which computes the same function.

Token ids: pad 0, eos 1, unk 2 (our vocabularies' T5 conventions), and bos 0. Every example a model here trained on
began with id 0 (SeqIO's decoder inputs are the targets shifted right behind the pad id), so the export declares 0
its BOS and its tokenizer prepends it: `AutoTokenizer(...)(text)["input_ids"]` is `[0] + ids`. lm-evaluation-harness
(0.4.9.2+ by default; 0.4.2-0.4.9.1 only with `add_bos_token=True`, and those also prepend 0 to an empty
context's continuation) then builds each row as `[0] + context ids + continuation ids` and uses `[0]` for an empty
context, which is what `bliss_jax.eval.loglikelihood` does, so both measure the same numbers. No eos is appended.

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
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from bliss_jax.export import hf_layout
from bliss_jax.export.hf_layout import GPT_NEOX
from bliss_jax.models.config import ModelConfig, as_record

TOKENIZER_CLASS = "SentencePieceBackend"
SPM_FILE = "tokenizer.model"  # the file name SentencePieceBackend loads
WEIGHTS_FILE = "model.safetensors"
PROVENANCE_FILE = "bliss_jax_export.json"
DEFAULT_MAX_POSITION_EMBEDDINGS = 2048
EXTRA_IDS = 100
PAD_ID, EOS_ID = 0, 1
BOS_ID = 0  # = bliss_jax.eval.loglikelihood.START_ID, the id every training example begins with
_TOKEN_IDS = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}


def _partial_rotary_factor(cfg: ModelConfig) -> float:
  """HF's `rotary_pct`: the smallest float f with int(head_dim * f) == our rotary_dim (HF truncates)."""
  hd, rotary_dim = cfg.dim_per_head, cfg.rotary_dim
  f = rotary_dim / hd
  while int(hd * f) < rotary_dim:
    f = math.nextafter(f, 2.0)
  return f


def hf_config(cfg: ModelConfig, *, max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS,
              token_ids: Optional[Mapping[str, Optional[int]]] = None) -> Dict[str, Any]:
  """The `config.json` dict of `cfg`'s HF model (`hf_layout.architecture`).

  Field mapping (ours -> HF): `hf_layout.DIRECT_FIELDS` (vocab_size, num_layers -> num_hidden_layers, d_model ->
  hidden_size, num_heads -> num_attention_heads, d_ff -> intermediate_size, norm_eps -> rms_norm_eps (Llama) /
  layer_norm_eps (GPT-NeoX), tie_embeddings -> tie_word_embeddings); rope_theta -> rope_theta (Llama) /
  rotary_emb_base (GPT-NeoX). Llama also: num_kv_heads -> num_key_value_heads, head_dim -> head_dim, mlp ->
  hidden_act (`hf_layout.GATED_ACT`), use_bias or qkv_bias -> attention_bias, use_bias -> mlp_bias. GPT-NeoX also:
  parallel_residual -> use_parallel_residual, rotary_fraction -> rotary_pct, use_bias or qkv_bias ->
  attention_bias. The rotary settings are also written as transformers 5's `rope_parameters`; the legacy keys keep
  4.x readers working.

  Token ids: pad 0, eos 1, bos 0 (the start id every training example begins with; see the module docstring), or
  `token_ids`.

  Args:
    cfg: the model's shape.
    max_position_embeddings: the context length advertised (lm-evaluation-harness truncates inputs to it). Rotary
      positions have no learned limit; use the length the model was trained on.
    token_ids: {"bos_token_id", "eos_token_id", "pad_token_id"} of another tokenizer than ours (an imported one,
      `data.hf_tokenizer.config_token_ids`).

  Raises:
    ValueError: the HF class cannot express `cfg` (`hf_layout.check_representable`).
  """
  hf_layout.check_representable(cfg)
  arch = hf_layout.architecture(cfg)
  common = dict(
      {hf_layout.direct_key(field, arch): getattr(cfg, field) for field, _, _ in hf_layout.DIRECT_FIELDS},
      architectures=[arch], attention_bias=cfg.use_bias or cfg.qkv_bias,
      max_position_embeddings=max_position_embeddings, attention_dropout=0.0, initializer_range=0.02,
      use_cache=True, **(token_ids or _TOKEN_IDS), dtype="float32", torch_dtype="float32")
  theta = float(cfg.rope_theta)
  if arch == GPT_NEOX:
    pct = _partial_rotary_factor(cfg)
    return dict(common, model_type="gpt_neox", hidden_act=hf_layout.NEOX_ACT,
                use_parallel_residual=cfg.parallel_residual, rotary_pct=pct, rotary_emb_base=theta,
                rope_parameters={"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": pct},
                hidden_dropout=0.0, classifier_dropout=0.0)
  return dict(common, model_type="llama", num_key_value_heads=cfg.kv_heads, head_dim=cfg.dim_per_head,
              hidden_act=hf_layout.GATED_ACT[cfg.mlp], rope_theta=theta,
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


def convert_params(params: Mapping[str, Any], cfg: ModelConfig) -> Dict[str, np.ndarray]:
  """Our `Transformer(cfg)` parameters (a nested dict of arrays) as {HF parameter name: float32 C-order array}, by
  `hf_layout.tensor_map` (zeros for the parts of an HF tensor our model lacks).

  Args:
    params: the `params` collection of `Transformer(cfg)`, either layout (`scan_layers` or not); jax or numpy
      arrays (or flax boxes).
    cfg: its shape.

  Returns:
    {HF name: np.float32 array}.

  Raises:
    ValueError: `cfg` is not exportable, or the parameters do not match it (missing, extra, or misshapen).
  """
  p = _Params(params, cfg)
  out: Dict[str, np.ndarray] = {}
  for m in hf_layout.tensor_map(cfg):
    xs = []
    for path, shape in zip(m.ours, m.shapes):
      if path is None:
        xs.append(np.zeros(shape, np.float32))
        continue
      x = p.get(path) if m.layer is None else p.layer(m.layer, path)
      if x.shape != shape:
        where = path if m.layer is None else f"layer {m.layer} {path}"
        raise ValueError(f"parameter {where}: shape {x.shape}, expected {shape} from the ModelConfig")
      xs.append(x)
    out[m.hf] = hf_layout.to_hf(m.layout, xs)
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


def _read(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


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
  from bliss_jax.data import hf_tokenizer, vocabulary  # pylint: disable=g-import-not-at-top
  from bliss_jax.training import checkpoints, model_vocabulary  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  cfg = ModelDir(model_dir).read_model_config()
  hf_layout.check_representable(cfg)
  vocab, record = model_vocabulary.vocabulary_for(model_dir, vocabulary_path)
  if record["kind"] == vocabulary.HF_TOKENIZER:  # an imported model's own tokenizer: its files, as they are
    tok_files = {name: _read(os.path.join(record["path"], name)) for name in hf_tokenizer.FILES
                 if os.path.isfile(os.path.join(record["path"], name))}
    n_ids, token_ids = vocab.vocab_size, hf_tokenizer.config_token_ids(vocab)
  else:
    tok_files, n_ids = tokenizer_files(None if record["path"] == vocabulary.DEFAULT else record["path"],
                                       extra_ids=record["extra_ids"], model_max_length=max_position_embeddings)
    token_ids = _TOKEN_IDS
  config = hf_config(cfg, max_position_embeddings=max_position_embeddings, token_ids=token_ids)
  if n_ids > cfg.vocab_size:
    raise ValueError(f"the vocabulary has {n_ids} ids but {model_dir}'s model only {cfg.vocab_size}: is "
                     f"{model_vocabulary.summary(record)} the one the run was trained with?")
  step, params = checkpoints.load_params(model_dir, step=step)
  tensors = convert_params(params, cfg)
  os.makedirs(out_dir, exist_ok=True)
  save_safetensors(tensors, os.path.join(out_dir, WEIGHTS_FILE), {"bliss_jax_step": str(step)})
  _write(os.path.join(out_dir, "config.json"), _json_bytes(config))
  _write(os.path.join(out_dir, "generation_config.json"), _json_bytes(token_ids))
  for name, data in tok_files.items():
    _write(os.path.join(out_dir, name), data)
  provenance = {"model_dir": os.path.abspath(model_dir), "step": int(step), "architecture": hf_layout.architecture(cfg),
                "model_config": as_record(cfg), "vocabulary": record, "vocabulary_ids": n_ids}
  _write(os.path.join(out_dir, PROVENANCE_FILE), _json_bytes(provenance))
  return out_dir
