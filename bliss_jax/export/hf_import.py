"""Import of a Hugging Face `transformers` checkpoint directory (Llama, Qwen2 or GPT-NeoX) as a bliss_jax model.

`import_checkpoint(hf_dir)` reads `config.json` and the safetensors weights (`model.safetensors`, or the shards of
`model.safetensors.index.json`) and returns `(ModelConfig, params)`: the model that computes the same function as
`AutoModelForCausalLM.from_pretrained(hf_dir)` and its parameters in our tree (float32, unboxed). With a `mesh`, each
parameter is laid out on it by its logical axes as soon as it is read (`jax.make_array_from_callback`: every device
receives only its shard). `import_to_model_dir` writes an ordinary MODEL_DIR from it (model_config.json, a checkpoint
at step 0 holding the parameters, and the checkpoint's tokenizer recorded in vocabulary.json), which evaluation,
`TrainSpec.init_from` and every frozen-model slot accept; `scripts/import_hf.py` is its command line.

The correspondence (which class computes which shape, the config fields, every tensor's layout) is
`hf_layout`'s, shared with the export, read backwards here:

* `model_type` "llama" and "qwen2" (Qwen1.5 and Qwen2 checkpoints) -> RMSNorm, gated MLP (`hidden_act` "silu":
  swiglu, "gelu": geglu); "gpt_neox" (Pythia) -> LayerNorm, GELU MLP, `use_parallel_residual`, partial rotary
  (`rotary_pct` or `rope_parameters.partial_rotary_factor`; our `rotary_fraction` = HF's truncated rotary dims /
  head_dim). `head_dim` and `num_key_value_heads` become None when they equal the defaults (d_model / num_heads,
  num_heads). Rotary base from `rope_parameters.rope_theta` (transformers 5) or `rope_theta` / `rotary_emb_base`.
* Biases: our model has biases on every projection (`use_bias`), on q/k/v only (`qkv_bias`) or none. The import takes
  `use_bias` when any output-projection or MLP bias the HF class has is non-zero (biases it lacks, e.g. q/k/v ones
  when `attention_bias` is false, become zeros), else `qkv_bias` when it has q/k/v biases (Qwen2 always; Llama and
  GPT-NeoX with `attention_bias`), else none. All-zero biases thus import as no biases: the same function.
* `ModelConfig.dtype` is the `dtype` argument (the compute dtype); parameters are float32 whatever the checkpoint
  stores (bfloat16 and float16 convert exactly). `scan_layers=True` stacks the blocks on a leading axis.

Refused with a `ValueError` naming the field: a `model_type` other than those three; rotary scaling of any kind
(`rope_scaling`, `rope_parameters.rope_type` other than "default"); partial rotary in Llama/Qwen2; sliding-window
attention in use (`use_sliding_window`, `layer_types`); an activation other than exact GELU / SiLU (`hidden_act`);
`tie_word_embeddings` that disagrees with the tensors (tied, but an output head different from the embedding; or
untied without one); any config.json key this module does not know (it cannot tell whether the key changes the
function; `IGNORED_KEYS` lists the known ones that do not: ids, dropout, caching, initialisation, the advertised
context length). Tensors the config does not account for are refused too, except transformers' own non-parameter
buffers (`rotary_emb.inv_freq`, GPT-NeoX's `attention.bias` / `attention.masked_bias` masks).

The safetensors files are read by this module itself (an 8-byte header length, a JSON header of dtype, shape and
byte offsets, then raw little-endian data), one tensor at a time through `np.memmap`: `safetensors`' numpy reader
cannot return bfloat16, the dtype most released checkpoints use. Neither torch nor transformers is imported.
"""
import json
import logging
import os
import re
import shutil
import struct
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import ml_dtypes
import numpy as np

from bliss_jax.export import hf_layout
from bliss_jax.export.hf_layout import GPT_NEOX, LLAMA
from bliss_jax.models.config import ModelConfig, as_record

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_DIR = "tokenizer"  # MODEL_DIR/tokenizer/: the imported checkpoint's tokenizer files
PROVENANCE_FILE = "hf_import.json"  # MODEL_DIR/hf_import.json: where the model came from

MODEL_TYPES = {"llama": LLAMA, "qwen2": LLAMA, "gpt_neox": GPT_NEOX}

# config.json keys that do not change the function a checkpoint computes (token ids, dropout, caching,
# initialisation, the advertised context length, bookkeeping) or that are checked by name below.
IGNORED_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "initializer_range",
    "max_position_embeddings", "attention_dropout", "hidden_dropout", "classifier_dropout", "is_decoder",
    "tokenizer_class", "pretraining_tp", "output_attentions", "output_hidden_states", "return_dict",
    "gradient_checkpointing", "tie_encoder_decoder", "torchscript", "use_return_dict", "max_window_layers",
})
# Non-parameter buffers some checkpoints carry (transformers recomputes them).
_BUFFERS = re.compile(r"(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)$")

_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
           "BF16": np.dtype(ml_dtypes.bfloat16)}


def _unsupported(key: str, value: Any, why: str) -> ValueError:
  return ValueError(f"cannot import this Hugging Face checkpoint: config.json {key}={value!r}: {why}")


class SafetensorsCheckpoint:
  """The tensors of a checkpoint directory's safetensors file(s), read one at a time as float32 numpy arrays."""

  def __init__(self, hf_dir: str):
    index = os.path.join(hf_dir, WEIGHTS_INDEX_FILE)
    if os.path.isfile(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      files = sorted(set(weight_map.values()))
    elif os.path.isfile(os.path.join(hf_dir, WEIGHTS_FILE)):
      files = [WEIGHTS_FILE]
    else:
      others = sorted(n for n in os.listdir(hf_dir) if n.endswith((".bin", ".pt", ".pth", ".h5", ".msgpack")))
      raise FileNotFoundError(
          f"{hf_dir} has no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE}" +
          (f" (it has {others}: only safetensors weights are read; convert them, e.g. by loading the model with "
           "transformers and calling save_pretrained)" if others else ""))
    self._where: Dict[str, Tuple[str, int, Mapping[str, Any]]] = {}
    for name in files:
      path = os.path.join(hf_dir, name)
      with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
      header.pop("__metadata__", None)
      for tensor, info in header.items():
        self._where[tensor] = (path, 8 + n, info)

  def names(self) -> List[str]:
    return sorted(self._where)

  def rename(self, name: str, new_name: str) -> None:
    """Read tensor `name` as `new_name` from now on."""
    self._where[new_name] = self._where.pop(name)

  def __contains__(self, name: str) -> bool:
    return name in self._where

  def shape(self, name: str) -> Tuple[int, ...]:
    return tuple(self._where[name][2]["shape"])

  def read(self, name: str) -> np.ndarray:
    """The tensor `name` as a float32 array (exact for float16 / bfloat16)."""
    path, start, info = self._where[name]
    dtype = _DTYPES.get(info["dtype"])
    if dtype is None:
      raise ValueError(f"tensor {name} in {path} has dtype {info['dtype']}; only floating-point tensors "
                       f"({', '.join(_DTYPES)}) are read")
    shape = tuple(info["shape"])
    begin, end = info["data_offsets"]
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
      raise ValueError(f"tensor {name} in {path}: {end - begin} bytes for shape {shape} of {info['dtype']}")
    if not shape or end == begin:
      with open(path, "rb") as f:
        f.seek(start + begin)
        return np.frombuffer(f.read(end - begin), dtype).reshape(shape).astype(np.float32)
    return np.array(np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape), dtype=np.float32)


def read_config(hf_dir: str) -> Dict[str, Any]:
  path = os.path.join(hf_dir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {hf_dir} a Hugging Face model directory?")
  with open(path) as f:
    return json.load(f)


def _rope(config: Mapping[str, Any], arch: str) -> Tuple[float, float]:
  """(theta, partial rotary factor), refusing rotary scaling."""
  params = config.get("rope_parameters") or {}
  scaling = config.get("rope_scaling")
  if scaling:
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in (None, "default"):
      raise _unsupported("rope_scaling", scaling, f"rotary scaling {kind!r} is not implemented (bliss_jax has plain "
                         "RoPE only)")
  kind = params.get("rope_type", params.get("type", "default"))
  if kind != "default":
    raise _unsupported("rope_parameters.rope_type", kind, "only the default (unscaled) RoPE is implemented")
  legacy_theta = config.get("rotary_emb_base" if arch == GPT_NEOX else "rope_theta", 10_000.0)
  theta = float(params.get("rope_theta", legacy_theta))
  legacy_factor = config.get("rotary_pct", 0.25) if arch == GPT_NEOX else config.get("partial_rotary_factor", 1.0)
  return theta, float(params.get("partial_rotary_factor", legacy_factor))


def _check_keys(config: Mapping[str, Any], handled: Tuple[str, ...]) -> None:
  unknown = sorted(set(config) - IGNORED_KEYS - set(handled))
  if unknown:
    raise _unsupported(unknown[0], config[unknown[0]],
                       f"this key is unknown to bliss_jax.export.hf_import, which cannot tell whether it changes the "
                       f"function (unknown keys: {unknown}); extend the import (and its tests) first")


def _check_no_sliding_window(config: Mapping[str, Any], num_layers: int) -> None:
  layer_types = config.get("layer_types")
  if layer_types and any(t != "full_attention" for t in layer_types):
    raise _unsupported("layer_types", layer_types, "sliding-window attention is not implemented")
  if config.get("use_sliding_window") and config.get("sliding_window") is not None and not layer_types:
    if config.get("max_window_layers", 0) < num_layers:
      raise _unsupported("use_sliding_window", True, f"sliding-window attention (window {config['sliding_window']} "
                         f"from layer {config.get('max_window_layers', 0)} on) is not implemented")


_LLAMA_KEYS = ("hidden_act", "num_key_value_heads", "head_dim", "rope_theta", "rope_parameters", "rope_scaling",
               "partial_rotary_factor", "attention_bias", "mlp_bias", "layer_types", "use_sliding_window",
               "sliding_window")
_NEOX_KEYS = ("hidden_act", "use_parallel_residual", "rotary_pct", "rotary_emb_base", "rope_parameters",
              "rope_scaling", "attention_bias")


def hf_biases(config: Mapping[str, Any]) -> Dict[str, bool]:
  """Which biases the HF class of `config` has: {"qkv", "out", "mlp"}."""
  model_type = config.get("model_type")
  if model_type == "qwen2":
    return {"qkv": True, "out": False, "mlp": False}
  if model_type == "gpt_neox":
    attn = bool(config.get("attention_bias", True))
    return {"qkv": attn, "out": attn, "mlp": True}
  attn = bool(config.get("attention_bias", False))
  return {"qkv": attn, "out": attn, "mlp": bool(config.get("mlp_bias", False))}


_BIAS_KIND = (("query_key_value.bias", "qkv"), ("q_proj.bias", "qkv"), ("k_proj.bias", "qkv"),
              ("v_proj.bias", "qkv"), ("o_proj.bias", "out"), ("attention.dense.bias", "out"), ("mlp.", "mlp"))


def _bias_kind(hf_name: str) -> Optional[str]:
  if not hf_name.endswith(".bias") or "layernorm" in hf_name or "layer_norm" in hf_name:
    return None
  return next((kind for pattern, kind in _BIAS_KIND if pattern in hf_name), None)


def model_config(config: Mapping[str, Any], checkpoint: SafetensorsCheckpoint, *, dtype: str = "float32",
                 scan_layers: bool = False) -> ModelConfig:
  """The `ModelConfig` whose model computes what `config` (a config.json dict) computes with `checkpoint`'s tensors.

  See the module docstring for the mapping and what is refused. The tensors are consulted for the biases only.
  """
  model_type = config.get("model_type")
  if model_type not in MODEL_TYPES:
    raise _unsupported("model_type", model_type, f"only {sorted(MODEL_TYPES)} checkpoints are imported")
  arch = MODEL_TYPES[model_type]
  _check_keys(config, tuple(hf_layout.direct_key(field, arch) for field, _, _ in hf_layout.DIRECT_FIELDS) +
              (_NEOX_KEYS if arch == GPT_NEOX else _LLAMA_KEYS))
  defaults = {"norm_eps": 1e-5 if arch == GPT_NEOX else 1e-6, "tie_embeddings": False}
  fields = {}
  for field, _, _ in hf_layout.DIRECT_FIELDS:
    key = hf_layout.direct_key(field, arch)
    if key not in config and field not in defaults:
      raise _unsupported(key, None, "missing: the model's shape needs it")
    fields[field] = config.get(key, defaults.get(field))
  h, d = fields["num_heads"], fields["d_model"]
  theta, factor = _rope(config, arch)
  act = config.get("hidden_act", hf_layout.NEOX_ACT if arch == GPT_NEOX else "silu")
  if arch == GPT_NEOX:
    if act != hf_layout.NEOX_ACT:
      raise _unsupported("hidden_act", act, "GPT-NeoX models are imported with the exact (erf) GELU only")
    head_dim = d // h
    fields.update(norm="layernorm", mlp="gelu", parallel_residual=bool(config.get("use_parallel_residual", True)),
                  rotary_fraction=int(head_dim * factor) / head_dim)  # HF's rotary dims: int(head_dim * factor)
  else:
    mlp = {v: k for k, v in hf_layout.GATED_ACT.items()}.get(act)
    if mlp is None:
      raise _unsupported("hidden_act", act, f"gated MLPs with {sorted(hf_layout.GATED_ACT.values())} only")
    if factor != 1.0:
      raise _unsupported("rope_parameters.partial_rotary_factor", factor, f"{model_type} rotates every head dim here")
    _check_no_sliding_window(config, fields["num_layers"])
    kv = config.get("num_key_value_heads") or h
    head_dim = config.get("head_dim") or d // h
    fields.update(norm="rmsnorm", mlp=mlp, num_kv_heads=None if kv == h else kv,
                  head_dim=None if head_dim == d // h else head_dim)
  has = hf_biases(config)
  nonzero_out = any(_bias_kind(n) in ("out", "mlp") and has[_bias_kind(n)] and np.any(checkpoint.read(n))
                    for n in checkpoint.names() if _bias_kind(n))
  fields.update(rope_theta=theta, use_bias=nonzero_out, qkv_bias=has["qkv"] and not nonzero_out, dtype=dtype,
                scan_layers=scan_layers)
  cfg = ModelConfig(**fields)
  if hf_layout.architecture(cfg) != arch:
    raise AssertionError(f"{model_type} imported as {hf_layout.architecture(cfg)}")
  hf_layout.check_representable(cfg)
  return cfg


def _groups(maps: List[hf_layout.TensorMap]) -> Iterator[List[hf_layout.TensorMap]]:
  """The maps grouped by the parameters they hold (a per-layer parameter's maps together, in layer order)."""
  groups: Dict[Tuple, List[hf_layout.TensorMap]] = {}
  for m in maps:
    groups.setdefault((m.layer is None,) + m.ours, []).append(m)
  return iter(groups.values())


def _parts(checkpoint: SafetensorsCheckpoint, m: hf_layout.TensorMap, has: Mapping[str, bool]) -> List[np.ndarray]:
  """Our parameters held in `m`'s HF tensor (zeros where the HF class has no such bias); refuses non-zero parts our
  model lacks."""
  kind = _bias_kind(m.hf)
  if kind is not None and not has[kind]:
    return [np.zeros(s, np.float32) for s in m.shapes]
  if m.hf not in checkpoint:
    if m.ours == ("lm_head/kernel",):
      raise _unsupported("tie_word_embeddings", False, f"the checkpoint has no output head ({m.hf}); is the model "
                         "tied?")
    raise ValueError(f"tensor {m.hf} missing from the checkpoint (the config implies it)")
  x = checkpoint.read(m.hf)
  want = hf_layout.hf_shape(m)
  if x.shape != want:
    raise ValueError(f"tensor {m.hf}: shape {x.shape}, expected {want} from config.json")
  parts = hf_layout.from_hf(m.layout, x, m.shapes)
  for path, part in zip(m.ours, parts):
    if path is None and np.any(part):
      raise AssertionError(f"{m.hf} has non-zero values where the imported model has no parameter")
  return parts


def _placer(cfg: ModelConfig, mesh, rules) -> Callable[[str, np.ndarray], Any]:
  """(path, host array) -> the array to keep: itself without a mesh, else laid out on `mesh` by its logical axes."""
  if mesh is None:
    return lambda path, x: x
  import jax  # pylint: disable=g-import-not-at-top
  from bliss_jax import partitioning  # pylint: disable=g-import-not-at-top
  from bliss_jax.training import trainer  # pylint: disable=g-import-not-at-top
  abstract = trainer.abstract_params(cfg, mesh, rules if rules is not None else partitioning.logical_rules())
  shardings = {"/".join(str(getattr(k, "key", k)) for k in path): a.sharding
               for path, a in jax.tree_util.tree_flatten_with_path(abstract)[0]}

  def place(path, x):
    return jax.make_array_from_callback(x.shape, shardings[path], lambda index: x[index])
  return place


def _unflatten(flat: Mapping[str, Any]) -> Dict[str, Any]:
  tree: Dict[str, Any] = {}
  for path, x in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = x
  return tree


def import_checkpoint(hf_dir: str, dtype: str = "float32", *, scan_layers: bool = False, mesh=None, rules=None
                     ) -> Tuple[ModelConfig, Dict[str, Any]]:
  """(ModelConfig, params) of a Hugging Face checkpoint directory (module docstring).

  Args:
    hf_dir: a local directory with config.json and model.safetensors (or model.safetensors.index.json and shards).
    dtype: the imported model's compute dtype (`ModelConfig.dtype`: "float32" or "bfloat16"); parameters are
      float32 either way.
    scan_layers: stack the blocks' parameters on a leading layer axis (`ModelConfig.scan_layers`).
    mesh: lay each parameter out on this mesh as soon as it is read, by its logical axes under `rules` (default
      `partitioning.logical_rules()`); without one, parameters are host numpy arrays.
    rules: logical-axis rules for `mesh`, e.g. `partitioning.logical_rules(fsdp=True)`.

  Returns:
    (cfg, params): `Transformer(cfg).apply({"params": params}, tokens)` are the HF model's logits.

  Raises:
    FileNotFoundError: no config.json or no safetensors weights.
    ValueError: an unsupported config field (named) or tensors that do not match the config.
  """
  config = read_config(hf_dir)
  checkpoint = SafetensorsCheckpoint(hf_dir)
  cfg = model_config(config, checkpoint, dtype=dtype, scan_layers=scan_layers)
  if hf_layout.head_name(cfg) not in checkpoint and "lm_head.weight" in checkpoint:
    checkpoint.rename("lm_head.weight", hf_layout.head_name(cfg))  # GPT-NeoX saved under transformers' new name
  has = hf_biases(config)
  place = _placer(cfg, mesh, rules)
  maps = hf_layout.tensor_map(cfg)
  flat: Dict[str, Any] = {}
  for group in _groups(maps):
    per_layer = [_parts(checkpoint, m, has) for m in group]
    for j, path in enumerate(group[0].ours):
      if path is None:
        continue
      if group[0].layer is None:
        flat[path] = place(path, per_layer[0][j])
      elif scan_layers:
        flat[f"layers/block/{path}"] = place(f"layers/block/{path}", np.stack([p[j] for p in per_layer]))
      else:
        for m, parts in zip(group, per_layer):
          flat[f"layer_{m.layer}/{path}"] = place(f"layer_{m.layer}/{path}", parts[j])
    del per_layer
  _check_rest(checkpoint, maps, cfg)
  return cfg, _unflatten(flat)


def _check_rest(checkpoint: SafetensorsCheckpoint, maps: List[hf_layout.TensorMap], cfg: ModelConfig) -> None:
  """Refuse tensors nothing accounts for; a tied model's stored head must equal its embedding."""
  used = {m.hf for m in maps}
  rest = [n for n in checkpoint.names() if n not in used and not _BUFFERS.search(n)]
  if not cfg.tie_embeddings:
    return _refuse_rest(rest)
  embedding = checkpoint.read(maps[0].hf)  # the first map is the embedding's
  for name in [n for n in rest if n in ("lm_head.weight", "embed_out.weight")]:
    if not np.array_equal(checkpoint.read(name), embedding):
      raise _unsupported("tie_word_embeddings", True, f"the checkpoint's output head {name} differs from its input "
                         "embedding, so the model is not tied")
    rest.remove(name)
  return _refuse_rest(rest)


def _refuse_rest(rest: List[str]) -> None:
  if rest:
    raise ValueError(f"tensors the config does not account for (tie_word_embeddings / attention_bias / mlp_bias "
                     f"false while the checkpoint has them?): {rest[:8]}{'...' if len(rest) > 8 else ''}")


def import_to_model_dir(hf_dir: str, model_dir: str, dtype: str = "float32", *, scan_layers: bool = False,
                        mesh=None, rules=None) -> str:
  """Writes the checkpoint of `hf_dir` as a new bliss_jax MODEL_DIR; returns `model_dir`.

  MODEL_DIR gets what a training run leaves (`training.model_dir.ModelDir`): model_config.json, checkpoints/0/ (the
  parameters, in the Orbax layout training writes, without optimizer state), and, when `hf_dir` has a tokenizer, its
  files in MODEL_DIR/tokenizer/ recorded in vocabulary.json (kind "hf_tokenizer", `data.hf_tokenizer`); plus
  hf_import.json (the source directory and its config.json). Everything is written under `model_dir`.tmp and renamed
  into place, so a killed import leaves no MODEL_DIR behind.

  Args:
    hf_dir, dtype, scan_layers: as `import_checkpoint`.
    model_dir: the MODEL_DIR to create; it must not exist (or be empty).
    mesh, rules: where the parameters are laid out while they are written (default: FSDP over every device, so no
      device holds more than its share).

  Raises:
    FileExistsError: `model_dir` exists and is not empty.
    ValueError: `import_checkpoint`'s refusals, or a tokenizer with more ids than the model's embedding.
  """
  from bliss_jax import partitioning  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import hf_tokenizer, vocabulary  # pylint: disable=g-import-not-at-top  (TensorFlow)
  from bliss_jax.training import checkpoints, run_config  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  model_dir = os.path.abspath(model_dir)
  if os.path.isdir(model_dir) and os.listdir(model_dir) or os.path.isfile(model_dir):
    raise FileExistsError(f"{model_dir} exists and is not empty: import into a new MODEL_DIR (an import never "
                          "replaces a model)")
  tmp = model_dir + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  run = ModelDir(tmp)
  os.makedirs(run.path)
  record = None
  if hf_tokenizer.has_tokenizer(hf_dir):
    tokenizer_dir = run.file(TOKENIZER_DIR)
    os.makedirs(tokenizer_dir)
    for name in hf_tokenizer.FILES:
      if os.path.isfile(os.path.join(hf_dir, name)):
        shutil.copy(os.path.join(hf_dir, name), os.path.join(tokenizer_dir, name))
  else:
    logging.warning("%s has no tokenizer (tokenizer.model or tokenizer.json): %s records no vocabulary, so tools "
                    "cannot check the ids they give it", hf_dir, model_dir)
  if mesh is None:
    mesh, rules = partitioning.make_mesh(), partitioning.logical_rules(fsdp=True)
  with partitioning.mesh_context(mesh, rules if rules is not None else partitioning.logical_rules()):
    cfg, params = import_checkpoint(hf_dir, dtype, scan_layers=scan_layers, mesh=mesh, rules=rules)
  if hf_tokenizer.has_tokenizer(hf_dir):
    # Recorded at its final place, which the record names.
    vocab = hf_tokenizer.load_tokenizer(run.file(TOKENIZER_DIR))
    if vocab.vocab_size > cfg.vocab_size:
      shutil.rmtree(tmp, ignore_errors=True)
      raise ValueError(f"the tokenizer of {hf_dir} has {vocab.vocab_size} ids but the model only {cfg.vocab_size} "
                       "embedding rows: do they belong together?")
    record = dict(vocabulary.vocabulary_record(vocab), path=os.path.join(model_dir, TOKENIZER_DIR))
  run.write_model_config(cfg)
  if record is not None:
    run.write_vocabulary(record)
  run_config.write_json(run.file(PROVENANCE_FILE), {"hf_dir": os.path.abspath(hf_dir),
                                                     "config": read_config(hf_dir),
                                                     "model_config": as_record(cfg)})
  manager = checkpoints.make_manager(run.path)
  checkpoints.save(manager, 0, {"params": params}, {"position": 0}, force=True)
  manager.close()
  if os.path.isdir(model_dir):
    os.rmdir(model_dir)
  os.replace(tmp, model_dir)
  return model_dir
