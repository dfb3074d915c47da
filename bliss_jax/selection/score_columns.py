"""Scores as columns of a chunk store and selections as index arrays with their provenance.

Beside a chunk store's shards (``data/chunk_store.py``):
  scores/<column>.npy          float32 [num_records]: one score per chunk, row i for global chunk index i
  selections/<name>.npy        int64 [k]: the selected chunk indices, in selection order (best first for top-k)
  selections/<name>.json       {"column", "rule", "k", "seed", "scorer", "params", "store": what the store holds}
Both are written to a temporary name and renamed. A column larger than memory is written block by block, read by
slices (``ColumnFile``) and ranked by ``rules.streamed_top_k`` (score order, O(k) memory) or
``rules.iter_top_k_in_index_order`` (index order, O(block) memory, written to the selection file as it comes).
"""
import json
import os
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np

from bliss_jax.counting import fraction_to_count
from bliss_jax.data.chunk_manifest import read_manifest
from bliss_jax.selection import rules

STREAMED_RULES = ("top_k", "gumbel_top_k")


def column_path(store_dir: str, column: str) -> str:
  return os.path.join(store_dir, "scores", f"{column}.npy")


def _num_records(store_dir: str) -> int:
  manifest = read_manifest(store_dir)
  if not manifest.get("complete"):
    raise ValueError(f"chunk store {store_dir} is incomplete; finish writing it before scoring it")
  return int(manifest["num_records"])


def write_column(store_dir: str, column: str, blocks: Iterable[np.ndarray]) -> str:
  """Writes the score column ``column`` from consecutive ``blocks`` of scores (chunk indices 0, 1, ...), which must
  cover the store's chunks exactly; returns its path."""
  n = _num_records(store_dir)
  path = column_path(store_dir, column)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.npy"
  out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n,))
  filled = 0
  for block in blocks:
    block = np.asarray(block, np.float32).reshape(-1)
    if filled + block.size > n:
      raise ValueError(f"column {column!r}: more than the store's {n} scores")
    out[filled:filled + block.size] = block
    filled += block.size
  if filled != n:
    raise ValueError(f"column {column!r}: {filled} scores for the store's {n} chunks")
  out.flush()
  del out
  os.replace(tmp, path)
  return path


def read_column(store_dir: str, column: str) -> np.ndarray:
  """The score column, memory-mapped read-only."""
  values = np.load(column_path(store_dir, column), mmap_mode="r")
  if values.shape != (_num_records(store_dir),):
    raise ValueError(f"column {column!r} has shape {values.shape}; the store has {_num_records(store_dir)} chunks")
  return values


class ColumnFile:
  """A score column read by slices (`column[a:b]`) with plain file reads: unlike a memory map, the pages read do not
  stay mapped, so a pass over a column larger than memory holds one slice at a time."""

  def __init__(self, path: str):
    self.path = path
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
      shape, fortran, self.dtype = read_header(f)
      self.offset = f.tell()
    if len(shape) != 1 or fortran:
      raise ValueError(f"{path}: not a vector column (shape {shape})")
    self.size = shape[0]

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: slice) -> np.ndarray:
    start, stop, step = index.indices(self.size)
    if step != 1:
      raise ValueError("a ColumnFile reads contiguous slices only")
    count = max(stop - start, 0)
    return np.fromfile(self.path, self.dtype, count=count, offset=self.offset + start * self.dtype.itemsize)


def select_from_column(store_dir: str, column: str, *, rule: str = "top_k", k: Optional[int] = None,
                       fraction: Optional[float] = None, seed: int = 0, temperature: float = 1.0,
                       largest: bool = True, order: str = "score", block_size: int = 1 << 20):
  """The chunk indices ``rule`` selects from a column (k of them, or ``fraction_to_count`` of the chunks), read
  block by block: ``rules.top_k`` / ``rules.gumbel_top_k`` on the whole column. ``order='score'``: an array in their
  order (memory O(k + block)); ``order='index'``: an iterator of index blocks in ascending index order (memory
  O(block); ``write_selection`` takes it)."""
  if rule not in STREAMED_RULES:
    raise ValueError(f"rule={rule!r}: expected one of {STREAMED_RULES}")
  if (k is None) == (fraction is None):
    raise ValueError("give exactly one of k and fraction")
  scores = ColumnFile(column_path(store_dir, column))
  if len(scores) != _num_records(store_dir):
    raise ValueError(f"column {column!r} has {len(scores)} rows; the store has {_num_records(store_dir)} chunks")
  k = fraction_to_count(len(scores), fraction) if k is None else k
  gumbel = (temperature, seed) if rule == "gumbel_top_k" else None
  if order == "score":
    return rules.streamed_top_k(scores, k, largest=largest, block_size=block_size, gumbel=gumbel)
  if order == "index":
    return rules.iter_top_k_in_index_order(scores, k, largest=largest, block_size=block_size, gumbel=gumbel)
  raise ValueError(f"order={order!r}: expected 'score' or 'index'")


def selection_paths(store_dir: str, name: str) -> Tuple[str, str]:
  base = os.path.join(store_dir, "selections", name)
  return base + ".npy", base + ".json"


def write_selection(store_dir: str, name: str, indices, *, column: str, rule: str, seed: Optional[int],
                    scorer: str, **params: Any) -> str:
  """Saves a selection, chunk indices (an array, or an iterable of index blocks written as they come), and its
  provenance; returns the index file's path."""
  manifest = read_manifest(store_dir)
  n = int(manifest["num_records"])
  array_path, info_path = selection_paths(store_dir, name)
  os.makedirs(os.path.dirname(array_path), exist_ok=True)
  blocks = [indices] if isinstance(indices, np.ndarray) or not hasattr(indices, "__next__") else indices
  tmp = array_path + ".tmp"
  count = 0
  with open(tmp, "wb") as f:
    header_at = f.tell()
    np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (n,)})
    data_at = f.tell()
    for block in blocks:
      block = np.asarray(block, "<i8").reshape(-1)
      if block.size and (block.min() < 0 or block.max() >= n):
        raise ValueError(f"selection {name!r}: indices outside [0, {n})")
      f.write(block.tobytes())
      count += block.size
    f.seek(header_at)  # the header is padded to a fixed size, so the real count fits in its place
    np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (count,)})
    if f.tell() != data_at:
      raise RuntimeError("the .npy header changed size with the count")
  info = {"column": column, "rule": rule, "k": count, "seed": seed, "scorer": scorer, "params": params,
          "store": {key: manifest[key] for key in ("task", "split", "sequence_length", "num_records")}}
  with open(info_path + ".tmp", "w") as f:
    json.dump(info, f, indent=1, sort_keys=True)
  os.replace(info_path + ".tmp", info_path)
  os.replace(tmp, array_path)
  return array_path


def read_selection(store_dir: str, name: str) -> Tuple[np.ndarray, Dict[str, Any]]:
  """(indices, memory-mapped; provenance) of a saved selection."""
  array_path, info_path = selection_paths(store_dir, name)
  with open(info_path) as f:
    return np.load(array_path, mmap_mode="r"), json.load(f)
