"""The examples a selecting method scored highest and lowest: key, labels, score and the start of the text.

`extremes` ranks the scores; `scored_documents` describes the top and bottom k with the corpus's labellers and texts;
`format_scored_documents` writes them as markdown lines and `scored_documents_section` as the comparison reports'
section.
"""
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from bliss_jax.data.composition import document_of

SNIPPET_CHARS = 100


def extremes(scores: Sequence[float], k: int) -> Tuple[List[int], List[int]]:
  """Indices of the k highest scores (highest first) and of the k lowest (lowest first); ties in index order."""
  s = np.asarray(scores, np.float64)
  k = min(k, len(s))
  order = np.lexsort((np.arange(len(s)), -s))  # by score descending, then index
  low = np.lexsort((np.arange(len(s)), s))
  return [int(i) for i in order[:k]], [int(i) for i in low[:k]]


def snippet(text: Optional[str], chars: int = SNIPPET_CHARS) -> Optional[str]:
  """The text's first `chars` characters with every run of whitespace one space ("…" where cut); None stays None."""
  if text is None:
    return None
  flat = re.sub(r"\s+", " ", text).strip()
  return flat if len(flat) <= chars else flat[:chars] + "…"


def scored_documents(keys: Sequence[str], scores: Sequence[float], k: int, *,
                     labellers: Optional[Mapping[str, Callable[[str], str]]] = None,
                     text_of: Optional[Callable[[str], Optional[str]]] = None) -> Dict[str, List[Dict[str, Any]]]:
  """{"top": [...], "bottom": [...]}: the k highest- and lowest-scored examples (`extremes`), each
  {"key", "score", "labels": {kind: label of its document}, "text": `snippet(text_of(key))`}.

  keys: example keys `doc_id#chunk_index`; labellers: {kind: doc_id -> label} (`data.composition`); text_of: an
  example's text (None where unknown).
  """
  def entry(i):
    doc = document_of(keys[i])
    return {"key": keys[i], "score": float(scores[i]),
            "labels": {kind: label_of(doc) for kind, label_of in (labellers or {}).items()},
            "text": snippet(text_of(keys[i])) if text_of else None}
  top, bottom = extremes(scores, k)
  return {"top": [entry(i) for i in top], "bottom": [entry(i) for i in bottom]}


def _line(e: Mapping[str, Any]) -> str:
  labels = "/".join(v for kind, v in e["labels"].items() if kind != "target")
  text = f': "{e["text"]}"' if e.get("text") is not None else ""
  return f"  - {e['score']:.4g} `{e['key']}`" + (f" ({labels})" if labels else "") + text


def format_scored_documents(by_method: Mapping[str, Mapping[str, Any]]) -> List[str]:
  """Markdown lines: per method, what it scored (`what`, `column`), then its highest- and lowest-scored examples."""
  lines = []
  for m, d in by_method.items():
    n = f", {d['n']:,} candidates" if d.get("n") is not None else ""
    lines.append(f"- {m} ({d.get('what') or 'its candidates'}{n}, score `{d['column']}`), highest:")
    lines += [_line(e) for e in d["top"]]
    lines.append(f"- {m}, lowest:")
    lines += [_line(e) for e in d["bottom"]]
  return lines


def scored_documents_section(by_method: Mapping[str, Mapping[str, Any]], note: str = "") -> List[str]:
  """The reports' section of every scoring method's highest- and lowest-scored examples (none without any); `note`
  follows the heading's text."""
  if not by_method:
    return []
  return ([f"The candidates each scoring method scored highest and lowest{note} (score, example key `doc_id#chunk`, "
           "labels, the example's start):", ""] + format_scored_documents(by_method) + [""])
