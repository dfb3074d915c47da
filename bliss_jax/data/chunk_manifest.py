"""The chunk store's files and manifest (format, paths, the identity a reuse must match), readable without SeqIO or
TensorFlow: what score columns and selections over a store need (``data/chunk_store.py`` writes and reads chunks)."""
import json
import os
from typing import Any, Dict, List

FORMAT = "bliss_jax.chunks/2"
IDENTITY = ("task", "split", "sequence_length", "task_feature_lengths", "vocabulary", "seed", "shards")


def shard_path(store_dir: str, shard: int) -> str:
  return os.path.join(store_dir, f"chunks-{shard:05d}.array_record")


def lengths_path(store_dir: str, shard: int) -> str:
  return os.path.join(store_dir, f"chunks-{shard:05d}.lengths.npy")


def count_path(store_dir: str, shard: int) -> str:
  return os.path.join(store_dir, f"chunks-{shard:05d}.json")


def atomic_json(path: str, value: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def check_identity(store_dir: str, manifest: Dict[str, Any], wanted: Dict[str, Any]) -> None:
  differ = [k for k in IDENTITY if manifest.get(k) != wanted.get(k)]
  if differ:
    detail = "; ".join(f"{k}: stored {manifest.get(k)!r}, asked {wanted.get(k)!r}" for k in differ)
    raise ValueError(f"chunk store {store_dir} holds other chunks ({detail}); use another directory")


def read_manifest(store_dir: str) -> Dict[str, Any]:
  path = os.path.join(store_dir, "manifest.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: not a chunk store (or its write never started)")
  manifest = read_json(path)
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  return manifest


def finished_shards(store_dir: str, num_shards: int) -> List[int]:
  """The shards whose ArrayRecord file exists (renamed into place only when complete)."""
  return [k for k in range(num_shards) if os.path.exists(shard_path(store_dir, k))]
