"""The score store: per-example scores on disk, keyed by (doc_id, chunk_index), written in shards, resumable.

Layout of a store directory:
  manifest.json                       {"format": "bliss_jax.scores/1", "columns": [...], "token_columns": [...],
                                       "sequence_length": T, "complete": bool, "num_examples": N, "meta": {...}}
  shard-p{PPP}-{SSSSSS}.npz           one shard of process PPP, in the order that process read its examples:
      doc_id       unicode [n]        stable document id
      chunk_index  int32 [n]          chunk of the document (0 for unchunked examples)
      <column>     float32 [n]        one per-example score per column
      tok_<column> float32 [n, T]     optional per-token values (0 past num_tokens)
      num_tokens   int32 [n]          loss-carrying tokens of the example
Shards are written to a temporary name and renamed, so a shard that exists is complete. Reading concatenates the
processes in order, each in shard order: the original order of the split. Values round-trip exactly (npz, no
compression of floats).
"""
import dataclasses
import glob
import json
import os
import re
from typing import Dict, List, Optional

import numpy as np

FORMAT = "bliss_jax.scores/1"
_SHARD = re.compile(r"shard-p(\d{3})-(\d{6})\.npz$")


@dataclasses.dataclass
class ScoreTable:
  doc_id: np.ndarray
  chunk_index: np.ndarray
  columns: Dict[str, np.ndarray]
  num_tokens: np.ndarray
  token_columns: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __len__(self):
    return len(self.doc_id)

  def keys(self) -> List[str]:
    """`"doc_id#chunk_index"` per example (the key selections are stated in)."""
    return [f"{d}#{c}" for d, c in zip(self.doc_id, self.chunk_index)]

  def take(self, indices) -> "ScoreTable":
    idx = np.asarray(indices, np.int64)
    return ScoreTable(self.doc_id[idx], self.chunk_index[idx], {k: v[idx] for k, v in self.columns.items()},
                      self.num_tokens[idx], {k: v[idx] for k, v in self.token_columns.items()})

  @staticmethod
  def concatenate(tables: List["ScoreTable"]) -> "ScoreTable":
    if not tables:
      raise ValueError("no tables to concatenate")
    cat = lambda f: {k: np.concatenate([f(t)[k] for t in tables]) for k in f(tables[0])}
    return ScoreTable(np.concatenate([t.doc_id for t in tables]), np.concatenate([t.chunk_index for t in tables]),
                      cat(lambda t: t.columns), np.concatenate([t.num_tokens for t in tables]),
                      cat(lambda t: t.token_columns))


def shard_path(store_dir: str, process_index: int, shard_index: int) -> str:
  return os.path.join(store_dir, f"shard-p{process_index:03d}-{shard_index:06d}.npz")


def write_shard(store_dir: str, process_index: int, shard_index: int, table: ScoreTable) -> str:
  path = shard_path(store_dir, process_index, shard_index)
  arrays = {"doc_id": np.asarray(table.doc_id, dtype=str), "chunk_index": table.chunk_index.astype(np.int32),
            "num_tokens": table.num_tokens.astype(np.int32)}
  arrays.update({c: v.astype(np.float32) for c, v in table.columns.items()})
  arrays.update({f"tok_{c}": v.astype(np.float32) for c, v in table.token_columns.items()})
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return path


def read_shard(path: str) -> ScoreTable:
  with np.load(path, allow_pickle=False) as z:
    names = set(z.files) - {"doc_id", "chunk_index", "num_tokens"}
    return ScoreTable(z["doc_id"], z["chunk_index"], {n: z[n] for n in sorted(names) if not n.startswith("tok_")},
                      z["num_tokens"], {n[4:]: z[n] for n in sorted(names) if n.startswith("tok_")})


def completed_shards(store_dir: str, process_index: int) -> List[int]:
  """Indices of this process's finished shards; raises if they are not 0..k-1 (a gap means a corrupt store)."""
  found = sorted(int(m.group(2)) for p in glob.glob(os.path.join(store_dir, f"shard-p{process_index:03d}-*.npz"))
                 if (m := _SHARD.search(p)))
  if found != list(range(len(found))):
    raise ValueError(f"score store {store_dir}: shards of process {process_index} are not contiguous: {found[:20]}")
  return found


def write_manifest(store_dir: str, **fields) -> None:
  path = os.path.join(store_dir, "manifest.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"format": FORMAT, **fields}, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def read_manifest(store_dir: str) -> dict:
  path = os.path.join(store_dir, "manifest.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: not a score store (or scoring never started)")
  with open(path) as f:
    manifest = json.load(f)
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  return manifest


def read_scores(store_dir: str, require_complete: bool = True) -> ScoreTable:
  """All shards of all processes, in the split's original order."""
  manifest = read_manifest(store_dir)
  if require_complete and not manifest.get("complete"):
    raise ValueError(f"score store {store_dir} is incomplete (scoring was interrupted; rerun it to finish)")
  paths = sorted(glob.glob(os.path.join(store_dir, "shard-p*.npz")), key=lambda p: _SHARD.search(p).groups())
  if not paths:
    raise ValueError(f"score store {store_dir} has no shards")
  return ScoreTable.concatenate([read_shard(p) for p in paths])


def is_complete(store_dir: str) -> bool:
  try:
    return bool(read_manifest(store_dir).get("complete"))
  except FileNotFoundError:
    return False


def select_keys(table: ScoreTable, indices, order: str = "score") -> List[str]:
  """Keys of the selected rows, in selection (`score`) order or in the split's `original` order."""
  indices = np.asarray(indices, np.int64)
  if order == "original":
    indices = np.sort(indices)
  elif order != "score":
    raise ValueError(f"order={order!r}: expected 'score' or 'original'")
  keys = table.keys()
  return [keys[i] for i in indices]


def load_key_list(path: str) -> Optional[List[str]]:
  """A selection file: JSON list, or one key per line."""
  with open(path) as f:
    text = f.read()
  if text.lstrip().startswith("["):
    return list(json.loads(text))
  return [line.strip() for line in text.splitlines() if line.strip()]
