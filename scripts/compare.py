#!/usr/bin/env python
r"""Compare every method at equal target-training compute, t5x style (see bliss_jax/pipelines/compare.py).

  python scripts/compare.py --gin_file=compare/embedded.gin          # the README's main job, minutes on a CPU
  python scripts/compare.py --gin_file=compare/small.gin             # the README's results (3 seeds)
  python scripts/compare.py --gin_file=compare/smoke.gin --gin.compare.methods="('plain', 'rho1')"

The flags are scripts/train.py's. Every stage writes under ROOT (the gin macro / compare.root) and is skipped when
rerun after it finished (training stages resume from their checkpoints), so a killed run continues where it stopped.
Prints ROOT/report.md at the end: what the run shows (`compare.scope`), the table over the seeds (`compare.seeds`), the
paired differences, the claims and seed 0's highest- and lowest-scored candidates.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax import cli  # noqa: E402


def main(argv):
  args = cli.parse_args(argv)
  cli.setup(args)
  cli.resolve_task_registrations(args.tasks_modules)
  import gin  # pylint: disable=g-import-not-at-top
  try:
    root = gin.query_parameter("compare.root")
    while not isinstance(root, str):  # a macro (compare.root = %ROOT): its value
      root = gin.query_parameter(str(root))
  except ValueError:
    raise cli.CliError("compare.root is not bound: give a gin file from gin_configs/compare/ or --gin.compare.root")
  cli.write_config_gin(root, finished=False)
  result = gin.get_configurable("compare")()
  cli.write_config_gin(root, finished=True)
  seed = result["config"]["seed"] if "seeds" not in result else None  # `compare.only_seed`: that seed's report
  report = os.path.join(root, "report.md") if seed is None else os.path.join(root, f"seed_{seed}", "report.md")
  with open(report) as f:
    print("\n" + f.read())
  print(f"report:       {report} (and report.json, *.png)")
  print(f"tensorboard:  tensorboard --logdir {root}")


if __name__ == "__main__":
  cli.run_script(main, __doc__)
