"""Fit a score model to exact scores of a sample, then predict the rest (MiniPLM_prx, MiniPLM App. C.3; MATES's data
influence model).

The expensive exact score (e.g. teacher + reference forwards) is computed for a small sample only; a cheap model — the
reference LM's backbone with a Linear(d, 1) head on mean-pooled states — is fine-tuned with MSE to regress it, and
its predictions rank the whole pool.
"""
from typing import Collection, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bliss_jax.data.chunk_store import ChunkStore
from bliss_jax.data.keyed import keyed_batches
from bliss_jax.data.store_source import keyed_store_batches
from bliss_jax.models.score_model import ScoreModel, from_lm_params, score_batch
from bliss_jax.selection import rules
from bliss_jax.training.train_state import create_train_state
from bliss_jax.training.train_step import make_train_step

MODEL_FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids",
                  "decoder_positions")


def collect_features(task: str, split: str, sequence_length: int, keys: Collection[str],
                     chunks: Optional[ChunkStore] = None):
  """(keys found, features): the model features [n, T] of the examples whose key is in `keys`, in the split's order;
  or, given the split's chunk store `chunks`, read from it by index in the order of `keys` (a sequence)."""
  found, rows, wanted = [], {k: [] for k in MODEL_FEATURES}, set(keys)
  if chunks is None:
    batches = keyed_batches(task, split, sequence_length, 64)
  else:
    chunks.check_holds(task, split, sequence_length)
    batches = keyed_store_batches(chunks, list(keys), 64)
  for b in batches:
    for i in np.flatnonzero(b["valid"]):
      doc_id = b["doc_id"][i]
      key = f"{doc_id.decode() if isinstance(doc_id, bytes) else doc_id}#{b['chunk_index'][i]}"
      if key in wanted:
        for k in MODEL_FEATURES:
          rows[k].append(b[k][i])
        found.append(key)
  return found, {k: np.asarray(v, np.int32) for k, v in rows.items()}


def collect_rows(task: str, split: str, sequence_length: int, targets: Dict[str, float]) -> Dict[str, np.ndarray]:
  """The model features of the examples whose key is in `targets`, with `target` = their exact score."""
  found, rows = collect_features(task, split, sequence_length, targets)
  return dict(rows, target=np.asarray([targets[k] for k in found], np.float32))


def make_mse_loss(model: ScoreModel):
  def loss_fn(params, batch, rng, frozen=None):
    del rng, frozen
    err = score_batch(model, params, batch) - batch["target"]
    mse = jnp.mean(err * err)
    return mse, {"loss": mse, "num_tokens": jnp.float32(err.shape[0])}
  return loss_fn


def fit(model: ScoreModel, lm_params, rows: Dict[str, np.ndarray], *, steps: int, batch_size: int,
        learning_rate: float = 1e-3, seed: int = 0):
  """Fine-tune backbone + head on (rows, target) by MSE with AdamW; returns (params, per-step losses)."""
  n = len(rows["target"])
  if n < batch_size:
    raise ValueError(f"{n} scored examples are fewer than one batch of {batch_size}")
  mean = float(rows["target"].mean())
  params = from_lm_params(lm_params, {"kernel": jnp.zeros((model.cfg.d_model, 1)), "bias": jnp.array([mean])})
  tx = optax.adamw(learning_rate, weight_decay=0.0)
  step = jax.jit(make_train_step(make_mse_loss(model), tx))
  state, rng, losses = create_train_state(params, tx), np.random.default_rng(seed), []
  key = jax.random.PRNGKey(seed)
  for _ in range(steps):
    idx = rng.choice(n, batch_size, replace=False)
    state, m = step(state, {k: v[idx] for k, v in rows.items()}, key)
    losses.append(float(m["loss"]))
  return state.params, losses


def make_prediction_scorer(model: ScoreModel):
  """`score_fn(params, batch) -> {"predicted": [B]}` for `offline_scoring.score_split`."""
  return lambda params, batch: {"predicted": score_batch(model, params, batch)}


def sample_keys(keys: Sequence[str], fraction: float, seed: int):
  """A uniform sample of max(1, round(fraction·n)) of the n keys (at least one to fit on), in key order."""
  n = max(1, int(round(fraction * len(keys))))
  return [keys[i] for i in rules.uniform_subset(len(keys), n, seed)]
