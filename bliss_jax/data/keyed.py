"""Unpacked, keyed batches for scoring: every row is one example (a document chunk) with its stable key.

Scoring needs to map each score back to its document, which packing and seqio's feature converters drop. Here the
converter's output (the model features) is zipped with the example keys read from the same unshuffled, unpacked
dataset, which the converter maps 1:1. Every batch has exactly `batch_size` rows (one compilation); the last one is
padded with all-zero rows whose `valid` flag is False.

`replay_packed_batches` replays a training stream's first batches with the examples packed into each row (their
`doc_id`s, so a token of a packed batch maps back to its document); `consumed_spans` returns what they trained on, as
document token spans; `keyed_batches(..., exclude_spans=...)` leaves out every example that overlaps them (SALT_DS's
"remainder"), and `keyed_batches(..., keys=...)` reads only the examples listed (a sample of the split).
"""
import collections
from typing import Any, Collection, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import seqio
import tensorflow as tf

from bliss_jax.data.pipeline import get_dataset, model_features, task_feature_lengths

Spans = Mapping[str, Sequence[Tuple[int, int]]]  # doc_id -> [(start, end)] token offsets in the document
SPAN_FEATURES = ("doc_id", "chunk_start", "chunk_end")


def _keys(features):
  if "doc_id" not in features:
    raise ValueError("examples have no 'doc_id' feature; register the task with bliss_jax.data.seqio_tasks")
  chunk = features.get("chunk_index", tf.constant(0, tf.int32))
  return {"doc_id": features["doc_id"], "chunk_index": tf.cast(chunk, tf.int32)}


def _listed(keys: Collection[str]):
  """A `tf.data` predicate: is an example's key `doc_id#chunk_index` one of `keys`?"""
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(sorted(set(keys)), tf.string), tf.ones(len(set(keys)), tf.int32)),
      default_value=0)

  def listed(features):
    k = _keys(features)
    return table.lookup(tf.strings.join([k["doc_id"], tf.strings.as_string(k["chunk_index"])], separator="#")) > 0

  return listed


def _overlaps_spans(spans: Spans):
  """A `tf.data` predicate: does an example's `[chunk_start, chunk_end)` overlap a span of its document?"""
  doc_ids = sorted(spans)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(doc_ids, tf.string), tf.range(len(doc_ids), dtype=tf.int32)),
      default_value=-1)
  starts = tf.ragged.constant([[int(a) for a, _ in spans[d]] for d in doc_ids], dtype=tf.int32, ragged_rank=1)
  ends = tf.ragged.constant([[int(b) for _, b in spans[d]] for d in doc_ids], dtype=tf.int32, ragged_rank=1)

  def overlaps(features):
    missing = [k for k in SPAN_FEATURES if k not in features]
    if missing:
      raise ValueError(f"examples lack {missing}: excluding spans needs chunks made by seqio_tasks.split_tokens")
    i = table.lookup(features["doc_id"])
    hit = lambda: tf.reduce_any((starts[i] < features["chunk_end"]) & (features["chunk_start"] < ends[i]))
    return tf.cond(i >= 0, hit, lambda: tf.constant(False))

  return overlaps


def keyed_batches(name: str, split: str, sequence_length: int, batch_size: int, *, feature_converter: str = "decoder",
                  process_index: int = 0, process_count: int = 1, start_batch: int = 0,
                  max_examples: Optional[int] = None, exclude_spans: Optional[Spans] = None,
                  keys: Optional[Collection[str]] = None) -> Iterator[Dict[str, np.ndarray]]:
  """Yields dicts with the decoder features plus `doc_id` (bytes), `chunk_index` and `valid` (bool), [batch_size].

  Reads the split once, in order, shard `process_index` of `process_count`; `start_batch` skips batches already
  processed (resumption); `keys` keeps only the examples whose key `doc_id#chunk_index` is listed; `max_examples` caps
  the examples read (per process; the first ones); `exclude_spans` leaves out every example (of those) whose document
  tokens overlap one of the spans (`consumed_spans`).
  """
  provider = seqio.get_mixture_or_task(name)
  lengths = task_feature_lengths(sequence_length, feature_converter)
  base = provider.get_dataset(lengths, split=split, shuffle=False, num_epochs=1, use_cached=False,
                              shard_info=seqio.ShardInfo(index=process_index, num_shards=process_count))
  if keys is not None:
    base = base.filter(_listed(keys)) if keys else base.take(0)
  if max_examples is not None:
    base = base.take(max_examples)
  if exclude_spans:
    overlaps = _overlaps_spans(exclude_spans)
    base = base.filter(lambda x: tf.logical_not(overlaps(x)))
  vocab = provider.output_features["targets"].vocabulary
  features = model_features(base, lengths, vocab, feature_converter, pack=False)
  ds = tf.data.Dataset.zip((base.map(_keys), features)).batch(batch_size).skip(start_batch)
  for keys, batch in ds.prefetch(2).as_numpy_iterator():
    n = len(keys["doc_id"])
    out = {k: np.asarray(v) for k, v in batch.items()}
    out.update(doc_id=keys["doc_id"], chunk_index=keys["chunk_index"], valid=np.ones(n, bool))
    if n < batch_size:
      out = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)]) for k, v in out.items()}
    yield out


def iter_example_keys(name: str, split: str, sequence_length: int) -> Iterator[str]:
  """Every example's key `doc_id#chunk_index` of `name:split`, in the split's order, read as they come."""
  for b in keyed_batches(name, split, sequence_length, 64):
    yield from (f"{d.decode()}#{c}" for d, c, v in zip(b["doc_id"], b["chunk_index"], b["valid"]) if v)


def example_keys(name: str, split: str, sequence_length: int) -> List[str]:
  """Every example's key `doc_id#chunk_index` of `name:split`, in the split's order."""
  return list(iter_example_keys(name, split, sequence_length))


def replay_packed_batches(name: str, split: str, sequence_length: int, batch_size: int, num_batches: int, *,
                          seed: int, features: Sequence[str] = ("doc_id",), feature_converter: str = "decoder",
                          pack: bool = True, process_index: int = 0, process_count: int = 1
                          ) -> Iterator[Tuple[Dict[str, np.ndarray], List[List[Dict[str, Any]]]]]:
  """The first `num_batches` batches of a training stream as process `process_index` read them, each with what was
  packed into it: `(batch, rows)`, `rows[r]` the examples of row r's segments 1, 2, ... in order, as {feature: value}
  of their `features` (e.g. `doc_id`; strings as bytes).

  The stream is `pipeline.seqio_batch_source(name, batch_size=batch_size, sequence_length=sequence_length, seed=seed,
  pack=pack, feature_converter=feature_converter)(split)` over `process_count` processes (this one reads its shard).
  seqio packs examples greedily in their order, so those batches hold exactly the first E examples of the shard's
  example stream, E the number of packed segments (rows without packing); these are read again with their
  `features`, and each one's tokens are checked against its packed segment.
  """
  lengths = task_feature_lengths(sequence_length, feature_converter)
  provider = seqio.get_mixture_or_task(name)
  extra = {} if isinstance(provider, seqio.Task) else {"passthrough_features": list(features)}
  packed = get_dataset(name, split, sequence_length, batch_size // process_count, shuffle=split == "train", seed=seed,
                       pack=pack, repeat=True, feature_converter=feature_converter, process_index=process_index,
                       process_count=process_count)
  examples = provider.get_dataset(lengths, split=split, shuffle=split == "train", seed=seed, num_epochs=None,
                                  shard_info=seqio.ShardInfo(index=process_index, num_shards=process_count),
                                  use_cached=False, **extra).as_numpy_iterator()
  for batch in packed.take(num_batches).as_numpy_iterator():
    rows = []
    for tokens, ids in zip(batch["decoder_target_tokens"], batch["decoder_segment_ids"]):
      row = []
      for s in range(1, int(ids.max()) + 1):
        x = next(examples)
        missing = [k for k in features if k not in x]
        if missing:
          raise ValueError(f"{name}'s examples lack {missing}: they must be chunks made by seqio_tasks.split_tokens")
        example = np.concatenate([x.get("inputs", np.zeros(0, np.int32)), x["targets"]])
        if not np.array_equal(example, tokens[ids == s]):
          raise RuntimeError(f"replaying {name}:{split} did not give the examples of its packed batches")
        row.append({k: x[k] for k in features})
      rows.append(row)
    yield batch, rows


def consumed_spans(name: str, split: str, sequence_length: int, batch_size: int, num_batches: int, *, seed: int,
                   feature_converter: str = "decoder", pack: bool = True, process_count: int = 1) -> Dict[str, list]:
  """What the first `num_batches` batches of a training stream hold (`replay_packed_batches`, every process's
  shard), as `{doc_id: [(start, end), ...]}` token spans of its documents (sorted, merged where they touch)."""
  spans = collections.defaultdict(list)
  for p in range(process_count):
    for _, rows in replay_packed_batches(name, split, sequence_length, batch_size, num_batches, seed=seed,
                                         features=SPAN_FEATURES, feature_converter=feature_converter, pack=pack,
                                         process_index=p, process_count=process_count):
      for x in (x for row in rows for x in row):
        spans[x["doc_id"].decode()].append((int(x["chunk_start"]), int(x["chunk_end"])))
  return {doc: _merge(s) for doc, s in spans.items()}


def _merge(spans: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
  out = []
  for a, b in sorted(spans):
    if out and a <= out[-1][1]:
      out[-1] = (out[-1][0], max(out[-1][1], b))
    else:
      out.append((a, b))
  return out
