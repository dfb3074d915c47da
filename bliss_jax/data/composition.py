"""The composition of a set of examples by the labels of their documents: per kind of label, each label's share of
the examples (or of a weight such as characters), and the share of target-like examples.

An example key is ``doc_id#chunk_index`` (``data.keyed.example_keys``); a labeller maps a document id to a label. Tokens
of packed batches are counted by document (``token_counts_by_document``, their documents from
``data.keyed.replay_packed_batches``) and weigh as tokens (``composition_of_token_counts``).
The labels are the corpus's own (e.g. ``data.benchmark.catalog.catalog_labellers``), so a pipeline that reports
what it selected is given them (``SelectionReporter``) and knows no corpus.
"""
import dataclasses
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

Labeller = Callable[[str], str]
Labellers = Mapping[str, Labeller]
# The labeller kind whose "yes" share is reported as "target_fraction" rather than as fractions by label.
TARGET = "target"


def document_of(key: str) -> str:
  """The document id of an example key ``doc_id#chunk_index``."""
  return key.rsplit("#", 1)[0]


def label_totals(docs: Iterable[str], label_of: Labeller,
                 weight_of: Optional[Callable[[str], Union[int, float]]] = None) -> Dict[str, Union[int, float]]:
  """``{label: the number of docs under it}`` (``weight_of``: the sum of their weights instead), labels sorted.
  ``docs`` holds one document id per counted item, repeated as often as it is counted."""
  totals: Dict[str, Union[int, float]] = {}
  for doc in docs:
    label = label_of(doc)
    totals[label] = totals.get(label, 0) + (1 if weight_of is None else weight_of(doc))
  return dict(sorted(totals.items()))


def composition_of_documents(docs: Sequence[str], labellers: Labellers,
                             weight_of: Optional[Callable[[str], Union[int, float]]] = None) -> Dict[str, Any]:
  """``{"n", "by_<kind>": {label: fraction}, ..., "target_fraction"}`` of ``docs`` (one document id per item).

  A fraction is a label's total over all labels' (``label_totals``; 0.0 each where that is 0). The labeller
  ``TARGET`` ("yes"/"no") gives ``"target_fraction"``, the "yes" share (None where the total is 0, e.g. no docs),
  instead of ``"by_target"``. Keys follow ``labellers``' order.
  """
  out: Dict[str, Any] = {"n": len(docs)}
  for kind, label_of in labellers.items():
    totals = label_totals(docs, label_of, weight_of)
    whole = sum(totals.values())
    if kind == TARGET:
      out["target_fraction"] = totals.get("yes", 0) / whole if whole else None
    else:
      out[f"by_{kind}"] = {label: t / whole if whole else 0.0 for label, t in totals.items()}
  return out


def composition(keys: Sequence[str], labellers: Labellers) -> Dict[str, Any]:
  """``composition_of_documents`` of example keys (``doc_id#chunk_index``), counted per example: a document weighs
  as many times as it has keys."""
  return composition_of_documents([document_of(k) for k in keys], labellers)


def token_counts_by_document(segment_ids: np.ndarray, segment_docs: Sequence[Sequence[str]], mask: np.ndarray,
                             counts: Optional[Dict[str, int]] = None) -> Dict[str, int]:
  """``{doc_id: the positions of mask in its segments}`` of a packed batch, added to ``counts`` (a new dict if None).

  ``segment_ids``: [B, T], 0 on padding; ``segment_docs[b][s - 1]``: the document of row b's segment s; ``mask``:
  [B, T] bool (the tokens a selection kept, or every loss-carrying one). Padding (segment 0) is never counted.
  """
  counts = {} if counts is None else counts
  for ids, docs, keep in zip(np.asarray(segment_ids), segment_docs, np.asarray(mask, bool)):
    for s, n in zip(*np.unique(ids[keep & (ids > 0)], return_counts=True)):
      counts[docs[s - 1]] = counts.get(docs[s - 1], 0) + int(n)
  return counts


def composition_of_token_counts(counts: Mapping[str, int], labellers: Labellers) -> Dict[str, Any]:
  """``composition_of_documents`` of tokens: each document weighs its count; ``"n"`` is the number of tokens."""
  return dict(composition_of_documents(sorted(counts), labellers, weight_of=counts.__getitem__),
              n=sum(counts.values()))


def doc_prefix_labellers() -> Dict[str, Labeller]:
  """``{"domain": the document id up to its first ":"}``, e.g. the embedded corpus's ``pydoc`` / ``stdlib``."""
  return {"domain": lambda doc: doc.split(":", 1)[0]}


@dataclasses.dataclass(frozen=True)
class SelectionReporter:
  """How a pipeline describes a selection of example keys on a corpus it does not know.

  Attributes:
    labellers: ``() -> {kind: doc_id -> label}`` for ``composition``; called when a composition is counted (a
      catalog may take a while to build).
    document_report: ``(keys, base_split) -> (report, markdown)``: the selection's per-document report against the
      split it was chosen from (a JSON-able dict and its text); None where the corpus has none.
    document_text: ``doc_id -> its text`` (None for an unknown id), to show the documents a method scored highest
      and lowest; None where the corpus gives none.
  """
  labellers: Callable[[], Labellers]
  document_report: Optional[Callable[[Sequence[str], Optional[str]], Tuple[Dict[str, Any], str]]] = None
  document_text: Optional[Callable[[str], Optional[str]]] = None
