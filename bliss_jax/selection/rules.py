"""Selection rules: scores -> indices of the selected items. Deterministic given the seed; ties broken by index.

* `top_k` / `top_fraction`: the k highest (or lowest) scores; equal scores go to the lower index.
* `gumbel_top_k`: k items sampled without replacement with probabilities ∝ softmax(score / temperature), via the
  Gumbel-top-k trick (Kool et al. 2019): top-k of score / temperature + Gumbel(0, 1) noise (MATES uses it).
* `sample_proportional`: k items drawn with probabilities ∝ the (non-negative) weights, with or without replacement.
* `uniform_subset`: k of n items uniformly without replacement (a random selection).

`streamed_top_k` gives exactly `top_k`'s (or `gumbel_top_k`'s) indices for scores read block by block (a column on
disk), holding O(k + block) values; `iter_top_k_in_index_order` the same indices in index order, holding O(block).
"""
from typing import Iterator, Optional, Tuple

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


def _ranked_blocks(scores, block_size: int, largest: bool, gumbel: Optional[Tuple[float, int]] = None
                   ) -> Iterator[Tuple[int, np.ndarray]]:
  """`(start, keys)` for consecutive blocks `scores[start:start + block_size]`, keys ascending = best first: the keys
  `top_k` sorts (−score for the largest), or with `gumbel=(temperature, seed)` `gumbel_top_k`'s (−perturbed score),
  the noise drawn block by block from one generator (numpy draws Gumbel variates one at a time, so the stream equals
  one draw of `len(scores)`)."""
  if gumbel is not None and gumbel[0] <= 0:
    raise ValueError(f"temperature={gumbel[0]} must be > 0")
  rng = None if gumbel is None else np.random.default_rng(gumbel[1])
  for start in range(0, len(scores), block_size):
    block = _check(scores[start:start + block_size])
    if gumbel is not None:
      yield start, -_perturbed(block, rng.gumbel(size=block.size), gumbel[0], largest)
    else:
      yield start, -block if largest else block


def streamed_top_k(scores, k: int, *, largest: bool = True, block_size: int = 1 << 20,
                   gumbel: Optional[Tuple[float, int]] = None) -> np.ndarray:
  """`top_k(scores, k, largest=largest)` (with `gumbel=(temperature, seed)`: `gumbel_top_k`) over `scores[a:b]`
  blocks (e.g. a `np.load(..., mmap_mode='r')` column): the k best of the blocks read so far are merged with each
  next block, so memory is O(k + block_size). The order by (key, index) is total, so the k best of all are among the
  k best kept and the block's: the result equals the in-memory rule's, ties and order included."""
  _check_k(k, len(scores))
  kept_keys, kept_indices = np.zeros(0), np.zeros(0, np.int64)
  for start, block in _ranked_blocks(scores, block_size, largest, gumbel):
    keys = np.concatenate([kept_keys, block])
    indices = np.concatenate([kept_indices, np.arange(start, start + block.size)])
    best = _first_k(keys, indices, k)
    kept_keys, kept_indices = keys[best], indices[best]
  return kept_indices


def _sortable_bits(keys: np.ndarray) -> np.ndarray:
  """uint64 codes of float64 keys in the same order (−0.0 and 0.0 equal, as `np.lexsort` takes them)."""
  bits = (keys + 0.0).view(np.uint64)
  return np.where(bits >> np.uint64(63) == 1, ~bits, bits | np.uint64(1 << 63))


def _kth_key(blocks, k: int) -> Tuple[np.uint64, int]:
  """The code t of the k-th best key (k >= 1) by radix select, 16 bits a pass over `blocks()`, and how many of the
  keys equal to t are among the k best (those with the lowest indices)."""
  prefix, rank = 0, k
  for shift in (48, 32, 16, 0):
    counts = np.zeros(1 << 16, np.int64)
    above = np.uint64(((1 << 64) - 1) ^ ((1 << (shift + 16)) - 1)) if shift < 48 else np.uint64(0)
    for _, block in blocks():
      codes = _sortable_bits(block)
      codes = codes[(codes & above) == np.uint64(prefix)]
      counts += np.bincount(((codes >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.intp), minlength=1 << 16)
    below = np.cumsum(counts)
    digit = int(np.searchsorted(below, rank))
    rank -= int(below[digit - 1]) if digit else 0
    prefix |= digit << shift
  return np.uint64(prefix), rank


def iter_top_k_in_index_order(scores, k: int, *, largest: bool = True, block_size: int = 1 << 20,
                              gumbel: Optional[Tuple[float, int]] = None) -> Iterator[np.ndarray]:
  """The indices of `streamed_top_k(scores, k, ...)` in ascending index order, block by block, in O(block_size)
  memory: four passes find the k-th best key t (radix select); a fifth yields every index whose key is better than
  t and, of those equal to t, the lowest-indexed ones that complete k (`top_k`'s tie-break)."""
  _check_k(k, len(scores))
  if k == 0:
    return
  blocks = lambda: _ranked_blocks(scores, block_size, largest, gumbel)
  t, ties = _kth_key(blocks, k)
  for start, block in blocks():
    codes = _sortable_bits(block)
    keep = codes < t
    equal = np.flatnonzero(codes == t)[:ties]
    ties -= equal.size
    keep[equal] = True
    yield start + np.flatnonzero(keep)


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
