"""Selection rules: scores -> indices of the selected items. Deterministic given the seed; ties broken by index.

* `top_k` / `top_fraction`: the k highest (or lowest) scores; equal scores go to the lower index.
* `gumbel_top_k`: k items sampled without replacement with probabilities ∝ softmax(score / temperature), via the
  Gumbel-top-k trick (Kool et al. 2019): top-k of score / temperature + Gumbel(0, 1) noise (MATES uses it).
* `sample_proportional`: k items drawn with probabilities ∝ the (non-negative) weights, with or without replacement.
* `uniform_subset`: k of n items uniformly without replacement (a random selection).

`streamed_top_k` and `streamed_gumbel_top_k` give exactly `top_k`'s and `gumbel_top_k`'s indices for scores read
block by block (a memory-mapped column larger than memory), holding only O(k + block) values.
"""
from typing import Optional

import numpy as np

from bliss_jax.counting import fraction_to_count

def _check(scores) -> np.ndarray:
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 1:
    raise ValueError(f"scores must be a vector, got shape {scores.shape}")
  bad = np.flatnonzero(~np.isfinite(scores))
  if bad.size:
    raise ValueError(f"{bad.size} non-finite score(s), first at index {bad[0]} ({scores[bad[0]]})")
  return scores


def _check_k(k: int, n: int) -> None:
  if not 0 <= k <= n:
    raise ValueError(f"k={k} outside [0, {n}]")


def _first_k(keys: np.ndarray, indices: np.ndarray, k: int) -> np.ndarray:
  """Positions of the k smallest `keys`, in ascending key order; ties: lower index (in `indices`) first."""
  return np.lexsort((indices, keys))[:k]  # primary key: keys, secondary: index


def top_k(scores, k: int, *, largest: bool = True) -> np.ndarray:
  """Indices of the k largest (or smallest) scores, in descending (ascending) score order; ties: lower index first."""
  scores = _check(scores)
  _check_k(k, scores.size)
  keys = -scores if largest else scores
  return _first_k(keys, np.arange(scores.size), k)


def top_fraction(scores, fraction: float, *, largest: bool = True) -> np.ndarray:
  return top_k(scores, fraction_to_count(len(scores), fraction), largest=largest)


def gumbel_top_k(scores, k: int, *, temperature: float = 1.0, seed: int = 0, largest: bool = True) -> np.ndarray:
  """k indices sampled without replacement ∝ softmax(±score / temperature) (Gumbel-top-k)."""
  scores = _check(scores)
  if temperature <= 0:
    raise ValueError(f"temperature={temperature} must be > 0")
  gumbel = np.random.default_rng(seed).gumbel(size=scores.size)
  return top_k(_perturbed(scores, gumbel, temperature, largest), k)


def _perturbed(scores: np.ndarray, gumbel: np.ndarray, temperature: float, largest: bool) -> np.ndarray:
  """Gumbel-top-k's keys: ±score / temperature + Gumbel(0, 1) noise."""
  return (scores if largest else -scores) / temperature + gumbel


def streamed_top_k(scores, k: int, *, largest: bool = True, block_size: int = 1 << 20,
                   perturb=None) -> np.ndarray:
  """`top_k(scores, k, largest=largest)` over `scores[start:end]` blocks (e.g. a `np.load(..., mmap_mode='r')`
  column): the k best of the blocks read so far are merged with each next block, so memory is O(k + block_size).

  The order by (key, index) is total, so the k best of all are among the k best of the kept ones and the block, and
  the result equals `top_k`'s, ties included. `perturb(block, start)`, when given, maps a block (float64) to the
  values ranked instead (the Gumbel keys of `streamed_gumbel_top_k`).
  """
  n = len(scores)
  _check_k(k, n)
  kept_keys, kept_indices = np.zeros(0), np.zeros(0, np.int64)
  for start in range(0, n, block_size):
    block = _check(scores[start:start + block_size])
    if perturb is not None:
      block = perturb(block, start)
    keys = np.concatenate([kept_keys, -block if largest else block])
    indices = np.concatenate([kept_indices, np.arange(start, start + block.size)])
    best = _first_k(keys, indices, k)
    kept_keys, kept_indices = keys[best], indices[best]
  return kept_indices


def streamed_gumbel_top_k(scores, k: int, *, temperature: float = 1.0, seed: int = 0, largest: bool = True,
                          block_size: int = 1 << 20) -> np.ndarray:
  """`gumbel_top_k(scores, k, ...)` over blocks of `scores`: the same noise, drawn block by block from one generator
  (numpy draws Gumbel variates one at a time, so the stream is the same as one draw of `len(scores)`)."""
  if temperature <= 0:
    raise ValueError(f"temperature={temperature} must be > 0")
  rng = np.random.default_rng(seed)
  perturb = lambda block, start: _perturbed(block, rng.gumbel(size=block.size), temperature, largest)
  return streamed_top_k(scores, k, block_size=block_size, perturb=perturb)


def sample_proportional(weights, k: int, *, seed: int = 0, replace: bool = False,
                        rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """k indices drawn with probability ∝ weights (non-negative, not all zero)."""
  w = _check(weights)
  if (w < 0).any():
    raise ValueError("sample_proportional needs non-negative weights; shift or exponentiate the scores first")
  if w.sum() <= 0:
    raise ValueError("all weights are zero")
  if not replace and k > np.count_nonzero(w):
    raise ValueError(f"cannot draw {k} distinct items from {np.count_nonzero(w)} with non-zero weight")
  rng = rng or np.random.default_rng(seed)
  return rng.choice(w.size, size=k, replace=replace, p=w / w.sum())


def uniform_subset(n: int, k: int, seed: int) -> np.ndarray:
  """k distinct indices of range(n) drawn uniformly (`np.random.default_rng(seed).choice`), sorted ascending."""
  return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
