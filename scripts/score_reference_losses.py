#!/usr/bin/env python
r"""RHO-1 step 2: per-token reference losses (and entropies) of a SeqIO split, into a score store.

  python scripts/score_reference_losses.py --reference_dir runs/rho1_reference --task benchmark_all --split train \
      --store_dir runs/rho1_reference/scores_train --sequence_length 128 --batch_size 64 [--with_entropy]

The reference model is the latest checkpoint of its MODEL_DIR (`model_config.json` gives its shape). Interrupted runs
continue where they stopped. Train on the result with `gin_configs/methods/rho1_offline.gin` (STORE_DIR = store_dir).
--task is a registered task: `--gin_file` / `--gin.KEY=VALUE` / `--tasks_module` register tasks as scripts/train.py
takes them (`bliss_jax.cli.register_tasks`; default: the tasks of `tasks`).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax import cli  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv):
  tasks_args, rest = cli.split_args(argv)
  p = argparse.ArgumentParser()
  p.add_argument("--reference_dir", required=True, help="MODEL_DIR of the trained reference model")
  p.add_argument("--task", required=True, help="registered SeqIO task or mixture (its examples carry doc ids)")
  p.add_argument("--split", default="train")
  p.add_argument("--store_dir", required=True)
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--batch_size", type=int, default=64, help="global batch")
  p.add_argument("--with_entropy", action="store_true", help="also store H_RM (for score='reference_entropy')")
  p.add_argument("--max_examples", type=int, default=None)
  a = p.parse_args(rest)

  from bliss_jax import partitioning  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
  from bliss_jax.selection import offline_scoring, reference_losses  # pylint: disable=g-import-not-at-top
  from bliss_jax.training import checkpoints, trainer  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  cli.register_tasks(tasks_args)
  mesh, rules = partitioning.make_mesh(), partitioning.logical_rules()
  cfg = ModelDir(a.reference_dir).read_model_config()
  with partitioning.mesh_context(mesh, rules):
    step, params = checkpoints.load_params(a.reference_dir, trainer.abstract_params(cfg, mesh, rules))
    table = offline_scoring.score_split(
        reference_losses.make_reference_scorer(Transformer(cfg), a.with_entropy), params, task=a.task,
        split=a.split, store_dir=a.store_dir, sequence_length=a.sequence_length, batch_size=a.batch_size, mesh=mesh,
        max_examples=a.max_examples, model_dirs=(a.reference_dir,),
        meta={"reference_dir": os.path.abspath(a.reference_dir), "reference_step": int(step)})
  print(f"{len(table)} examples, {int(table.num_tokens.sum())} tokens scored by {a.reference_dir} (step {step}) "
        f"into {a.store_dir}")


if __name__ == "__main__":
  cli.run_script(main, __doc__)
