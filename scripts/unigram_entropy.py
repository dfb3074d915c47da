#!/usr/bin/env python
r"""Unigram entropy of a task's tokens (the loss of the best context-free predictor), next to a run's held-out loss.

  python scripts/unigram_entropy.py --task embedded_default --split validation --sequence_length 128 \
      --model_dir runs/quickstart
  python scripts/unigram_entropy.py --gin_file=my_data.gin --task my_heldout --split validation

Flags:
  --task NAME                a registered SeqIO task or mixture (default: embedded_default).
  --split SPLIT              (default: validation)
  --sequence_length L        chunk the documents as a run at length L does (default: whole documents).
  --model_dir DIR            print this run's last held-out loss next to the entropy.
  --gin_file, --gin.KEY=VALUE, --gin_search_paths, --tasks_module
                             task registrations, as scripts/train.py takes them (`bliss_jax.cli.register_tasks`):
                             a task registered in a gin file (`TASK = @register_local_files_task()`) is found.
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bliss_jax import cli  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv):
  tasks_args, rest = cli.split_args(argv)
  p = argparse.ArgumentParser(allow_abbrev=False)
  p.add_argument("--task", default="embedded_default")
  p.add_argument("--split", default="validation")
  p.add_argument("--sequence_length", type=int, default=None)
  p.add_argument("--model_dir", default=None)
  a = p.parse_args(rest)
  cli.register_tasks(tasks_args)
  from bliss_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  h = pipeline.token_unigram_entropy(a.task, a.split, sequence_length=a.sequence_length)
  print(f"unigram entropy of {a.task}:{a.split} under its tokenizer: {h:.4f} nats/token")
  if a.model_dir:
    run = ModelDir(a.model_dir)
    rows = run.metrics("validation")
    if not rows:
      raise cli.CliError(f"no validation rows in {run.metrics_path}")
    last = rows[-1]
    print(f"held-out loss of {a.model_dir} at step {last['step']}: {last['loss']:.4f} nats/token "
          f"({h - last['loss']:.4f} below the unigram entropy; perplexity {last['perplexity']:.1f} vs "
          f"{math.exp(h):.1f}; {last.get('eval_sample', 'batches not recorded')})")
  return h


if __name__ == "__main__":
  cli.run_script(main, __doc__)
