"""A training source over a chunk store: a selection's chunks (an index array) in a seeded global order, via Grain.

Batch ``b`` of the global stream holds the rows ``b * B ... (b + 1) * B - 1`` of the order (``B`` the global batch
size); process ``p`` of ``P`` reads its contiguous ``B / P`` of them, so the processes' rows are disjoint and, put
side by side in process order, are the single-process batch. Row ``g`` of the order is selection position
``shuffle(g)``: Grain's index shuffle (a seeded bijection of each epoch, reseeded with ``seed + epoch``), computed
for ``g`` alone, so no earlier row is read to know it. Batch ``position`` is therefore read directly: the iterator
state is the batch position the trainer already checkpoints, and resuming at any step reads only the records of
the batches it yields (plus Grain's prefetch), O(1) in the position.

Every chunk is one row (chunks are cut at the sequence length already), in the unpacked decoder format of
``pipeline.get_dataset(..., pack=False)``: ``decoder_target_tokens`` (the chunk, zero-padded),
``decoder_input_tokens`` (shifted right, 0 first), ``decoder_loss_weights`` and ``decoder_segment_ids`` (1 on
tokens), ``decoder_positions`` (0, 1, ... on tokens). Short chunks (a document's last) are padded, not packed.
"""
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import grain
import numpy as np
import seqio

from bliss_jax.data.chunk_store import ChunkStore
from bliss_jax.data.pipeline import Batch, BatchIterator, task_feature_lengths


def decoder_features(examples: Sequence[Dict[str, Any]], sequence_length: int, rows: int) -> Batch:
  """Unpacked decoder features of ``examples`` (each one row), padded with all-zero rows to ``rows`` rows."""
  targets = np.zeros((rows, sequence_length), np.int32)
  for r, x in enumerate(examples):
    t = x["targets"]
    if len(t) > sequence_length:
      raise ValueError(f"a chunk of {len(t)} tokens does not fit a row of {sequence_length}")
    targets[r, :len(t)] = t
  inputs = np.zeros_like(targets)
  inputs[:, 1:] = targets[:, :-1]
  on_token = (targets != 0).astype(np.int32)
  return {"decoder_target_tokens": targets, "decoder_input_tokens": inputs, "decoder_loss_weights": on_token,
          "decoder_segment_ids": on_token.copy(),
          "decoder_positions": np.arange(sequence_length, dtype=np.int32)[None] * on_token}


def global_order(num_selected: int, *, seed: int, shuffle: bool, repeat: bool) -> grain.MapDataset:
  """Selection positions row by row: a seeded shuffle of each epoch (or the selection's order), forever or once."""
  order = grain.MapDataset.range(num_selected)
  if shuffle:
    order = order.shuffle(seed=seed)
  return order.repeat() if repeat else order


def process_batches(store: ChunkStore, indices: np.ndarray, *, batch_size: int, seed: int, shuffle: bool,
                    repeat: bool, process_index: int, process_count: int) -> grain.MapDataset:
  """This process's batches as a Grain ``MapDataset``: element ``b`` is its rows of global batch ``b``."""
  if batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}")
  rows = batch_size // process_count
  length = store.manifest["sequence_length"]
  mine = slice(process_index * rows, (process_index + 1) * rows)
  order = global_order(len(indices), seed=seed, shuffle=shuffle, repeat=repeat)
  return (order.map(lambda position: indices[position])
          .batch(batch_size, drop_remainder=repeat)
          .map(lambda chunks: decoder_features(store.read(chunks[mine]), length, rows)))


class StoreBatchIterator(BatchIterator):
  """`pipeline.BatchIterator`'s contract over Grain: batches ``start_position``, ``start_position + 1``, ... of
  ``batches`` (a ``MapDataset``, sliced lazily, so starting late reads nothing before), ``position`` counting them."""

  def __init__(self, batches: grain.MapDataset, start_position: int = 0, *, read_threads: int = 1,
               prefetch: int = 2):  # pylint: disable=super-init-not-called  (no tf.data dataset to skip through)
    if start_position < 0:
      raise ValueError(f"start_position must be >= 0, got {start_position}")
    self.position = start_position
    options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch if read_threads else 0)
    self._iterator = iter(batches[start_position:].to_iter_dataset(options))


def store_batch_source(store_dir: str, *, batch_size: int, indices: Optional[Sequence[int]] = None, seed: int = 0,
                       shuffle: bool = True, eval_source: Optional[Callable[..., Iterator[Batch]]] = None,
                       read_threads: int = 1, prefetch: int = 2) -> Callable[..., StoreBatchIterator]:
  """A ``trainer.BatchSource`` whose ``train`` split is the chunks ``indices`` (all when None) of a chunk store.

  ``batch_size`` is global. ``train`` reads the selection in a global order shuffled with ``seed`` (reshuffled every
  epoch; in the order of ``indices`` without ``shuffle``), repeating unless ``repeat=False`` (one pass, the last
  batch padded with all-zero rows). Other splits come from ``eval_source`` (e.g. ``pipeline.seqio_batch_source``
  of the base task), or are refused. The store must have been written for the ``decoder`` feature converter.
  """
  store = ChunkStore(store_dir)
  length = store.manifest["sequence_length"]
  if store.manifest["task_feature_lengths"] != task_feature_lengths(length, "decoder"):
    raise NotImplementedError(f"chunk store {store_dir} has task lengths {store.manifest['task_feature_lengths']}; "
                              "only the decoder feature converter's are read")
  selected = np.arange(len(store)) if indices is None else np.asarray(indices, np.int64)
  if selected.ndim != 1 or not selected.size:
    raise ValueError(f"the selection must be a non-empty vector of chunk indices, got shape {selected.shape}")
  if selected.min() < 0 or selected.max() >= len(store):
    raise ValueError(f"selected chunk indices outside [0, {len(store)}) of {store_dir}")

  def source(split: str, *, start_position: int = 0, process_index: int = 0, process_count: int = 1,
             repeat: bool = True) -> StoreBatchIterator:
    if split != "train":
      if eval_source is None:
        raise ValueError(f"split {split!r}: a chunk store source reads only 'train' unless given an eval_source")
      return eval_source(split, start_position=start_position, process_index=process_index,
                         process_count=process_count, repeat=repeat)
    batches = process_batches(store, selected, batch_size=batch_size, seed=seed, shuffle=shuffle, repeat=repeat,
                              process_index=process_index, process_count=process_count)
    return StoreBatchIterator(batches, start_position, read_threads=read_threads, prefetch=prefetch)

  task = store.manifest["task"]
  source.seqio_tasks = (task,) if task in {*seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names()} else ()
  source.store = store
  return source

