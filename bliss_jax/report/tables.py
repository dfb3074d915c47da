"""Comparison numbers and tables: steps/FLOPs to reach a loss, markdown tables of per-method rows."""
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple


def steps_to_reach(curve: Sequence[Sequence[float]], loss: float) -> Optional[float]:
  """The first x (step, or FLOPs) of a [(x, loss), ...] curve, sorted by x, whose loss is at or below `loss`; None
  if the curve never gets there."""
  return next((x for x, l in sorted(curve) if l <= loss), None)


def speedup(curve: Sequence[Sequence[float]], baseline: Sequence[Sequence[float]]) -> Optional[float]:
  """How many times fewer x (steps or FLOPs) `curve` needs to reach `baseline`'s final loss than `baseline` needed:
  x_final(baseline) / x_reach(curve); None if it never reaches it."""
  if not baseline:
    return None
  x_final, final = sorted(baseline)[-1]
  reach = steps_to_reach(curve, final)
  return x_final / reach if reach else None


Column = Tuple[str, str, Callable[[Any], str]]


def fmt(spec: str) -> Callable[[Any], str]:
  """A cell formatter: `format(value, spec)`, "—" for None."""
  return lambda v: "—" if v is None else format(v, spec)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
  """A markdown table: one line per row, columns (key, header, formatter); a missing key is "—"."""
  head = "| " + " | ".join(h for _, h, _ in columns) + " |"
  rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
  body = ["| " + " | ".join(f(r.get(k)) for k, _, f in columns) + " |" for r in rows]
  return "\n".join([head, rule] + body)
