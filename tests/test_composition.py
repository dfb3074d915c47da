"""Tests for bliss_jax.data.composition (fractions by hand) and the compositions gin names
(`configurables.selection_reporter`, `configurables.compare`)."""
import gin
import pytest

from bliss_jax.data import composition

KEYS = ["pydoc:a#0", "pydoc:a#1", "stdlib:x.py:f#0", "stdlib:y.py:<module>#3"]


def test_label_fractions_count_examples_not_documents():
  prefix = lambda d: d.split(":", 1)[0]
  assert [composition.document_of(k) for k in KEYS[:3]] == ["pydoc:a", "pydoc:a", "stdlib:x.py:f"]
  assert composition.label_totals(map(composition.document_of, KEYS), prefix) == {"pydoc": 2, "stdlib": 2}
  assert composition.composition(KEYS, {"domain": prefix}) == {"n": 4, "by_domain": {"pydoc": 0.5, "stdlib": 0.5}}
  assert composition.composition(KEYS, composition.doc_prefix_labellers()) == composition.composition(
      KEYS, {"domain": prefix})
  labellers = {"domain": prefix, "target": lambda d: "yes" if d.startswith("pydoc") else "no"}
  assert composition.composition(KEYS, labellers) == {"n": 4, "by_domain": {"pydoc": 0.5, "stdlib": 0.5},
                                                      "target_fraction": 0.5}
  assert composition.composition(KEYS[2:], labellers)["target_fraction"] == 0.0
  assert composition.composition([], labellers) == {"n": 0, "by_domain": {}, "target_fraction": None}


def test_weighted_composition():
  weight = {"a": 3, "b": 1, "z": 0}.get
  labellers = {"letter": str.upper, "target": lambda d: "yes" if d == "a" else "no"}
  c = composition.composition_of_documents(["b", "a", "b"], labellers, weight)
  assert c == {"n": 3, "by_letter": {"A": 3 / 5, "B": 2 / 5}, "target_fraction": 3 / 5}
  assert list(c["by_letter"]) == ["A", "B"]  # labels sorted
  assert composition.label_totals(["b", "a", "b"], str.upper, weight) == {"A": 3, "B": 2}
  # Nothing weighed: fractions 0, no target share.
  assert composition.composition_of_documents(["z"], labellers, weight) == {"n": 1, "by_letter": {"Z": 0.0},
                                                                            "target_fraction": None}


def test_compositions_named_in_gin(monkeypatch):
  from bliss_jax import configurables  # pylint: disable=g-import-not-at-top
  from bliss_jax.pipelines import compare  # pylint: disable=g-import-not-at-top
  assert configurables.selection_reporter(None) is None
  doc_prefix = configurables.selection_reporter("doc_prefix")
  assert doc_prefix.document_report is None and composition.composition(KEYS, doc_prefix.labellers())["n"] == 4
  with pytest.raises(ValueError, match="composition='nope'"):
    configurables.selection_reporter("nope")
  calls = []
  monkeypatch.setattr(compare, "run", lambda **kw: calls.append(kw))
  gin.clear_config()
  try:
    gin.parse_config(["compare.root = '/nonexistent'", "compare.composition = 'doc_prefix'"])
    assert gin.query_parameter("compare.root") == "/nonexistent"
    with pytest.raises(ValueError, match="no_such_argument"):  # bindings are checked against compare.run's
      gin.parse_config(["compare.no_such_argument = 1"])
    gin.get_configurable("compare")()
  finally:
    gin.clear_config()
  assert calls[0]["root"] == "/nonexistent"
  assert isinstance(calls[0]["composition"], composition.SelectionReporter)
  assert calls[0]["composition"].document_report is None
