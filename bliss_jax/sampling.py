"""A seeded uniform sample of a sequence read once, kept in the sequence's order.

`reservoir_sample(items, k, seed)` chooses k of the n items so that every k-subset is equally likely (reservoir
sampling, Algorithm R: item i > k replaces a uniformly chosen slot with probability k / i), holding only the chosen
items in memory and never needing n in advance; the same items and seed give the same sample. What held-out
estimates and candidate pools use under a limit instead of the first items in file order.
"""
from typing import Iterable, List, NamedTuple

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
