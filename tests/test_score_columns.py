"""Streamed selection rules equal the in-memory ones (ties included); score columns and selections on a chunk store."""
import json
import os

import numpy as np
import pytest

from bliss_jax.data import chunk_manifest
from bliss_jax.selection import rules, score_columns


def _scores(n, seed, ties):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 7, n).astype(np.float32) if ties else rng.normal(size=n).astype(np.float32)


def _index_order(scores, k, **kw):
  blocks = list(rules.iter_top_k_in_index_order(scores, k, **kw))
  return np.concatenate(blocks) if blocks else np.zeros(0, np.int64)


CASES = [(1000, 37, 64), (1000, 0, 7), (513, 513, 100), (50, 10, 1), (64, 5, 1000), (300, 299, 33)]


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("largest", [True, False])
def test_streamed_top_k_equals_top_k_in_score_and_in_index_order(ties, largest):
  for seed, (n, k, block) in enumerate(CASES):
    scores = _scores(n, seed, ties)
    expected = rules.top_k(scores, k, largest=largest)
    np.testing.assert_array_equal(rules.streamed_top_k(scores, k, largest=largest, block_size=block), expected)
    np.testing.assert_array_equal(_index_order(scores, k, largest=largest, block_size=block), np.sort(expected))


def test_index_order_takes_signed_zeros_and_extremes_as_top_k_does():
  scores = np.array([0.0, -0.0, 3e38, -3e38, 0.0, -0.0, 1e-45, -1e-45, 2.5, -2.5], np.float32)
  for k in range(len(scores) + 1):
    for largest in (True, False):
      expected = rules.top_k(scores, k, largest=largest)
      np.testing.assert_array_equal(_index_order(scores, k, largest=largest, block_size=3), np.sort(expected))


@pytest.mark.parametrize("largest", [True, False])
def test_streamed_gumbel_top_k_equals_gumbel_top_k(largest):
  for seed, (n, k, block) in enumerate([(1000, 200, 64), (333, 40, 1), (100, 100, 30)]):
    scores = _scores(n, seed, ties=seed == 0)
    expected = rules.gumbel_top_k(scores, k, temperature=0.5, seed=seed, largest=largest)
    kw = dict(largest=largest, block_size=block, gumbel=(0.5, seed))
    np.testing.assert_array_equal(rules.streamed_top_k(scores, k, **kw), expected)
    np.testing.assert_array_equal(_index_order(scores, k, **kw), np.sort(expected))


def test_streamed_rules_refuse_what_the_rules_refuse():
  with pytest.raises(ValueError, match="non-finite"):
    rules.streamed_top_k(np.array([1.0, np.nan, 2.0]), 1, block_size=2)
  with pytest.raises(ValueError, match="outside"):
    rules.streamed_top_k(np.zeros(3), 4)
  with pytest.raises(ValueError, match="temperature"):
    rules.streamed_top_k(np.zeros(3), 1, gumbel=(0.0, 0))


def _fake_store(directory, n):
  os.makedirs(directory)
  with open(os.path.join(directory, "manifest.json"), "w") as f:
    json.dump({"format": chunk_manifest.FORMAT, "complete": True, "num_records": n, "task": "t", "split": "train",
               "sequence_length": 8}, f)
  return directory


def test_column_selection_from_a_memory_mapped_column(tmp_path):
  store = _fake_store(str(tmp_path / "store"), 1000)
  scores = _scores(1000, 3, ties=True)
  score_columns.write_column(store, "difference", (scores[i:i + 128] for i in range(0, 1000, 128)))
  column = score_columns.read_column(store, "difference")
  assert isinstance(column, np.memmap) and np.array_equal(column, scores)
  chosen = score_columns.select_from_column(store, "difference", fraction=0.2, block_size=100)
  np.testing.assert_array_equal(chosen, rules.top_fraction(scores, 0.2))
  sampled = score_columns.select_from_column(store, "difference", rule="gumbel_top_k", k=50, seed=4, block_size=64)
  np.testing.assert_array_equal(sampled, rules.gumbel_top_k(scores, 50, seed=4))
  blocks = score_columns.select_from_column(store, "difference", fraction=0.2, order="index", block_size=100)
  score_columns.write_selection(store, "top20_by_index", blocks, column="difference", rule="top_k", seed=None,
                                scorer="miniplm", fraction=0.2)
  by_index, provenance = score_columns.read_selection(store, "top20_by_index")
  np.testing.assert_array_equal(by_index, np.sort(chosen))
  assert provenance["k"] == 200
  score_columns.write_selection(store, "top20", chosen, column="difference", rule="top_k", seed=None,
                                scorer="miniplm", fraction=0.2)
  indices, provenance = score_columns.read_selection(store, "top20")
  np.testing.assert_array_equal(indices, chosen)
  assert provenance == {"column": "difference", "rule": "top_k", "k": 200, "seed": None, "scorer": "miniplm",
                        "params": {"fraction": 0.2},
                        "store": {"task": "t", "split": "train", "sequence_length": 8, "num_records": 1000}}
  with pytest.raises(ValueError, match="999 scores for the store's 1000"):
    score_columns.write_column(store, "short", [scores[:999]])
  with pytest.raises(ValueError, match="outside"):
    score_columns.write_selection(store, "bad", [1000], column="difference", rule="top_k", seed=None, scorer="x")
