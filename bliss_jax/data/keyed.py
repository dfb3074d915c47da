"""Unpacked, keyed batches for scoring: every row is one example (a document chunk) with its stable key.

Scoring needs to map each score back to its document, which packing and seqio's feature converters drop. Here the
converter's output (the model features) is zipped with the example keys read from the same unshuffled, unpacked
dataset, which the converter maps 1:1. Every batch has exactly `batch_size` rows (one compilation); the last one is
padded with all-zero rows whose `valid` flag is False.
"""
from typing import Dict, Iterator, List, Optional

import numpy as np
import seqio
import tensorflow as tf

from bliss_jax.data.pipeline import _add_unpacked_segments, task_feature_lengths


def _keys(features):
  if "doc_id" not in features:
    raise ValueError("examples have no 'doc_id' feature; register the task with bliss_jax.data.seqio_tasks")
  chunk = features.get("chunk_index", tf.constant(0, tf.int32))
  return {"doc_id": features["doc_id"], "chunk_index": tf.cast(chunk, tf.int32)}


def keyed_batches(name: str, split: str, sequence_length: int, batch_size: int, *, feature_converter: str = "decoder",
                  process_index: int = 0, process_count: int = 1, start_batch: int = 0,
                  max_examples: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
  """Yields dicts with the decoder features plus `doc_id` (bytes), `chunk_index` and `valid` (bool), [batch_size].

  Reads the split once, in order, shard `process_index` of `process_count`; `start_batch` skips batches already
  processed (resumption); `max_examples` caps the examples read (per process).
  """
  provider = seqio.get_mixture_or_task(name)
  lengths = task_feature_lengths(sequence_length, feature_converter)
  base = provider.get_dataset(lengths, split=split, shuffle=False, num_epochs=1, use_cached=False,
                              shard_info=seqio.ShardInfo(index=process_index, num_shards=process_count))
  if max_examples is not None:
    base = base.take(max_examples)
  features = seqio.DecoderFeatureConverter(pack=False)(base, lengths).map(_add_unpacked_segments)
  ds = tf.data.Dataset.zip((base.map(_keys), features)).batch(batch_size).skip(start_batch)
  for keys, batch in ds.prefetch(2).as_numpy_iterator():
    n = len(keys["doc_id"])
    out = {k: np.asarray(v) for k, v in batch.items()}
    out.update(doc_id=keys["doc_id"], chunk_index=keys["chunk_index"], valid=np.ones(n, bool))
    if n < batch_size:
      out = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)]) for k, v in out.items()}
    yield out


def example_keys(name: str, split: str, sequence_length: int, max_examples: Optional[int] = None) -> List[str]:
  """Every example's key `doc_id#chunk_index` of `name:split` (the first `max_examples`), in the split's order."""
  keys = []
  for b in keyed_batches(name, split, sequence_length, 64, max_examples=max_examples):
    keys += [f"{d.decode()}#{c}" for d, c, v in zip(b["doc_id"], b["chunk_index"], b["valid"]) if v]
  return keys
