"""A comparison over seeds: the per-seed comparison reports (`pipelines.compare`, one report.json per seed) folded into
one aggregate report and its report.md.

Per method: the mean and 95% interval (`intervals.mean_interval`) of every numeric value of `final` (held-out loss and
accuracy, and any further held-out set's `loss@<set>` / `accuracy@<set>`) and of every zero-shot metric; the paired
difference of each final value to plain's and to random's on the same seed (`intervals.paired_interval`); the curve
as the mean and the min–max band over the seeds at each step; wall time of its own stages per seed; what it selected,
averaged. Stages shared by several methods or seeds are listed once, with the methods that use them. Then the
papers' claims (`claims.PAPER_CLAIMS`) judged on the paired intervals. The run's scope line and seed 0's highest- and
lowest-scored candidates per scoring method are carried over as they are.
"""
from typing import Dict, List, Mapping, Optional, Sequence

from bliss_jax.report import claims as claims_lib
from bliss_jax.report import composition_text, intervals, tables
from bliss_jax.report import scored_documents as scored_documents_lib

BASELINES = ("plain", "random")
CURVE_X = ("step", "target_flops", "total_flops")


def band_label(seeds: int) -> str:
  """What the figures' bands are."""
  return f"min–max over {seeds} seeds"


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def mean_over(trees: Sequence[Mapping], missing: Optional[float] = None) -> dict:
  """Each numeric leaf's mean over `trees` (nested dicts of one shape; a leaf a tree lacks counts as `missing`, or is
  left out when None); any other leaf as the first tree that has it gives it."""
  out = {}
  for k in dict.fromkeys(k for t in trees for k in t):
    vals = [v for v in (t.get(k, missing) for t in trees) if v is not None]
    if vals and all(isinstance(v, Mapping) for v in vals):
      out[k] = mean_over(vals, missing)
    elif vals and all(_is_number(v) for v in vals):
      out[k] = sum(vals) / len(vals)
    else:
      out[k] = vals[0] if vals else None
  return out


def intervals_over(trees: Sequence[Mapping], skip: Sequence[str] = ()) -> dict:
  """The same nested shape with each numeric leaf (keys in `skip` left out) replaced by its interval over `trees`
  (`Interval.asdict()`); other leaves dropped."""
  out = {}
  for k in dict.fromkeys(k for t in trees for k in t):
    vals = [t[k] for t in trees if t.get(k) is not None]
    if k in skip or not vals:
      continue
    if all(isinstance(v, Mapping) for v in vals):
      out[k] = intervals_over(vals)
    elif all(_is_number(v) for v in vals):
      out[k] = intervals.mean_interval(vals).asdict()
  return out


def curve_band(curves: Sequence[Sequence[Mapping]]) -> List[dict]:
  """One curve from the seeds' curves (same steps): at each point the steps and FLOPs, and per numeric value its
  "mean", "min" and "max" over the seeds."""
  steps = [[p["step"] for p in c] for c in curves]
  if any(s != steps[0] for s in steps):
    raise ValueError(f"the seeds' curves have different steps: {steps}")
  out = []
  for points in zip(*curves):
    keys = [k for k in points[0] if k not in CURVE_X and _is_number(points[0][k])]
    out.append({**{x: sum(p[x] for p in points) / len(points) for x in CURVE_X if x in points[0]},
                "mean": {k: sum(p[k] for p in points) / len(points) for k in keys},
                "min": {k: min(p[k] for p in points) for k in keys},
                "max": {k: max(p[k] for p in points) for k in keys}})
  return out


def _final_values(rows: Sequence[Mapping], key: str) -> Dict[int, float]:
  return {s: r["final"][key] for s, r in enumerate(rows) if _is_number(r["final"].get(key))}


def method_row(rows: Sequence[Mapping], baselines: Mapping[str, Sequence[Mapping]]) -> dict:
  """A method's aggregate from its per-seed rows (report.json `methods[m]` of seed 0, 1, ...) and the baselines'."""
  finals = [r["final"] for r in rows]
  metrics = [k for k in finals[0] if k != "step" and _is_number(finals[0][k])]
  zero_shot = [r["zero_shot"] for r in rows if r.get("zero_shot")]
  row = {"pipeline": rows[0]["pipeline"], "n": len(rows), "final": mean_over(finals),
         "final_ci": intervals_over(finals, skip=("step",)),
         "zero_shot": mean_over(zero_shot) if zero_shot else None,
         "zero_shot_ci": intervals_over(zero_shot) if zero_shot else None,
         "curve": curve_band([r["curve"] for r in rows]), "flops": rows[0]["flops"],
         "wall_seconds": intervals.mean_interval([r["wall_seconds"] for r in rows]).asdict(),
         "eval_seconds": sum(r.get("eval_seconds", 0.0) for r in rows),
         "per_seed": [{"seed": s, "final": r["final"], "zero_shot": r.get("zero_shot"),
                       "wall_seconds": r["wall_seconds"], "speedup_steps": r.get("speedup_steps"),
                       "speedup_flops": r.get("speedup_flops")} for s, r in enumerate(rows)]}
  for name, base in baselines.items():
    row[f"vs_{name}"] = {k: intervals.paired_interval(_final_values(rows, k), _final_values(base, k)).asdict()
                         for k in metrics}
  selections = [r["selection"] for r in rows if r.get("selection")]
  if selections:
    row["selection"] = mean_over(selections, missing=0.0)
  kept_tokens = [r["token_selection"] for r in rows if r.get("token_selection")]
  if kept_tokens:
    row["token_selection"] = mean_over(kept_tokens, missing=0.0)
  return row


def judge_claims(seed_reports: Sequence[Mapping], claims: Sequence[claims_lib.Claim]) -> List[dict]:
  """Each claim whose two methods ran, judged on the seeds (`claims.judge`), with the step the method was read at."""
  out = []
  num_steps = seed_reports[0]["config"]["target_steps"]
  for c in claims:
    rows = [r["methods"] for r in seed_reports]
    if c.method not in rows[0] or c.comparator not in rows[0]:
      continue
    curve = rows[0][c.method]["curve"]
    step = claims_lib.step_at_fraction([p["step"] for p in curve], num_steps, c.at_fraction)
    if step is None:
      continue
    at = {s: next(p[c.metric] for p in r[c.method]["curve"] if p["step"] == step) for s, r in enumerate(rows)}
    base = {s: r[c.comparator]["final"][c.metric] for s, r in enumerate(rows)}
    out.append(dict(claims_lib.judge(c, at, base), step=step, comparator_step=num_steps))
  return out


def aggregate(seed_reports: Sequence[Mapping], seed_dirs: Sequence[str],
              claims: Sequence[claims_lib.Claim] = claims_lib.PAPER_CLAIMS) -> dict:
  """The aggregate report of a comparison from its per-seed reports (in seed order) kept in `seed_dirs` (relative to
  the aggregate's root)."""
  first = seed_reports[0]
  methods = first["config"]["methods"]
  per_method = {m: [r["methods"][m] for r in seed_reports] for m in methods}
  baselines = {b: per_method[b] for b in BASELINES if b in per_method}
  rows = {m: method_row(per_method[m], {b: v for b, v in baselines.items() if b != m}) for m in methods}
  shared = {}
  for r in seed_reports:
    shared.update(r.get("shared_stages") or {})
  own = sum(r["wall_seconds"] + r.get("eval_seconds", 0.0) for rs in per_method.values() for r in rs)
  config = {k: v for k, v in first["config"].items() if k not in ("seed", "target_seed")}
  scored = {m: r["scored_documents"] for m, r in first["methods"].items() if r.get("scored_documents")}
  return {"scale": first["scale"], "scope": first.get("scope") or "", "seeds": len(seed_reports),
          "target_seeds": [r["config"].get("target_seed") for r in seed_reports], "seed_reports": list(seed_dirs),
          "band": band_label(len(seed_reports)), "level": intervals.LEVEL, "methods": rows,
          "claims": judge_claims(seed_reports, claims),
          "shared_stages": dict(sorted(shared.items())),
          "wall_seconds_total": own + sum(s["seconds"] for s in shared.values()),
          "pool_composition": first.get("pool_composition"), "stream_composition": first.get("stream_composition"),
          "zero_shot_note": first.get("zero_shot_note"), "scored_documents": scored,
          "config": config}


# --- report.md ---

def shared_stage_lines(shared: Mapping[str, Mapping]) -> List[str]:
  """One markdown item per shared stage: its path, minutes and the methods that use it."""
  return [f"- `{path}`: {s['seconds'] / 60:.1f} min, used by {', '.join(s['methods'])}" for path, s in shared.items()]


def _cell(interval: Optional[Mapping], spec: str, bounds: bool = False) -> str:
  """"mean ± half-width", or with `bounds` "mean [low, high]"; "mean" alone with one seed, "—" without a value."""
  if not interval or interval.get("mean") is None:
    return "—"
  mean = format(interval["mean"], spec)
  if interval.get("low") is None:
    return mean
  if bounds:
    return f"{mean} [{format(interval['low'], spec)}, {format(interval['high'], spec)}]"
  return f"{mean} ± {format(interval['half_width'], spec.lstrip('+'))}"


def _loss_keys(rows: Mapping[str, Mapping]) -> List[str]:
  first = next(iter(rows.values()))
  return [k for k in first["final_ci"] if k == "loss" or k.startswith("loss@")]


def scope_lines(scope: Optional[str], target_steps: int, seeds: int) -> List[str]:
  """The reports' opening line of what the run shows (none without a scope)."""
  if not scope:
    return []
  return [f"**What this run shows** ({target_steps} target steps per method, {seeds} seed{'s' * (seeds > 1)}): "
          f"{scope}", ""]


def heldout_sets_text(cfg: Mapping) -> str:
  """The held-out sets as the report's header names them: `task:split` (estimator, tokens), the primary first."""
  sets = cfg.get("eval_sets") or [{"name": None, "eval": cfg["eval"], "eval_sample": cfg.get("eval_sample"),
                                   "eval_tokens": cfg["eval_tokens"]}]
  named = len(sets) > 1
  text = "; ".join(f"{'`' + s['name'] + '` = ' if named else ''}`{s['eval']}` "
                   f"({s.get('eval_sample') or 'whole split'}, {s['eval_tokens']:,.0f} tokens"
                   f"{', unigram entropy %.3f nats' % s['unigram_entropy'] if s.get('unigram_entropy') else ''})"
                   for s in sets)
  return f"sets {text}; the first is the primary (speedups, figures)" if named else text


def format_report(report: Mapping, figures: Mapping[str, str]) -> str:
  """report.md of the aggregate: the table with intervals, the paired differences, the claims, wall time, figures."""
  cfg, rows, n = report["config"], report["methods"], report["seeds"]
  level = f"{100 * report['level']:g}%"
  lines = [f"# Comparison{' (' + report['scale'] + ')' if report['scale'] else ''}, {n} seed{'s' * (n > 1)}", ""]
  lines += scope_lines(report.get("scope"), cfg["target_steps"], n)
  lines += [f"Target: {cfg['target_params']:,} parameters, {cfg['target_steps']} steps of {cfg['batch_size']} × "
            f"{cfg['sequence_length']} tokens for every method ({cfg['target_step_flops'] * cfg['target_steps']:.3g} "
            f"target-training FLOPs each). Stream `{cfg['train_task']}`, candidates `{cfg['pool']}`, reference "
            f"`{cfg['reference_task']}`; held-out {heldout_sets_text(cfg)}.", "",
            f"Seeds: the target's seed {', '.join(str(s) for s in report['target_seeds'])} (its initialisation and "
            "data order, and the selection rounds' draws); the small and large models, their scores and selections "
            "are shared by every seed. " + (f"Values are means ± the half-width of the {level} Student-t interval "
                                            "over the seeds." if n > 1 else
                                            "One seed: values of one run, no interval (an example, not a result)."),
            ""]
  metrics = [k for k in next(iter(rows.values()))["final_ci"]]
  table = [dict({"method": m, "aux": r["flops"]["auxiliary_total"],
                 "target_share": (r.get("selection") or {}).get("target_fraction"),
                 "minutes": r["wall_seconds"]["mean"] / 60 if r["wall_seconds"]["mean"] is not None else None},
                **{k: r["final_ci"].get(k) for k in metrics}) for m, r in rows.items()]
  selected = any(t["target_share"] is not None for t in table)
  columns = ([("method", "method", str)] + [(k, f"held-out {k}", lambda v: _cell(v, ".4f")) for k in metrics] +
             [("aux", "auxiliary FLOPs", tables.fmt(".3g"))] +
             [("target_share", "target-like share selected", tables.fmt(".3f"))] * selected +
             [("minutes", "wall min (own stages, per seed)", tables.fmt(".1f"))])
  lines += [tables.markdown_table(table, columns), "",
            "Held-out values at the last step. Auxiliary FLOPs: everything but the target's own training, the same "
            "for every seed (by item in the per-seed reports, below, with the steps and FLOPs to plain's final loss "
            "and what each selecting method kept); the target-like share selected is the mean over the seeds.", ""]

  losses = _loss_keys(rows)
  diffs = [dict({"method": m}, **{f"{b}/{k}": r.get(f"vs_{b}", {}).get(k) for b in BASELINES for k in losses})
           for m, r in rows.items()]
  dcols = [("method", "method", str)] + [(f"{b}/{k}", f"{k} − {b}'s", lambda v: _cell(v, "+.4f", bounds=True))
                                         for b in BASELINES for k in losses if b in rows]
  lines += [f"Paired differences to plain and to random, seed by seed (method − baseline, nats; mean and {level} "
            "interval; negative = lower loss than the baseline):", "", tables.markdown_table(diffs, dcols), ""]

  if report["claims"]:
    crows = [{"claim": c["claim"], "source": c["source"], "step": c["step"], "d": c["difference"],
              "verdict": c["verdict"]} for c in report["claims"]]
    lines += [f"The papers' claims, judged on the paired {level} interval of the difference in held-out loss "
              "(lower is better): holds = the interval lies on the claimed side of 0, fails = on the other side, "
              "inconclusive = it contains 0 or there is one seed. \"No higher than\" (≥ claims) has margin 0: "
              "without a margin fixed in advance it is shown only by showing the method better "
              "(`report/claims.py`).", "",
              tables.markdown_table(crows, [("claim", "claim", str), ("source", "paper", str),
                                            ("step", "method's step", tables.fmt("g")),
                                            ("d", "difference", lambda v: _cell(v, "+.4f", bounds=True)),
                                            ("verdict", "verdict", str)]), ""]

  composition = composition_text.composition_lines(rows, report.get("pool_composition"),
                                                    report.get("stream_composition"))
  if composition:
    lines += ["Compositions (a selection's: the mean over the seeds; the data's: the same for every seed):", ""]
    lines += composition
  lines += scored_documents_lib.scored_documents_section(report.get("scored_documents") or {},
                                                        " (seed 0's scores)" if n > 1 else "")
  zs = {m: r["zero_shot_ci"] for m, r in rows.items() if r.get("zero_shot_ci")}
  if zs:
    keys = [(t, k) for t, vals in next(iter(zs.values())).items() for k in vals if not k.endswith("_stderr")]
    zrows = [dict({"method": m}, **{f"{t}/{k}": z.get(t, {}).get(k) for t, k in keys}) for m, z in zs.items()]
    lines += ["Zero-shot (the harness):", "",
              tables.markdown_table(zrows, [("method", "method", str)] +
                                    [(f"{t}/{k}", f"{t} {k}", lambda v: _cell(v, ".4f")) for t, k in keys]), ""]
  if report.get("zero_shot_note"):
    lines += [report["zero_shot_note"], ""]

  lines += [f"Wall time: {report['wall_seconds_total'] / 60:.1f} min in the comparison's stages, each counted once "
            "with every attempt of a resumed stage (time outside stages — start-up, compilation outside them, the "
            "pipelines' own summaries — is not counted). Per method above: its own stages (those no other method or "
            "seed uses), mean per seed; held-out curves and zero-shot evaluation not included. Shared stages, "
            "counted once here and in no method's minutes:", ""]
  lines += shared_stage_lines(report["shared_stages"]) + [""]
  lines += ["Per-seed reports: " + ", ".join(f"[{d}]({d}/report.md)" for d in report["seed_reports"]), ""]
  lines += [f"![{name}]({path})" for name, path in figures.items()]
  return "\n".join(lines) + "\n"
