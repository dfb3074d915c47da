"""The chunk store: a SeqIO task's split materialised once, as the examples training sees, in ArrayRecord shards.

The examples are the task's own output at ``sequence_length`` (read unshuffled, before any feature converter): the
chunks ``seqio_tasks.split_tokens`` cut, EOS included, with their ``doc_id``, ``chunk_index``, ``chunk_start``,
``chunk_end`` and any other scalar features, plus ``source``, the name of the task the example came from. Random
preprocessing (a prefix-LM split point) is frozen at the store's ``seed``.

Layout of a store directory:
  manifest.json                 {"format": "bliss_jax.chunks/2", "task", "split", "sequence_length",
                                 "task_feature_lengths", "vocabulary" (``vocabulary.vocabulary_record``), "seed",
                                 "shards": [[task, source shard, of]], "complete": bool, and when complete
                                 "num_records", "num_tokens", "records_per_shard", "features"}
  chunks-{SSSSS}.array_record   shard k: the examples of ``shards[k]``, i.e. shard ``s`` of ``n`` of one task's
                                source (``seqio.ShardInfo(s, n)``: every n-th document), in the task's order; one
                                serialized ``tf.train.Example`` per record, written with ``group_size:1`` (random
                                access)
  chunks-{SSSSS}.json           its record and token counts and feature kinds, written before the shard
  chunks-{SSSSS}.lengths.npy    int32, per record: the tokens of its targets that packing keeps
                                (``packing.kept_tokens``), so packed rows are planned without reading records
The global index of a chunk is its position in shard 0, then shard 1, ...; scores (``selection.score_columns``) and
selections are arrays over these indices. A mixture is stored task by task (each task's shards in the mixture's task
order, ``source`` naming the task); the mixture's rates apply when its candidate pool is drawn
(``pipelines.common.pool_keys``), not here.

Writing is resumable by shard: a shard is written to a temporary name and renamed when finished, so a finished shard
is never rewritten and a killed write redoes only the shard it was in. Processes split the shards (shard k goes to
process k mod process_count); whoever finds every shard finished writes the complete manifest. Reusing a directory
for another task, split, sequence length, vocabulary, seed or sharding is refused with the difference named.
"""
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf
from array_record.python import array_record_data_source, array_record_module

from bliss_jax.data.chunk_manifest import (FORMAT, atomic_json, check_identity, count_path, finished_shards,
                                           lengths_path, read_json, read_manifest, shard_path)
from bliss_jax.data.packing import kept_tokens
from bliss_jax.data.pipeline import decoder_ids, task_feature_lengths
from bliss_jax.data.vocabulary import vocabulary_record

TOKENS, INT, BYTES = "tokens", "int", "bytes"  # feature kinds: int vector, int scalar, string scalar


def feature_kind(value: np.ndarray) -> str:
  value = np.asarray(value)
  if value.dtype.kind in "SUO":
    return BYTES
  if value.dtype.kind not in "iub" or value.ndim > 1:
    raise ValueError(f"cannot store a feature of dtype {value.dtype} and shape {value.shape}")
  return TOKENS if value.ndim == 1 else INT


def encode_example(example: Dict[str, Any], kinds: Dict[str, str]) -> bytes:
  """One example as a serialized ``tf.train.Example`` (ints as int64 lists, strings as bytes)."""
  feature = {}
  for name, kind in kinds.items():
    value = example[name]
    if kind == BYTES:
      value = value if isinstance(value, bytes) else str(value).encode()
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    else:
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=np.atleast_1d(value).tolist()))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode_example(record: bytes, kinds: Dict[str, str]) -> Dict[str, Any]:
  """``encode_example``'s inverse: token features as int32 arrays, ints as Python ints, strings as str."""
  features = tf.train.Example.FromString(record).features.feature
  out = {}
  for name, kind in kinds.items():
    f = features[name]
    if kind == BYTES:
      out[name] = f.bytes_list.value[0].decode()
    elif kind == INT:
      out[name] = int(f.int64_list.value[0])
    else:
      out[name] = np.asarray(f.int64_list.value, np.int32)
  return out


def _tasks(name: str) -> List[seqio.Task]:
  provider = seqio.get_mixture_or_task(name)
  return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def store_identity(task: str, split: str, sequence_length: int, *, feature_converter: str = "decoder",
                   num_shards: int = 8, seed: int = 0) -> Dict[str, Any]:
  """What a store of ``task:split`` holds; a directory holding another store is refused (``check_identity``)."""
  tasks = _tasks(task)
  return {"task": task, "split": split, "sequence_length": int(sequence_length),
          "task_feature_lengths": task_feature_lengths(sequence_length, feature_converter),
          "vocabulary": vocabulary_record(tasks[0].output_features["targets"].vocabulary), "seed": int(seed),
          "shards": [[t.name, s, num_shards] for t in tasks for s in range(num_shards)]}


def shard_examples(identity: Dict[str, Any], shard: int) -> Iterator[Dict[str, Any]]:
  """The examples of shard ``shard`` of a store, as the task yields them, each with its ``source``."""
  task, index, of = identity["shards"][shard]
  ds = seqio.get_mixture_or_task(task).get_dataset(
      identity["task_feature_lengths"], split=identity["split"], shuffle=False, num_epochs=1, use_cached=False,
      seed=identity["seed"], shard_info=seqio.ShardInfo(index=index, num_shards=of))
  for example in ds.as_numpy_iterator():
    yield dict(example, source=task)


def write_shard(store_dir: str, identity: Dict[str, Any], shard: int) -> Dict[str, Any]:
  """Writes shard ``shard`` (to a temporary file, renamed when finished); returns its counts and feature kinds."""
  path = shard_path(store_dir, shard)
  tmp = path + ".tmp"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  kinds: Optional[Dict[str, str]] = None
  records = tokens = 0
  row_length = identity["task_feature_lengths"]["targets"]
  shift = decoder_ids(seqio.get_mixture_or_task(identity["shards"][shard][0]).output_features["targets"]
                      .vocabulary).shift
  lengths = []
  try:
    for example in shard_examples(identity, shard):
      if kinds is None:
        kinds = {k: feature_kind(v) for k, v in sorted(example.items())}
      elif set(example) != set(kinds):
        raise ValueError(f"shard {shard}: an example has features {sorted(example)}, the first had {sorted(kinds)}")
      writer.write(encode_example(example, kinds))
      lengths.append(len(kept_tokens(example["targets"], row_length, shift)))
      records += 1
      tokens += sum(len(example[k]) for k, kind in kinds.items() if kind == TOKENS)
  finally:
    writer.close()
  counts = {"num_records": records, "num_tokens": tokens, "features": kinds or {}}
  atomic_json(count_path(store_dir, shard), counts)
  with open(lengths_path(store_dir, shard) + ".tmp", "wb") as f:
    np.save(f, np.asarray(lengths, np.int32))
  os.replace(lengths_path(store_dir, shard) + ".tmp", lengths_path(store_dir, shard))
  os.replace(tmp, path)
  return counts


def write_chunk_store(store_dir: str, task: str, split: str, sequence_length: int, *,
                      feature_converter: str = "decoder", num_shards: int = 8, seed: int = 0,
                      process_index: int = 0, process_count: int = 1) -> Dict[str, Any]:
  """Materialises ``task:split`` at ``sequence_length`` in ``store_dir`` (see the module docstring); this process
  writes its unfinished shards. Returns the manifest (``complete`` once every process's shards are finished)."""
  identity = store_identity(task, split, sequence_length, feature_converter=feature_converter,
                            num_shards=num_shards, seed=seed)
  os.makedirs(store_dir, exist_ok=True)
  try:
    manifest = read_manifest(store_dir)
    check_identity(store_dir, manifest, identity)
  except FileNotFoundError:
    manifest = {"format": FORMAT, **identity, "complete": False}
    if process_index == 0:
      atomic_json(os.path.join(store_dir, "manifest.json"), manifest)
  if manifest.get("complete"):
    return manifest
  total = len(identity["shards"])
  done = set(finished_shards(store_dir, total))
  for shard in range(process_index, total, process_count):
    if shard not in done:
      write_shard(store_dir, identity, shard)
  if len(finished_shards(store_dir, total)) < total:
    return manifest
  return _complete(store_dir, identity)


def _complete(store_dir: str, identity: Dict[str, Any]) -> Dict[str, Any]:
  counts = [read_json(count_path(store_dir, k)) for k in range(len(identity["shards"]))]
  features: Dict[str, str] = {}
  for c in counts:
    for name, kind in c["features"].items():
      if features.setdefault(name, kind) != kind:
        raise ValueError(f"feature {name!r} is {features[name]} in one shard and {kind} in another")
  manifest = {"format": FORMAT, **identity, "complete": True, "features": features,
              "records_per_shard": [c["num_records"] for c in counts],
              "num_records": sum(c["num_records"] for c in counts), "num_tokens": sum(c["num_tokens"] for c in counts)}
  atomic_json(os.path.join(store_dir, "manifest.json"), manifest)
  return manifest


class ChunkStore:
  """A complete chunk store read by global chunk index: ``store[i]`` is chunk i's features (``decode_example``).

  ``records_read`` counts the records read so far (for checking that a resume reads O(1) records); ``lengths``
  reads the shards' length files, not records.
  """

  def __init__(self, store_dir: str):
    self.manifest = read_manifest(store_dir)
    if not self.manifest.get("complete"):
      raise ValueError(f"chunk store {store_dir} is incomplete (its write was interrupted; rerun it to finish)")
    self.store_dir = store_dir
    self.features: Dict[str, str] = self.manifest["features"]
    files = [f"{shard_path(store_dir, k)}[0:{n}]" for k, n in enumerate(self.manifest["records_per_shard"]) if n]
    self._source = array_record_data_source.ArrayRecordDataSource(files) if files else None
    self._offsets = np.cumsum([0] + self.manifest["records_per_shard"])
    self._lengths = [np.load(lengths_path(store_dir, k), mmap_mode="r")
                     for k in range(len(self.manifest["records_per_shard"]))]
    self._key_index: Optional[Dict[str, int]] = None
    self.records_read = 0

  def __len__(self) -> int:
    return int(self.manifest["num_records"])

  def check_holds(self, task: str, split: str, sequence_length: int) -> None:
    """Refuse (ValueError) unless these are the chunks of ``task:split`` at ``sequence_length``."""
    m = self.manifest
    if (m["task"], m["split"], m["sequence_length"]) != (task, split, sequence_length):
      raise ValueError(f"chunk store {self.store_dir} holds {m['task']}:{m['split']} at {m['sequence_length']} "
                       f"tokens, not {task}:{split} at {sequence_length}")

  def __getitem__(self, index: int) -> Dict[str, Any]:
    return self.read([index])[0]

  def read(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
    """The chunks at ``indices`` (global chunk indices), in that order."""
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < len(self)]
    if bad:
      raise IndexError(f"chunk index {bad[0]} outside [0, {len(self)}) of {self.store_dir}")
    if not indices:
      return []
    self.records_read += len(indices)
    return [decode_example(r, self.features) for r in self._source.__getitems__(indices)]

  def lengths(self, indices: np.ndarray) -> np.ndarray:
    """The kept target lengths (``packing.kept_tokens``) of the chunks at ``indices``, from the length files."""
    indices = np.asarray(indices, np.int64)
    shards = np.searchsorted(self._offsets, indices, side="right") - 1
    out = np.zeros(len(indices), np.int32)
    for k in np.unique(shards):
      rows = shards == k
      out[rows] = self._lengths[k][indices[rows] - self._offsets[k]]
    return out

  def keys(self, batch: int = 4096) -> List[str]:
    """Every chunk's key ``doc_id#chunk_index`` (``chunk_index`` 0 where a task has none), in index order."""
    if "doc_id" not in self.features:
      raise ValueError(f"the chunks of {self.store_dir} have no 'doc_id': the task has no keys")
    out = []
    for start in range(0, len(self), batch):
      out.extend(f"{x['doc_id']}#{x.get('chunk_index', 0)}" for x in self.read(range(start, min(start + batch,
                                                                                               len(self)))))
    return out

  def indices_of(self, keys: Sequence[str]) -> np.ndarray:
    """The global indices of the chunks named by ``keys`` (``doc_id#chunk_index``), in the order of ``keys`` (the
    store's keys are read on the first call only)."""
    if self._key_index is None:
      self._key_index = {k: i for i, k in enumerate(self.keys())}
    position = self._key_index
    missing = [k for k in keys if k not in position]
    if missing:
      raise ValueError(f"{len(missing)} key(s) are not in chunk store {self.store_dir}, e.g. {missing[:3]}")
    return np.asarray([position[k] for k in keys], np.int64)

