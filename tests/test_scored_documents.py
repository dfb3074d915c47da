"""The highest- and lowest-scored candidates in the comparison's report, on hand-made scores."""
import json
import os

import numpy as np

from bliss_jax.pipelines import compare, method
from bliss_jax.report import scored_documents
from bliss_jax.selection import score_store

LABELS = {"domain": lambda doc: doc.split(":")[0], "quality": lambda doc: "clean",
          "target": lambda doc: "yes" if doc.startswith("docs") else "no"}


def test_extremes_orders_by_score_and_breaks_ties_by_index():
  top, bottom = scored_documents.extremes([0.5, 2.0, -1.0, 2.0, 0.0], 2)
  assert top == [1, 3] and bottom == [2, 4]
  assert scored_documents.extremes([1.0], 3) == ([0], [0])


def test_snippet_flattens_whitespace_and_cuts():
  assert scored_documents.snippet("a\n\n  b\tc ") == "a b c"
  assert scored_documents.snippet("x" * 120, 100) == "x" * 100 + "…"
  assert scored_documents.snippet(None) is None


def test_scored_documents_labels_texts_and_markdown():
  keys = ["docs:a#0", "code:b#1", "docs:c#2", "test_data:d#0"]
  texts = {"docs:a#0": "Return the\nvalue.", "code:b#1": "def f():\n  pass", "docs:c#2": "Spam spam",
           "test_data:d#0": "1 + 1 -> 2"}
  got = scored_documents.scored_documents(keys, [0.25, -3.0, 1.5, 0.0], 1, labellers=LABELS, text_of=texts.get)
  assert got == {
      "top": [{"key": "docs:c#2", "score": 1.5, "labels": {"domain": "docs", "quality": "clean", "target": "yes"},
               "text": "Spam spam"}],
      "bottom": [{"key": "code:b#1", "score": -3.0, "labels": {"domain": "code", "quality": "clean", "target": "no"},
                  "text": "def f(): pass"}]}
  lines = scored_documents.format_scored_documents({"bliss": dict(got, what="round 2's pool", column="bliss", n=4)})
  assert lines == ["- bliss (round 2's pool, 4 candidates, score `bliss`), highest:",
                   '  - 1.5 `docs:c#2` (docs/clean): "Spam spam"',
                   "- bliss, lowest:",
                   '  - -3 `code:b#1` (code/clean): "def f(): pass"']
  bare = scored_documents.scored_documents(keys, [0.0, 1.0, 2.0, 3.0], 1)
  assert bare["top"] == [{"key": "test_data:d#0", "score": 3.0, "labels": {}, "text": None}]
  assert scored_documents.format_scored_documents({"m": dict(bare, column="s")})[1] == "  - 3 `test_data:d#0`"


def _store(tmp_path, keys, scores):
  store = str(tmp_path / "store")
  doc_ids, chunks = zip(*(k.rsplit("#", 1) for k in keys))
  table = score_store.ScoreTable(np.array(doc_ids), np.array([int(c) for c in chunks], np.int32),
                                 {"difference": np.array(scores, np.float32)}, np.full(len(keys), 8, np.int32))
  os.makedirs(store)
  score_store.write_shard(store, 0, 0, table)
  score_store.write_manifest(store, columns=["difference"], complete=True, num_examples=len(keys))
  return store


def test_compare_reads_a_store_keeps_the_candidates_and_renders_them(tmp_path):
  keys = ["docs:a#0", "docs:a#1", "code:b#0", "docs:c#0", "licence:l#0"]
  store = _store(tmp_path, keys, [0.5, 4.0, -2.0, 1.0, -5.0])
  candidates = tmp_path / "candidates.json"
  candidates.write_text(json.dumps(["docs:a#0", "code:b#0", "docs:c#0", "licence:l#0"]))  # docs:a#1 is D_ref
  texts = {k: f"text of {k}" for k in keys}
  got = compare._scored_documents(  # pylint: disable=protected-access
      method.Scores(store, "difference", str(candidates), "the pool less D_ref"), 2, LABELS, texts.get)
  assert got["n"] == 4 and got["what"] == "the pool less D_ref" and got["column"] == "difference"
  assert [e["key"] for e in got["top"]] == ["docs:c#0", "docs:a#0"]
  assert [e["key"] for e in got["bottom"]] == ["licence:l#0", "code:b#0"]
  assert got["bottom"][0] == {"key": "licence:l#0", "score": -5.0, "text": "text of licence:l#0",
                              "labels": {"domain": "licence", "quality": "clean", "target": "no"}}

  row = {"final": {"loss": 4.0, "accuracy": 0.25}, "wall_seconds": 60.0,
         "flops": {"target_training": 1e12, "auxiliary": {}, "auxiliary_total": 0.0}}
  report = {"scale": "hand", "scope": "the machinery; not a gain", "zero_shot_note": None, "pool_composition": None,
            "config": {"train_task": "t", "pool": "t:train", "reference_task": "r", "eval": "r:validation",
                       "eval_tokens": 1000.0, "target_steps": 100, "batch_size": 2, "sequence_length": 8,
                       "target_params": 1234, "target_step_flops": 1e10, "curve_steps": [50, 100],
                       "methods": ["plain", "miniplm"]},
            "methods": {"plain": row, "miniplm": dict(row, scored_documents=got)}}
  md = compare.format_report(report, {})
  assert ("**What this run shows** (100 target steps per method, 1 seed): the machinery; not a gain"
          in md.splitlines())
  start = md.splitlines().index("- miniplm (the pool less D_ref, 4 candidates, score `difference`), highest:")
  assert md.splitlines()[start:start + 6] == [
      "- miniplm (the pool less D_ref, 4 candidates, score `difference`), highest:",
      '  - 1 `docs:c#0` (docs/clean): "text of docs:c#0"',
      '  - 0.5 `docs:a#0` (docs/clean): "text of docs:a#0"',
      "- miniplm, lowest:",
      '  - -5 `licence:l#0` (licence/clean): "text of licence:l#0"',
      '  - -2 `code:b#0` (code/clean): "text of code:b#0"']
