#!/usr/bin/env python
r"""Figures of a BLISS pipeline run from its report.json: held-out loss vs the target's training FLOPs (random vs
BLISS), and the quality composition of every round's selection (and the ablations').

  .venv/bin/python scripts/plot_bliss.py --report runs/bliss_cpu/report.json --out_dir docs/figures
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax.report import plots  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--report", required=True)
  p.add_argument("--out_dir", required=True)
  a = p.parse_args()
  if not os.path.exists(a.report):
    sys.exit(f"no report at {a.report}: run scripts/run_pipeline.py --pipeline=bliss first")
  r = json.load(open(a.report))
  os.makedirs(a.out_dir, exist_ok=True)
  steps = r["steps_per_round"] * (r["config"]["rounds"] + 1)
  curves, comps = {}, {}
  for m, res in r["methods"].items():
    if res["curve"]:
      per_step = r["summary"][m]["flops"]["target_training"] / steps
      curves[m] = [(s * per_step, l) for s, l in res["curve"]]
    for x in res["rounds"]:
      fr = x["selection"].get("quality_fractions")
      if fr:
        comps[f"{m} r{x['round']}"] = fr
  random_final = r["summary"].get("random", {}).get("random_final_curve_loss")
  f1 = os.path.join(a.out_dir, "bliss_cpu_loss_vs_flops.png")
  plots.loss_vs_flops(curves, f1, title="BLISS vs random selection (CPU run): held-out clean English",
                      reference=("random's final loss", random_final) if random_final else None)
  f2 = os.path.join(a.out_dir, "bliss_cpu_selection_quality.png")
  plots.composition_bars(comps, f2, title="quality of the selected chunks per round")
  print(f1)
  print(f2)


if __name__ == "__main__":
  main()
