"""Offline scoring of a SeqIO split with frozen models: batched, jit-compiled, sharded, streamed to a score store.

`score_split` reads the split unpacked and in order (`bliss_jax.data.keyed`; or the given keys' chunks by index from
the split's chunk store: `chunks`), runs `score_fn` on each global batch (split over the mesh's "data" axis; each
process feeds its own shard of the split), and writes this process's rows every `batches_per_shard` batches as one
shard of the store. Rerunning after an interruption skips the finished shards (their batches are read past, not
scored) and continues; a finished store is not touched again. The MODEL_DIRs of the scoring models are checked first
against the task's vocabulary (`model_vocabulary.check`).

`score_chunk_store` scores a chunk store (`data/chunk_store.py`) instead: global batch b is chunks bB ... (b+1)B − 1,
each process reads its rows by index, and the per-example scores become score columns (`score_columns`, row i for
chunk i), written in place every `checkpoint_every` batches with the batch count, so a rerun continues from there.
"""
import json
import math
import os
import time
from typing import Callable, Dict, Optional, Sequence

import jax
import numpy as np
import tqdm

from bliss_jax import partitioning
from bliss_jax.data import pipeline, vocabulary
from bliss_jax.data.chunk_store import ChunkStore
from bliss_jax.data.keyed import keyed_batches
from bliss_jax.data.store_source import decoder_features, keyed_store_batches
from bliss_jax.selection import score_columns, score_store
from bliss_jax.training import model_vocabulary

MODEL_FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids",
                  "decoder_positions", "decoder_causal_attention")


def score_split(score_fn: Callable, params, *, task: str, split: str, store_dir: str, sequence_length: int,
                batch_size: int, mesh=None, batches_per_shard: int = 16, max_examples: Optional[int] = None,
                feature_converter: str = "decoder", meta: Optional[dict] = None, progress: bool = True,
                stop_after_shards: Optional[int] = None, exclude_spans=None, keys: Optional[Sequence[str]] = None,
                model_dirs: Sequence[str] = (), chunks: Optional[ChunkStore] = None) -> score_store.ScoreTable:
  """Score `task:split` into `store_dir` and return the whole table (read back from the store).

  Args:
    score_fn: `(params, batch) -> {name: [B], "tok_"+name: [B, T]}` (see `scorers`); jitted here.
    params: anything `score_fn` takes (e.g. a tuple of two models' parameters), already placed on devices.
    batch_size: the GLOBAL batch; each of the processes reads `batch_size / process_count` rows per batch.
    mesh: rows are split over its "data" axis (default: all devices on "data").
    stop_after_shards: leave after writing this many new shards (to test resumption; None = run to the end).
    exclude_spans: `{doc_id: [(start, end)]}` document token spans; examples overlapping them are not scored
      (`keyed.keyed_batches`).
    keys: score only these examples (`doc_id#chunk_index` keys, e.g. a sample of the split); None: all.
    model_dirs: the MODEL_DIRs whose models score (a refused vocabulary raises `model_vocabulary.VocabularyMismatch`).
    chunks: the chunk store of `task:split` (`data/chunk_store.py`): the `keys` (required) are read from it by index,
      in their order (`store_source.keyed_store_batches`), instead of streaming the split; the same rows and scores.
  """
  os.makedirs(store_dir, exist_ok=True)
  if score_store.is_complete(store_dir):
    return score_store.read_scores(store_dir)
  if model_dirs:
    task_vocabulary = vocabulary.vocabulary_record(pipeline.task_vocabulary(task))
    for model_dir in model_dirs:
      model_vocabulary.check(model_dir, task_vocabulary, what=f"task {task!r}")
  mesh = mesh or partitioning.make_mesh()
  pc, pi = jax.process_count(), jax.process_index()
  if batch_size % pc or batch_size % mesh.shape["data"]:
    raise ValueError(f"batch_size={batch_size} must divide over {pc} processes and the data axis "
                     f"({mesh.shape['data']})")
  local = batch_size // pc
  done = score_store.completed_shards(store_dir, pi)
  fn = jax.jit(score_fn, out_shardings=partitioning.replicated(mesh))
  if pi == 0:
    score_store.write_manifest(store_dir, complete=False, task=task, split=split, sequence_length=sequence_length,
                               meta=meta or {})
  if chunks is None:
    batches = keyed_batches(task, split, sequence_length, local, feature_converter=feature_converter,
                            process_index=pi, process_count=pc, start_batch=len(done) * batches_per_shard,
                            max_examples=max_examples, exclude_spans=exclude_spans, keys=keys)
  else:
    chunks.check_holds(task, split, sequence_length)
    if keys is None or max_examples is not None or exclude_spans or feature_converter != "decoder":
      raise ValueError("scoring from a chunk store takes the keys to score, the decoder feature converter, and no "
                       "max_examples or exclude_spans")
    batches = keyed_store_batches(chunks, keys, local, process_index=pi, process_count=pc,
                                  start_batch=len(done) * batches_per_shard)
  bar = tqdm.tqdm(desc=f"score {task}:{split}", unit="ex", disable=not progress or pi != 0, mininterval=2.0)
  pending, shard_index, new_shards, tokens, t0 = [], len(done), 0, 0, time.perf_counter()
  last = None

  def flush():
    nonlocal pending, shard_index, new_shards
    if pending:
      score_store.write_shard(store_dir, pi, shard_index, score_store.ScoreTable.concatenate(pending))
      pending, shard_index, new_shards = [], shard_index + 1, new_shards + 1

  empty = None
  while True:
    batch = next(batches, None)
    if pc > 1:  # every process runs the same number of global batches: exhausted ones feed invalid rows
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      if not multihost_utils.process_allgather(np.array(batch is not None)).any():
        break
      if batch is None:
        empty = empty or _empty_like(last)
        batch = empty
    elif batch is None:
      break
    last = batch
    model_batch = {k: batch[k] for k in MODEL_FEATURES if k in batch}
    out = jax.device_get(fn(params, partitioning.global_batch_from_local(model_batch, mesh)))
    rows = slice(pi * local, (pi + 1) * local)  # this process's rows of the global batch
    valid = batch["valid"]
    num_tokens = batch["decoder_loss_weights"].sum(-1).astype(np.int32)
    table = score_store.ScoreTable(
        doc_id=batch["doc_id"].astype(str), chunk_index=batch["chunk_index"],
        columns={k: np.asarray(v)[rows] for k, v in out.items() if not k.startswith("tok_")},
        num_tokens=num_tokens, token_columns={k[4:]: np.asarray(v)[rows] for k, v in out.items()
                                              if k.startswith("tok_")})
    if valid.any():
      pending.append(table.take(np.flatnonzero(valid)))
    tokens += int(num_tokens.sum())
    bar.update(int(valid.sum()))
    bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f}")
    if len(pending) == batches_per_shard:
      flush()
      if stop_after_shards is not None and new_shards >= stop_after_shards:
        bar.close()
        return None
  flush()
  bar.close()
  if pc > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f"score_split:{store_dir}")
  table = score_store.read_scores(store_dir, require_complete=False)
  if pi == 0:
    score_store.write_manifest(store_dir, complete=True, task=task, split=split, sequence_length=sequence_length,
                               num_examples=len(table), columns=sorted(table.columns),
                               token_columns=sorted(table.token_columns), meta=meta or {})
  return table


def score_chunk_store(score_fn: Callable, params, *, store_dir: str, batch_size: int, mesh=None,
                      checkpoint_every: int = 64, model_dirs: Sequence[str] = (), progress: bool = True,
                      stop_after_batches: Optional[int] = None) -> Optional[Dict[str, np.ndarray]]:
  """Scores every chunk of a chunk store into its score columns; returns them (memory-mapped), or None when stopped
  by `stop_after_batches` (to test resumption).

  `score_fn` is `score_split`'s; only its per-example outputs (not the `tok_` ones) are kept, one column each, named
  as the outputs. `batch_size` is global; process p scores rows p·B/P ... of every global batch (the last batch padded
  with all-zero rows), and process 0 writes the columns. A column already complete is not scored again.
  """
  store = ChunkStore(store_dir)
  if model_dirs:
    for model_dir in model_dirs:
      model_vocabulary.check(model_dir, store.manifest["vocabulary"], what=f"chunk store {store_dir}")
  mesh = mesh or partitioning.make_mesh()
  pc, pi = jax.process_count(), jax.process_index()
  if batch_size % pc or batch_size % mesh.shape["data"]:
    raise ValueError(f"batch_size={batch_size} must divide over {pc} processes and the data axis "
                     f"({mesh.shape['data']})")
  local, n, length = batch_size // pc, len(store), store.manifest["sequence_length"]
  progress_path = os.path.join(store_dir, "scores", "scoring.json")
  state = {"batches": 0, "columns": []}
  if os.path.exists(progress_path):
    with open(progress_path) as f:
      state = json.load(f)
    if state.get("complete"):
      return {c: score_columns.read_column(store_dir, c) for c in state["columns"]}
  os.makedirs(os.path.dirname(progress_path), exist_ok=True)
  partial = lambda c: score_columns.column_path(store_dir, c) + ".partial.npy"
  columns = {c: np.load(partial(c), mmap_mode="r+") for c in state["columns"]} if pi == 0 else {}
  fn = jax.jit(score_fn, out_shardings=partitioning.replicated(mesh))
  num_batches = math.ceil(n / batch_size)
  first = state["batches"]
  last = num_batches if stop_after_batches is None else min(num_batches, first + stop_after_batches)

  def save(batches, complete=False):
    for values in columns.values():
      values.flush()
    tmp = progress_path + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"batches": batches, "columns": sorted(columns), "complete": complete}, f)
    os.replace(tmp, progress_path)

  for b in tqdm.trange(first, last, desc=f"score {store_dir}", disable=not progress or pi != 0, mininterval=2.0):
    start = b * batch_size
    mine = range(min(start + pi * local, n), min(start + (pi + 1) * local, n))
    batch = decoder_features(store.read(mine), length, local)
    out = jax.device_get(fn(params, partitioning.global_batch_from_local(batch, mesh)))
    if pi == 0:
      rows = min(batch_size, n - start)
      for name, values in out.items():
        if name.startswith("tok_"):
          continue
        if name not in columns:
          columns[name] = np.lib.format.open_memmap(partial(name), mode="w+", dtype=np.float32, shape=(n,))
        columns[name][start:start + rows] = np.asarray(values)[:rows]
      if (b + 1 - first) % checkpoint_every == 0 and b + 1 < last:
        save(b + 1)
  if pi != 0:
    return None if last < num_batches else {}
  if last < num_batches:
    save(last)
    return None
  for name in columns:
    columns[name].flush()
    os.replace(partial(name), score_columns.column_path(store_dir, name))
  save(num_batches, complete=True)
  return {c: score_columns.read_column(store_dir, c) for c in columns}


def _empty_like(batch: dict) -> dict:
  return {k: np.zeros_like(v) for k, v in batch.items()}
