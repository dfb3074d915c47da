"""A selection read back as a SeqIO task: the chosen examples of a base task, in score or original order.

The selected examples (already tokenized and chunked as the base task does for `sequence_length`, EOS included) are
materialised once in memory and served by a `seqio.FunctionDataSource`; `train` holds the selection (repeated
`epochs` times in order when not shuffled, for the data-limited multi-epoch setting), `validation` is the base task's
own validation split. Meant for tests and selections of a few million tokens held in host memory; the pipelines read
their selections from a chunk store of the base split instead (`selected_store_source`: the same batches as this
task's packed SeqIO stream, by index from disk, with O(1) records read at a resume).
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from bliss_jax.data.chunk_store import ChunkStore
from bliss_jax.data.pipeline import seqio_batch_source, task_feature_lengths
from bliss_jax.data.store_source import SEQIO_SHUFFLE_BUFFER, store_batch_source


def _split_key(key: str):
  doc_id, _, chunk = key.rpartition("#")
  return doc_id, int(chunk)


def selected_examples(base_task: str, split: str, keys: Sequence[str], sequence_length: int) -> List[Dict]:
  """The base task's examples whose "doc_id#chunk_index" is in `keys`, in the order of `keys`."""
  wanted = {_split_key(k): i for i, k in enumerate(keys)}
  if len(wanted) != len(keys):
    raise ValueError("duplicate keys in the selection")
  provider = seqio.get_mixture_or_task(base_task)
  ds = provider.get_dataset(task_feature_lengths(sequence_length), split=split, shuffle=False, num_epochs=1,
                            use_cached=False)
  found: List[Optional[Dict]] = [None] * len(keys)
  for ex in ds.as_numpy_iterator():
    k = (ex["doc_id"].decode(), int(ex.get("chunk_index", 0)))
    if k in wanted:
      found[wanted[k]] = {"targets": ex["targets"], "doc_id": k[0], "chunk_index": k[1]}
  missing = [keys[i] for i, f in enumerate(found) if f is None]
  if missing:
    raise ValueError(f"{len(missing)} selected key(s) are not in {base_task}:{split} at sequence_length="
                     f"{sequence_length}, e.g. {missing[:3]}")
  return found


def register_selected_task(name: str, base_task: str, keys: Sequence[str], *, sequence_length: int,
                           split: str = "train", epochs: int = 1) -> seqio.Task:
  """Register `name`: split `train` = the selected examples of `base_task:split` (× `epochs`), in `keys` order."""
  source_split = split
  examples = selected_examples(base_task, source_split, keys, sequence_length) * epochs
  base = seqio.get_mixture_or_task(base_task)
  targets = [np.asarray(e["targets"], np.int32) for e in examples]
  doc_ids = np.array([e["doc_id"] for e in examples], dtype=object)
  chunks = np.array([e["chunk_index"] for e in examples], np.int32)
  # flat values + row lengths: tf.ragged.constant walks the Python lists (minutes for ~10^4 rows)
  flat = np.concatenate(targets) if targets else np.zeros([0], np.int32)
  lengths = np.array([len(t) for t in targets], np.int64)

  def dataset_fn(split, shuffle_files, seed=None):
    if split == "validation":
      return base.get_dataset(task_feature_lengths(sequence_length), split="validation", shuffle=False,
                              num_epochs=1, use_cached=False).map(
                                  lambda x: {"targets": x["targets"], "doc_id": x["doc_id"],
                                             "chunk_index": tf.cast(x.get("chunk_index", 0), tf.int32)})
    ds = tf.data.Dataset.from_tensor_slices({
        "targets": tf.RaggedTensor.from_row_lengths(tf.constant(flat, tf.int32), tf.constant(lengths)),
        "doc_id": tf.constant(doc_ids.astype(str) if len(doc_ids) else np.zeros([0], str), tf.string),
        "chunk_index": tf.constant(chunks, tf.int32)}).map(dict)
    if shuffle_files and targets:
      ds = ds.shuffle(len(targets), seed=seed, reshuffle_each_iteration=True)
    return ds

  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(dataset_fn, splits=("train", "validation"), caching_permitted=False),
      preprocessors=[], output_features={"targets": base.output_features["targets"]},
      shuffle_buffer_size=SEQIO_SHUFFLE_BUFFER)  # the buffer `store_source`'s 'seqio' order reproduces


def selected_store_source(store_dir: str, keys: Sequence[str], *, batch_size: int, seed: int = 0,
                          shuffle: bool = True, pack: bool = True, order: str = "seqio", read_threads: int = 1,
                          store: Optional[ChunkStore] = None, eval_task: Optional[str] = None):
  """A trainer `BatchSource` whose `train` split is the chunks `keys` ("doc_id#chunk_index") of a chunk store
  (`data/chunk_store.py`) of the base task's split, and whose `validation` is `eval_task`'s (default: the base
  task's; `seqio_batch_source`, as `register_selected_task` has it).

  By default the batches are exactly those of `seqio_batch_source(register_selected_task(name, base, keys,
  sequence_length=L, split=...), batch_size=batch_size, sequence_length=L, seed=seed)` on one process: the same
  order (`order='seqio'`) and packing (`pack=True`), read by index from the store (`data/store_source.py`).
  Finding the keys reads the store's keys once per `store` object (pass one `ChunkStore` to share them); a
  selection made on the store's score columns is an index array already (`store_batch_source` takes it)."""
  store = store or ChunkStore(store_dir)
  validation = seqio_batch_source(eval_task or store.manifest["task"], batch_size=batch_size,
                                  sequence_length=store.manifest["sequence_length"], seed=seed)
  return store_batch_source(store_dir, batch_size=batch_size, indices=store.indices_of(keys), seed=seed,
                            shuffle=shuffle, pack=pack, order=order, eval_source=validation,
                            read_threads=read_threads, store=store)
