"""Selection rules: scores -> indices of the selected items. Deterministic given the seed; ties broken by index.

* `top_k` / `top_fraction`: the k highest (or lowest) scores; equal scores go to the lower index.
* `gumbel_top_k`: k items sampled without replacement with probabilities ∝ softmax(score / temperature), via the
  Gumbel-top-k trick (Kool et al. 2019): top-k of score / temperature + Gumbel(0, 1) noise (MATES uses it).
* `sample_proportional`: k items drawn with probabilities ∝ the (non-negative) weights, with or without replacement.
* `uniform_subset`: k of n items uniformly without replacement (a random selection).
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


def top_k(scores, k: int, *, largest: bool = True) -> np.ndarray:
  """Indices of the k largest (or smallest) scores, in descending (ascending) score order; ties: lower index first."""
  scores = _check(scores)
  if not 0 <= k <= scores.size:
    raise ValueError(f"k={k} outside [0, {scores.size}]")
  keys = -scores if largest else scores
  order = np.lexsort((np.arange(scores.size), keys))  # primary key: score, secondary: index
  return order[:k]


def top_fraction(scores, fraction: float, *, largest: bool = True) -> np.ndarray:
  return top_k(scores, fraction_to_count(len(scores), fraction), largest=largest)


def gumbel_top_k(scores, k: int, *, temperature: float = 1.0, seed: int = 0, largest: bool = True) -> np.ndarray:
  """k indices sampled without replacement ∝ softmax(±score / temperature) (Gumbel-top-k)."""
  scores = _check(scores)
  if temperature <= 0:
    raise ValueError(f"temperature={temperature} must be > 0")
  gumbel = np.random.default_rng(seed).gumbel(size=scores.size)
  return top_k((scores if largest else -scores) / temperature + gumbel, k)


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
