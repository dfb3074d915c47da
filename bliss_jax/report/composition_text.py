"""report.md's lines on compositions: what each selecting method kept, what the stream and the candidate pool hold,
and which documents the tokens of a token-selecting method (RHO-1) came from, by domain and by quality.

The rows are report.json's `methods` (one seed's, or the means over seeds: the same shape); a composition is
`data.composition.composition`'s dict (`by_domain`, `by_quality`, `target_fraction`, `n`).
"""
from typing import List, Mapping, Optional


def same_composition(a: Mapping, b: Mapping) -> bool:
  """Whether two compositions have the same fractions, whatever their sizes."""
  return {k: v for k, v in a.items() if k != "n"} == {k: v for k, v in b.items() if k != "n"}


def token_selection_lines(rows: Mapping[str, dict], kind: str) -> List[str]:
  """Which `kind` labels the tokens of token-selecting methods (RHO-1) came from."""
  tok = {m: r["token_selection"] for m, r in rows.items()
         if r.get("token_selection") and f"by_{kind}" in r["token_selection"]["all"]}
  if not tok:
    return []
  lines = [f"Which tokens the token-selecting methods kept, by {kind}: fraction of the kept tokens (of all loss-carrying "
           "tokens of the same batches in brackets), on the training batches that followed the student's checkpoints "
           "at steps " + "; ".join(f"{m}: {', '.join(map(str, t['steps']))}" for m, t in tok.items()) +
           ", the selection recomputed after training with that checkpoint and the reference model:", ""]
  for m, t in tok.items():
    kept, every = t["kept"][f"by_{kind}"], t["all"][f"by_{kind}"]
    line = f"- {m}: " + ", ".join(f"{k} {kept.get(k, 0.0):.3f} ({v:.3f})" for k, v in every.items())
    if kind == "domain" and t["all"].get("target_fraction") is not None:
      line += f"; target-like {t['kept']['target_fraction'] or 0.0:.3f} ({t['all']['target_fraction']:.3f})"
    lines.append(line)
  return lines + [""]


def composition_lines(rows: Mapping[str, dict], pool: Optional[Mapping], stream: Optional[Mapping]) -> List[str]:
  """By domain and by quality: each selecting method's selection next to the candidate pool and the stream, the
  token-selecting methods' kept tokens, the target-like shares, and whether stream and pool are one composition."""
  data = [(what, c) for what, c in (("candidate pool", pool), ("stream", stream)) if c]
  lines = []
  for kind in ("domain", "quality"):
    sel_lines = [f"- {m}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["selection"][f"by_{kind}"].items())
                 for m, r in rows.items() if r.get("selection") and f"by_{kind}" in r["selection"]]
    data_lines = [f"- {what}: " + ", ".join(f"{k} {v:.3f}" for k, v in c[f"by_{kind}"].items())
                  for what, c in data if f"by_{kind}" in c]
    if sel_lines:
      lines += [f"What the selecting methods kept, by {kind} (fraction of selected examples; random and BLISS: "
                "rounds 1 onwards, round 0 being a shared random selection), and the data they read:", ""]
    elif data_lines:
      lines += [f"The data, by {kind} (fraction of examples):", ""]
    if sel_lines or data_lines:
      lines += sel_lines + data_lines + [""]
    lines += token_selection_lines(rows, kind)
  shares = [(what, c["target_fraction"]) for what, c in data if c.get("target_fraction") is not None]
  if shares:
    lines += ["Target-like share of the " + "; of the ".join(f"{what}: {v:.3f}" for what, v in shares) +
              " (of examples; \"target-like share selected\" likewise).", ""]
  if len(data) == 2:
    lines += [("Stream and candidate pool have the same composition." if same_composition(data[0][1], data[1][1])
               else "Stream and candidate pool differ in composition (above): the selecting methods' difference to "
               "plain includes it; random selection is their like-for-like baseline."), ""]
  return lines
