#!/usr/bin/env python
r"""One method's results in two comparison roots run with different settings, paired by seed.

  python scripts/paired_roots.py runs/bilevel_variants/paper runs/bilevel_variants/single --method bliss

Reads ROOT/seed_<s>/report.json of both roots (`scripts/compare.py` writes them), takes the seeds both have, and
prints for each held-out metric the method's value per seed in each root and the paired difference (second root −
first) with its 95% Student-t interval over the seeds, then what each root's selection kept of the target-like
domain. Use it for a variant of one method (a solver, a schedule) against the default on the same seeds: every stage
that does not depend on the variant is identical in the two roots, so the pairing cancels the target's chance.
Prints the gin bindings only one root's config.gin has, so the table says what differed.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax.report import intervals  # noqa: E402


def seed_reports(root: str) -> dict:
  """{seed: report.json} of the seed directories under `root`."""
  out = {}
  for name in os.listdir(root):
    path = os.path.join(root, name, "report.json")
    if name.startswith("seed_") and name[5:].isdigit() and os.path.exists(path):
      with open(path) as f:
        out[int(name[5:])] = json.load(f)
  return out


def config_lines(root: str) -> set:
  path = os.path.join(root, "config.gin")
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    return {line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")}


def main(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("root_a")
  p.add_argument("root_b")
  p.add_argument("--method", required=True)
  a = p.parse_args(argv)
  reports = [seed_reports(r) for r in (a.root_a, a.root_b)]
  seeds = sorted(s for s in set(reports[0]) & set(reports[1])
                 if a.method in reports[0][s]["methods"] and a.method in reports[1][s]["methods"])
  if not seeds:
    raise SystemExit(f"no seed has a finished report with method {a.method!r} in both {a.root_a} and {a.root_b}")
  finals = [{s: r[s]["methods"][a.method]["final"] for s in seeds} for r in reports]
  metrics = [k for k, v in finals[0][seeds[0]].items() if k != "step" and isinstance(v, (int, float))]
  only = [sorted(config_lines(x) - config_lines(y)) for x, y in ((a.root_a, a.root_b), (a.root_b, a.root_a))]
  for root, lines in zip((a.root_a, a.root_b), only):
    print(f"only in {root}/config.gin: " + ("; ".join(lines) if lines else "(nothing)"))
  print(f"method {a.method}, seeds {seeds}; difference = {a.root_b} − {a.root_a}, mean and 95% t interval")
  print(f"{'metric':<16} {'per seed (first root)':<30} {'per seed (second root)':<30} difference")
  for k in metrics:
    x, y = ({s: f[s][k] for s in seeds} for f in finals)
    d = intervals.paired_interval(y, x)
    bounds = f" [{d.low:+.4f}, {d.high:+.4f}]" if d.low is not None else ""
    print(f"{k:<16} {' '.join(f'{x[s]:.4f}' for s in seeds):<30} {' '.join(f'{y[s]:.4f}' for s in seeds):<30} "
          f"{d.mean:+.4f}{bounds}")
  for root, r in zip((a.root_a, a.root_b), reports):
    shares = [r[s]["methods"][a.method].get("selection", {}).get("target_fraction") for s in seeds]
    print(f"target-like share selected in {root}: " + " ".join("-" if v is None else f"{v:.3f}" for v in shares))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
