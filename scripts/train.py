#!/usr/bin/env python
r"""Train a model, t5x style.

  python scripts/train.py --gin_file=gin_configs/quickstart.gin \
      --gin.MODEL_DIR="'/tmp/run'" --gin.TrainSpec.num_steps=500

Flags:
  --gin_file=PATH            (repeatable) gin files, looked up as given, then in each --gin_search_paths entry.
  --gin_search_paths=A,B     extra directories for gin files and their `include`s (the repo's gin_configs/ is always
                             searched).
  --gin.KEY=VALUE            (repeatable) a gin binding; VALUE is a Python literal or gin reference, so strings need
                             quotes: --gin.MODEL_DIR="'/tmp/x'".
  --gin_bindings=KEY=VALUE   (repeatable) the same, t5x's older spelling.
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
                             multi-host (jax.distributed); or BLISS_JAX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID.
  --tasks_module=MODULE      (repeatable) modules to import so their SeqIO tasks are registered (default: tasks).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax import cli  # noqa: E402


def main(argv):
  args = cli.parse_args(argv)
  cli.setup(args)
  cli.resolve_task_registrations(args.tasks_modules)
  result = cli.run_gin_function("train", args)
  cli.print_summary(result)


if __name__ == "__main__":
  cli.run_script(main, __doc__)
