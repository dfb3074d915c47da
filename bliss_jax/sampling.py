"""A seeded uniform sample of a sequence read once, kept in the sequence's order.

`reservoir_sample(items, k, seed)` chooses k of the n items so that every k-subset is equally likely (reservoir
sampling, Algorithm R: item i > k replaces a uniformly chosen slot with probability k / i), holding only the chosen
items in memory and never needing n in advance; the same items and seed give the same sample. What held-out
estimates and candidate pools use under a limit instead of the first items in file order.

`proportional_counts(available, rates, total)` is how many items to take from each of several groups so that the
counts are in the proportions of `rates` (a mixture's candidate pool, drawn in its mixing rates).
"""
from typing import Iterable, List, NamedTuple, Optional, Sequence

import numpy as np


class Sample(NamedTuple):
  """`items` chosen at ascending `indices` of a sequence of `n` items."""
  items: List
  indices: List[int]
  n: int


def reservoir_sample(items: Iterable, k: int, seed: int) -> Sample:
  """k of `items` (all of them when there are at most k) chosen uniformly with `np.random.default_rng(seed)`, read
  once, returned in their order."""
  if k < 1:
    raise ValueError(f"k={k}: expected >= 1")
  rng = np.random.default_rng(seed)
  chosen, n = [], 0
  for i, item in enumerate(items):
    n = i + 1
    if i < k:
      chosen.append((i, item))
    else:
      j = int(rng.integers(i + 1))
      if j < k:
        chosen[j] = (i, item)
  chosen.sort(key=lambda c: c[0])
  return Sample([x for _, x in chosen], [i for i, _ in chosen], n)


def proportional_counts(available: Sequence[int], rates: Sequence[float], total: Optional[int] = None) -> List[int]:
  """Counts c_i <= available[i] in the proportions p_i = rates[i] / sum(rates), as many as they allow: the total is
  T = min(floor(min_i available[i] / p_i), `total`) and c_i = floor(p_i T) plus one for the T - sum floor(p_i T) groups
  of largest remainder (ties to the lower index). A group of rate 0 gets 0."""
  if len(available) != len(rates) or not rates:
    raise ValueError(f"one rate per group: {len(available)} groups, {len(rates)} rates")
  if any(r < 0 for r in rates) or not any(r > 0 for r in rates):
    raise ValueError(f"rates must be >= 0 with at least one > 0, got {list(rates)}")
  p = np.asarray(rates, np.float64) / float(np.sum(rates))
  n = np.asarray(available, np.int64)
  most = min(int(np.floor(n[i] / p[i] + 1e-9)) for i in range(len(p)) if p[i] > 0)
  t = most if total is None else min(most, int(total))
  exact = p * t
  counts = np.floor(exact + 1e-9).astype(np.int64)
  for i in sorted(range(len(p)), key=lambda i: (-(exact[i] - counts[i]), i))[:t - int(counts.sum())]:
    counts[i] += 1
  if np.any(counts > n):
    raise AssertionError(f"counts {counts.tolist()} exceed {n.tolist()}")
  return counts.tolist()
