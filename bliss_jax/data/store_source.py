"""A training source over a chunk store: a selection's chunks (an index array) in a seeded global order, via Grain.

The selection is read as an endless stream (one pass with ``repeat=False``): stream position ``t`` is selection
position ``order(t)``, in one of two orders (``ORDERS``):

- ``'index_shuffle'``: Grain's index shuffle, a seeded bijection of each epoch (reseeded with ``seed + epoch``),
  computed for ``t`` alone;
- ``'seqio'``: the order in which SeqIO serves the same selection registered as a task
  (``selection.selected_task.register_selected_task``): the whole selection shuffled with ``seed`` (reshuffled every
  epoch), repeated, then through the task's shuffle buffer of ``SEQIO_SHUFFLE_BUFFER`` examples seeded with ``seed``.
  It is computed by running that tf.data graph on the positions themselves, once, as far as the stream is read
  (O(t) integer work, memoized per source, 4 bytes per position).

Without ``shuffle`` both are the selection's own order, repeated. Rows are cut from the stream as the SeqIO path cuts
them: one chunk per row (``pack=False``, ``pipeline.get_dataset(..., pack=False)``'s rows) or packed
(``pack=True``, ``pipeline.get_dataset(..., pack=True)``'s rows, ``data/packing.py``). With the ``'seqio'`` order and
one process the batches are therefore exactly those of ``pipeline.seqio_batch_source`` over the registered task.

Batch ``b`` of the global stream holds rows ``b * B ... (b + 1) * B - 1`` (``B`` the global batch size); process
``p`` of ``P`` reads its contiguous ``B / P`` of them, so the processes' rows are disjoint and, put side by side in
process order, are the single-process batch (the SeqIO path instead packs each process's share of the examples, so
its batches for ``P > 1`` differ from these). The iterator state is the batch position the trainer already
checkpoints: resuming at batch ``b`` reads only the records of the rows it yields (plus Grain's prefetch), O(1) in
``b``. Finding those rows is free unpacked with ``'index_shuffle'``; packed, the windows before row ``b * B`` are
planned from the store's length files (``packing.PackedRows``, no record read), and the ``'seqio'`` order streams its
positions up to there: O(b) integer work, once per source.
"""
import sys
import threading
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import grain
import numpy as np
import seqio
import tensorflow as tf

from bliss_jax.choices import check_choice
from bliss_jax.data.chunk_store import ChunkStore
from bliss_jax.data.packing import PackedRows, decoder_rows
from bliss_jax.data.pipeline import Batch, BatchIterator, DecoderIds, decoder_ids, task_feature_lengths

ORDERS = ("index_shuffle", "seqio")
SEQIO_SHUFFLE_BUFFER = seqio.SHUFFLE_BUFFER_SIZE  # a registered task's example shuffle buffer (seqio's default)


def decoder_features(examples: Sequence[Dict[str, Any]], sequence_length: int, rows: int) -> Batch:
  """Unpacked decoder features of ``examples`` (each one row, seqio's ids), padded with all-zero rows to ``rows``."""
  return decoder_rows([[x["targets"]] for x in examples], rows, sequence_length, DecoderIds(0, 0), packed=False)


def global_order(num_selected: int, *, seed: int, shuffle: bool, repeat: bool) -> grain.MapDataset:
  """Selection positions row by row: a seeded shuffle of each epoch (or the selection's order), forever or once."""
  order = grain.MapDataset.range(num_selected)
  if shuffle:
    order = order.shuffle(seed=seed)
  return order.repeat() if repeat else order


class SeqioOrder:
  """The ``'seqio'`` order (module docstring) of ``num_selected`` positions: ``positions(t0, t1)``, streamed once
  and memoized (thread-safe)."""

  def __init__(self, num_selected: int, *, seed: int, shuffle: bool, repeat: bool, block: int = 1 << 14):
    ds = tf.data.Dataset.range(num_selected)
    if shuffle:
      ds = ds.shuffle(num_selected, seed=seed, reshuffle_each_iteration=True)
    if repeat:
      ds = ds.repeat()
    if shuffle:
      ds = ds.shuffle(SEQIO_SHUFFLE_BUFFER, seed=seed)
    self._blocks = ds.batch(block).as_numpy_iterator()
    self._known = np.zeros(0, np.int32)
    self._lock = threading.Lock()
    self._exhausted = False

  def positions(self, t0: int, t1: int) -> np.ndarray:
    with self._lock:
      while len(self._known) < t1 and not self._exhausted:
        block = next(self._blocks, None)
        if block is None:
          self._exhausted = True
        else:
          self._known = np.concatenate([self._known, block.astype(np.int32)])
      return self._known[t0:t1]


class IndexShuffleOrder:
  """The ``'index_shuffle'`` order (``global_order``) as ``positions(t0, t1)``."""

  def __init__(self, num_selected: int, *, seed: int, shuffle: bool, repeat: bool):
    self._order = global_order(num_selected, seed=seed, shuffle=shuffle, repeat=repeat)

  def positions(self, t0: int, t1: int) -> np.ndarray:
    return np.asarray([self._order[t] for t in range(t0, min(t1, len(self._order)))], np.int64)


class UnpackedRows:
  """One stream position per row: ``spans`` as ``PackedRows``'s, for a stream of ``length`` positions (None:
  endless)."""

  def __init__(self, length: Optional[int]):
    self._length = length

  def spans(self, r0: int, r1: int):
    return [(r, r + 1) if self._length is None or r < self._length else (0, 0) for r in range(r0, r1)]

  def num_rows(self) -> int:
    return self._length


def process_batches(store: ChunkStore, indices: np.ndarray, *, batch_size: int, seed: int, shuffle: bool,
                    repeat: bool, process_index: int, process_count: int, pack: bool = False,
                    order: str = "index_shuffle", ids: Optional[DecoderIds] = None) -> grain.MapDataset:
  """This process's batches as a Grain ``MapDataset``: element ``b`` is its rows of global batch ``b`` (module
  docstring); ``ids``: how the vocabulary's ids enter the features (default: seqio's)."""
  check_choice("order", order, ORDERS)
  if batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}")
  rows = batch_size // process_count
  length = store.manifest["sequence_length"]
  ids = ids or DecoderIds(0, 0)
  kind = SeqioOrder if order == "seqio" else IndexShuffleOrder
  stream = kind(len(indices), seed=seed, shuffle=shuffle, repeat=repeat)
  chunks_at = lambda t0, t1: indices[stream.positions(t0, t1)]
  if pack:
    plan = PackedRows(lambda t0, t1: store.lengths(chunks_at(t0, t1)), length, window=length)
  else:
    plan = UnpackedRows(None if repeat else len(indices))
  first = process_index * rows

  def batch(b: int) -> Batch:
    spans = [(s, e) for s, e in plan.spans(b * batch_size + first, b * batch_size + first + rows) if e > s]
    if not spans:
      return decoder_rows([], rows, length, ids, pack)
    chunks = chunks_at(spans[0][0], spans[-1][1])
    tokens = [x["targets"] for x in store.read(chunks)]
    return decoder_rows([tokens[s - spans[0][0]:e - spans[0][0]] for s, e in spans], rows, length, ids, pack)

  num_batches = sys.maxsize if repeat else -(-plan.num_rows() // batch_size)
  return grain.MapDataset.range(num_batches).map(batch)


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


def _registered(task: str) -> bool:
  return task in {*seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names()}


def _task_ids(store: ChunkStore) -> Optional[DecoderIds]:
  """How the store task's vocabulary ids enter the features (None: seqio's; also where the task is not registered)."""
  task = store.manifest["task"]
  if not _registered(task):
    return None
  return decoder_ids(seqio.get_mixture_or_task(task).output_features["targets"].vocabulary)


def store_batch_source(store_dir: str, *, batch_size: int, indices: Optional[Sequence[int]] = None, seed: int = 0,
                       shuffle: bool = True, pack: bool = False, order: str = "index_shuffle",
                       eval_source: Optional[Callable[..., Iterator[Batch]]] = None, read_threads: int = 1,
                       prefetch: int = 2, store: Optional[ChunkStore] = None) -> Callable[..., StoreBatchIterator]:
  """A ``trainer.BatchSource`` whose ``train`` split is the chunks ``indices`` (all when None) of a chunk store.

  ``batch_size`` is global. ``train`` reads the selection in ``order`` (module docstring) seeded with ``seed`` (in
  the order of ``indices`` without ``shuffle``), one chunk per row or ``pack``ed, repeating unless ``repeat=False``
  (one pass, the last batch padded with all-zero rows). Other splits come from ``eval_source`` (e.g.
  ``pipeline.seqio_batch_source`` of the base task), or are refused. The store must have been written for the
  ``decoder`` feature converter. ``store``: the store already opened (its ``records_read`` then counts this
  source's reads too).
  """
  check_choice("order", order, ORDERS)
  store = store or ChunkStore(store_dir)
  length = store.manifest["sequence_length"]
  if store.manifest["task_feature_lengths"] != task_feature_lengths(length, "decoder"):
    raise NotImplementedError(f"chunk store {store_dir} has task lengths {store.manifest['task_feature_lengths']}; "
                              "only the decoder feature converter's are read")
  selected = np.arange(len(store)) if indices is None else np.asarray(indices, np.int64)
  if selected.ndim != 1 or not selected.size:
    raise ValueError(f"the selection must be a non-empty vector of chunk indices, got shape {selected.shape}")
  if selected.min() < 0 or selected.max() >= len(store):
    raise ValueError(f"selected chunk indices outside [0, {len(store)}) of {store_dir}")
  task, ids = store.manifest["task"], _task_ids(store)
  streams = {}  # one plan per (process, count, repeat): a resumed or re-opened stream reuses what was planned

  def source(split: str, *, start_position: int = 0, process_index: int = 0, process_count: int = 1,
             repeat: bool = True) -> StoreBatchIterator:
    if split != "train":
      if eval_source is None:
        raise ValueError(f"split {split!r}: a chunk store source reads only 'train' unless given an eval_source")
      return eval_source(split, start_position=start_position, process_index=process_index,
                         process_count=process_count, repeat=repeat)
    key = (process_index, process_count, repeat)
    if key not in streams:
      streams[key] = process_batches(store, selected, batch_size=batch_size, seed=seed, shuffle=shuffle,
                                     repeat=repeat, process_index=process_index, process_count=process_count,
                                     pack=pack, order=order, ids=ids)
    return StoreBatchIterator(streams[key], start_position, read_threads=read_threads, prefetch=prefetch)

  source.seqio_tasks = (task,) if _registered(task) else ()
  source.store, source.indices = store, selected
  return source


def keyed_store_batches(store: ChunkStore, keys: Sequence[str], batch_size: int, *, process_index: int = 0,
                        process_count: int = 1, start_batch: int = 0) -> Iterator[Batch]:
  """``data.keyed.keyed_batches``' batches over the chunks ``keys`` of a chunk store, read by index in ``keys``'
  order: each a dict of the unpacked decoder features plus ``doc_id``, ``chunk_index`` and ``valid``, ``batch_size``
  rows. Process ``p`` of ``P`` reads rows ``p·batch_size ...`` of each global batch of ``P·batch_size`` (the last
  padded with invalid all-zero rows); ``start_batch`` skips batches without reading them."""
  batches = process_batches(store, store.indices_of(list(keys)), batch_size=batch_size * process_count, seed=0,
                            shuffle=False, repeat=False, process_index=process_index, process_count=process_count,
                            ids=_task_ids(store))
  for b in range(start_batch, len(batches)):
    start = b * batch_size * process_count + process_index * batch_size
    mine = [k.rpartition("#") for k in keys[start:start + batch_size]]
    pad = batch_size - len(mine)
    out = dict(batches[b])
    out.update(doc_id=np.array([d for d, _, _ in mine] + [""] * pad, dtype=str),
               chunk_index=np.array([int(c) for _, _, c in mine] + [0] * pad, np.int32),
               valid=np.arange(batch_size) < len(mine))
    yield out
