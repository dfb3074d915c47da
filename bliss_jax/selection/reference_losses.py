"""Offline reference losses for RHO-1: score a split once with the reference model, then train on it with `ref_loss`.

Step 2 of the RHO-1 pipeline (precompute L_RM for every token of the training corpus, one forward of the RM):
`make_reference_scorer` gives per-token `loss` (Eq. 1) and optionally `entropy` (Eq. 8) for
`offline_scoring.score_split` (sharded, resumable score store); `scripts/score_reference_losses.py` runs it with a
reference model loaded from its MODEL_DIR.

Step 3 reads it back: `reference_loss_source` is a `trainer.BatchSource` whose `train` batches are the store's split,
UNPACKED (one document chunk per row, as scored), each row joined by its key "doc_id#chunk_index" with the store's
token columns: `ref_loss` [B, T] (and `ref_entropy`), aligned with `decoder_target_tokens` and 0 on padding, which
`losses.selective.make_selective_loss(reference='offline')` consumes.

The joined rows are held in host memory (tokens and reference values, about 24 bytes per token position), like the score
store itself when it is read; corpora beyond a few hundred million tokens need a file-backed variant.
The stream is deterministic and resumable: the train split is an endless concatenation of epochs, epoch e in the
split's order or (with `shuffle`) in the permutation drawn from (seed, e); batch i holds rows [i·B, (i+1)·B) of that
stream, so no row is dropped at an epoch boundary and `start_position` resumes exactly. Each process materialises the
same rows and takes its slice of every global batch. Other splits (validation) are the task's split, unpacked, in
order, one pass, the last batch padded with zero-weight rows, without reference columns (evaluation is plain CE).
"""
from typing import Dict, Optional

import jax.numpy as jnp
import numpy as np

from bliss_jax.data.keyed import keyed_batches
from bliss_jax.losses.entropy import entropy
from bliss_jax.losses.lm import masked_mean, model_logits, token_cross_entropy
from bliss_jax.selection import offline_scoring, score_store

# Store token column -> batch feature.
BATCH_FEATURES = {"loss": "ref_loss", "entropy": "ref_entropy"}


def make_reference_scorer(model, with_entropy: bool = False):
  """`score_fn(params, batch)`: per example `mean_loss`; per token `tok_loss` (L_RM, Eq. 1) and, with `with_entropy`,
  `tok_entropy` (H_RM, Eq. 8); both 0 where `decoder_loss_weights` is 0."""
  def score_fn(params, batch):
    logits = model_logits(model, params, batch)
    w = batch["decoder_loss_weights"].astype(jnp.float32)
    loss = token_cross_entropy(logits, batch["decoder_target_tokens"])
    out = {"mean_loss": masked_mean(loss, w, -1), "tok_loss": loss * w}
    if with_entropy:
      out["tok_entropy"] = entropy(logits=logits) * w
    return out
  return score_fn


def _read_rows(task: str, split: str, sequence_length: int, feature_converter: str,
               max_examples: Optional[int]) -> Dict[str, np.ndarray]:
  """Every example of `task:split`, unpacked and in order: model features [n, T] plus `key` [n]."""
  parts = []
  for b in keyed_batches(task, split, sequence_length, 256, feature_converter=feature_converter,
                         max_examples=max_examples):
    rows = np.flatnonzero(b["valid"])
    part = {k: v[rows] for k, v in b.items() if k in offline_scoring.MODEL_FEATURES}
    part["key"] = np.array([f"{d.decode()}#{c}" for d, c in zip(b["doc_id"][rows], b["chunk_index"][rows])])
    parts.append(part)
  if not parts:
    raise ValueError(f"{task}:{split} has no examples")
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def join_reference_values(rows: Dict[str, np.ndarray], table: score_store.ScoreTable) -> Dict[str, np.ndarray]:
  """`rows` plus `ref_<column>` [n, T] of the store's token columns, matched by key; every row must be in the store,
  with the same number of loss-carrying tokens (else the store was scored with another tokenizer or length)."""
  index = {k: i for i, k in enumerate(table.keys())}
  missing = [k for k in rows["key"] if k not in index]
  if missing:
    raise ValueError(f"{len(missing)} example(s) have no reference values in the score store, e.g. {missing[:3]}")
  at = np.array([index[k] for k in rows["key"]], np.int64)
  num_tokens = rows["decoder_loss_weights"].sum(-1)
  bad = np.flatnonzero(table.num_tokens[at] != num_tokens)
  if bad.size:
    raise ValueError(f"{bad.size} example(s) have another token count in the score store than in the task (first: "
                     f"{rows['key'][bad[0]]}: {table.num_tokens[at[bad[0]]]} vs {num_tokens[bad[0]]}); was the store "
                     "scored with the same vocabulary and sequence length?")
  out = dict(rows)
  for column, values in table.token_columns.items():
    values = values[at]
    if values.shape != rows["decoder_target_tokens"].shape:
      raise ValueError(f"token column {column!r} has shape {values.shape[1:]} per row, the task rows "
                       f"{rows['decoder_target_tokens'].shape[1:]}")
    out[BATCH_FEATURES.get(column, f"ref_{column}")] = values.astype(np.float32)
  return out


class RowBatches:
  """Batches of materialised rows with a resumable `position` (batches yielded so far); see the module docstring."""

  def __init__(self, rows: Dict[str, np.ndarray], *, batch_size: int, start_position: int = 0, process_index: int = 0,
               process_count: int = 1, repeat: bool = True, shuffle: bool = False, seed: int = 0):
    if batch_size % process_count:
      raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}")
    self._rows = {k: v for k, v in rows.items() if k != "key"}
    self._n = len(rows["decoder_target_tokens"])
    self.batch_size, self._local = batch_size, batch_size // process_count
    self._offset = process_index * self._local
    self.position, self.repeat, self.shuffle, self.seed = start_position, repeat, shuffle, seed
    self._orders = {}

  def _order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self._n)
    if epoch not in self._orders:
      if len(self._orders) > 2:
        self._orders.clear()
      self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self._n)
    return self._orders[epoch]

  def __iter__(self):
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    start = self.position * self.batch_size + self._offset
    stream = np.arange(start, start + self._local)
    if not self.repeat:
      if self.position * self.batch_size >= self._n:
        raise StopIteration
      take = stream[stream < self._n]
      out = {k: v[take] for k, v in self._rows.items()}
      pad = self._local - len(take)  # zero rows: loss weight 0
      out = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in out.items()}
    else:
      epochs, offsets = np.divmod(stream, self._n)
      take = np.array([self._order(int(e))[o] for e, o in zip(epochs, offsets)], np.int64)
      out = {k: v[take] for k, v in self._rows.items()}
    self.position += 1
    return out


def reference_loss_source(store_dir: str, *, batch_size: int, sequence_length: Optional[int] = None,
                          shuffle: bool = True, seed: int = 0, feature_converter: str = "decoder",
                          max_examples: Optional[int] = None):
  """A `trainer.BatchSource` over a reference-loss score store (see the module docstring).

  The task, split and sequence length are the store's (its manifest); `sequence_length`, when given, must agree.
  `train` = the store's split with `ref_*` features; any other split = the task's split without them.
  `batch_size` is GLOBAL.
  """
  manifest = score_store.read_manifest(store_dir)
  task, scored_split, length = manifest["task"], manifest["split"], int(manifest["sequence_length"])
  if sequence_length is not None and int(sequence_length) != length:
    raise ValueError(f"score store {store_dir} was scored at sequence_length={length}, not {sequence_length}")
  cache = {}

  def rows_of(split):
    if split not in cache:
      if split == "train":
        base = _read_rows(task, scored_split, length, feature_converter, max_examples)
        cache[split] = join_reference_values(base, score_store.read_scores(store_dir))
      else:
        cache[split] = _read_rows(task, split, length, feature_converter, None)
    return cache[split]

  def source(split, *, start_position=0, process_index=0, process_count=1, repeat=True):
    return RowBatches(rows_of(split), batch_size=batch_size, start_position=start_position,
                      process_index=process_index, process_count=process_count, repeat=repeat,
                      shuffle=shuffle and split == "train", seed=seed)

  source.seqio_tasks = (task,)
  return source
