#!/usr/bin/env python
r"""Compare what two run roots recorded: every report.json, stage.json and heldout.json under the first root against
the same file under the second, wall times (and stages' attempts) and the roots' own paths left out. Prints each
changed value and each field only one side has, then a count; exit status 1 when a value differs or a file is missing.

  python scripts/diff_runs.py runs/compare_smoke /tmp/compare_smoke_again

Use it to check that a change leaves results bit-identical (same seed, same config) or to see what a rerun changed.
"""
import json
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


def differences(a, b, path=""):
  """[(path, kind, detail)] of the differences between two JSON values; kind: "changed", "only_a", "only_b"."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      if k not in b:
        out.append((f"{path}/{k}", "only_a", ""))
      elif k not in a:
        out.append((f"{path}/{k}", "only_b", ""))
      else:
        out += differences(a[k], b[k], f"{path}/{k}")
    return out
  if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
    return [d for i, (u, v) in enumerate(zip(a, b)) for d in differences(u, v, f"{path}[{i}]")]
  return [] if a == b else [(path, "changed", f"{str(a)[:80]} != {str(b)[:80]}")]


def main(argv):
  if len(argv) != 2:
    raise SystemExit(__doc__)
  root_a, root_b = argv
  changed = missing = compared = 0
  for dirpath, _, files in sorted(os.walk(root_a)):
    for name in sorted(f for f in files if f in RECORDS):
      rel = os.path.relpath(os.path.join(dirpath, name), root_a)
      other = os.path.join(root_b, rel)
      if not os.path.exists(other):
        print(f"{rel}: missing in {root_b}")
        missing += 1
        continue
      with open(os.path.join(root_a, rel)) as fa, open(other) as fb:
        diffs = differences(_normalised(json.load(fa), root_a), _normalised(json.load(fb), root_b))
      compared += 1
      for path, kind, detail in diffs:
        print(f"{rel} {path}: {detail if kind == 'changed' else 'only in ' + (root_a if kind == 'only_a' else root_b)}")
      changed += sum(kind == "changed" for _, kind, _ in diffs)
  print(f"{compared} records compared: {changed} changed values, {missing} missing files")
  return 1 if changed or missing else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
