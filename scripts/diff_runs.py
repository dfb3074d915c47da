#!/usr/bin/env python
r"""Compare what two run roots recorded: every report.json, stage.json and heldout.json under the first root against
the same file under the second, wall times (and stages' attempts) and the roots' own paths left out. Prints each
changed value and each field only one side has, then a count; exit status 1 when a value differs or a file is missing.

  python scripts/diff_runs.py runs/compare_smoke /tmp/compare_smoke_again
  python scripts/diff_runs.py runs/compare_smoke /tmp/compare_smoke_again --rtol 1e-4 --atol 1e-6

Use it to check that a change leaves results bit-identical (same seed, same config) or to see what a rerun changed.
With --rtol / --atol, two numbers a, b count as equal when |a - b| <= atol + rtol |b| (numpy's `isclose`): the
numbers that differ within that tolerance are counted apart, with the largest relative difference among them, so a
change that only reorders float sums can be checked to a stated tolerance.
"""
import argparse
import json
import math
import os
import sys

RECORDS = ("report.json", "stage.json", "heldout.json")
VOLATILE = ("wall_seconds", "eval_seconds", "wall_seconds_total", "seconds", "attempts", "tokens_per_sec")


def _normalised(x, root):
  if isinstance(x, dict):
    return {k: _normalised(v, root) for k, v in x.items() if k not in VOLATILE}
  if isinstance(x, list):
    return [_normalised(v, root) for v in x]
  if isinstance(x, str):
    return x.replace(os.path.abspath(root), "<root>")
  return x


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def relative_difference(a: float, b: float) -> float:
  """|a - b| / max(|a|, |b|) of two finite numbers, 0 when they are equal."""
  return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))


def differences(a, b, path="", rtol=0.0, atol=0.0):
  """[(path, kind, detail)] of the differences between two JSON values; kind: "changed", "only_a", "only_b", and
  "close" for two numbers that differ within |a - b| <= atol + rtol |b| (detail: their relative difference)."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      if k not in b:
        out.append((f"{path}/{k}", "only_a", ""))
      elif k not in a:
        out.append((f"{path}/{k}", "only_b", ""))
      else:
        out += differences(a[k], b[k], f"{path}/{k}", rtol, atol)
    return out
  if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
    return [d for i, (u, v) in enumerate(zip(a, b)) for d in differences(u, v, f"{path}[{i}]", rtol, atol)]
  if a == b:
    return []
  if (_is_number(a) and _is_number(b) and (rtol or atol) and math.isfinite(a) and math.isfinite(b)
      and abs(a - b) <= atol + rtol * abs(b)):
    return [(path, "close", relative_difference(a, b))]
  return [(path, "changed", f"{str(a)[:80]} != {str(b)[:80]}")]


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("root_a")
  parser.add_argument("root_b")
  parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for numbers (default 0: exact)")
  parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance for numbers (default 0: exact)")
  args = parser.parse_args(argv)
  if args.rtol < 0 or args.atol < 0:
    parser.error(f"tolerances must be >= 0, got --rtol {args.rtol} --atol {args.atol}")
  root_a, root_b = args.root_a, args.root_b
  for root in (root_a, root_b):
    if not os.path.isdir(root):
      parser.error(f"{root} is not a directory")
  changed = missing = compared = close = 0
  largest = (0.0, "")
  for dirpath, _, files in sorted(os.walk(root_a)):
    for name in sorted(f for f in files if f in RECORDS):
      rel = os.path.relpath(os.path.join(dirpath, name), root_a)
      other = os.path.join(root_b, rel)
      if not os.path.exists(other):
        print(f"{rel}: missing in {root_b}")
        missing += 1
        continue
      with open(os.path.join(root_a, rel)) as fa, open(other) as fb:
        diffs = differences(_normalised(json.load(fa), root_a), _normalised(json.load(fb), root_b),
                            rtol=args.rtol, atol=args.atol)
      compared += 1
      for path, kind, detail in diffs:
        if kind == "close":
          close += 1
          largest = max(largest, (detail, f"{rel} {path}"))
          continue
        print(f"{rel} {path}: {detail if kind == 'changed' else 'only in ' + (root_a if kind == 'only_a' else root_b)}")
      changed += sum(kind == "changed" for _, kind, _ in diffs)
  print(f"{compared} records compared: {changed} changed values, {missing} missing files")
  if args.rtol or args.atol:
    print(f"{close} numbers within --rtol {args.rtol:g} --atol {args.atol:g}"
          + (f", largest relative difference {largest[0]:.3g} ({largest[1]})" if close else ""))
  return 1 if changed or missing else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
