#!/usr/bin/env python
r"""Run (or resume) a method pipeline configured in gin, t5x style.

  python scripts/run_pipeline.py --pipeline=miniplm --gin_file=methods/miniplm_cpu.gin --gin.ROOT="'runs/miniplm'"

`--pipeline` names the gin configurable to call (miniplm, ...); the other flags are scripts/train.py's. Every stage
writes under ROOT and is skipped when rerun after it finished; training stages resume from their checkpoints.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax import cli  # noqa: E402


def main(argv):
  name = None
  rest = []
  for a in argv:
    if a.startswith("--pipeline="):
      name = a.split("=", 1)[1]
    else:
      rest.append(a)
  if not name:
    raise cli.CliError("--pipeline=NAME is required (e.g. miniplm)")
  args = cli.parse_args(rest)
  cli.setup(args)
  cli.resolve_task_registrations(args.tasks_modules)
  import gin  # pylint: disable=g-import-not-at-top
  try:
    fn = gin.get_configurable(name)
  except ValueError:
    raise cli.CliError(f"unknown pipeline {name!r}") from None
  report = fn()
  print(json.dumps(report.get("summary", report), indent=1, sort_keys=True, default=str)[:20000])


if __name__ == "__main__":
  cli.run_script(main, __doc__)
