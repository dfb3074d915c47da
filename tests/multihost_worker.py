"""One process of the two-process test (tests/test_multihost.py); not a test module itself.

Usage: python multihost_worker.py OUT_JSON MODEL_DIR [--reference]
With BLISS_JAX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID set it joins a jax.distributed job; with --reference it runs
alone and feeds the concatenation of both processes' batches, i.e. the same global batch.
"""
import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bliss_jax import partitioning  # noqa: E402
from bliss_jax.data.synthetic import SyntheticBatches, synthetic_source  # noqa: E402
from bliss_jax.models.config import preset  # noqa: E402
from bliss_jax.training import trainer  # noqa: E402

GLOBAL_BATCH, LENGTH, VOCAB = 8, 16, 128
EVAL_BATCHES = 4  # validation batches per process, as synthetic_source's default


def reference_source(split, *, start_position=0, process_index=0, process_count=1, repeat=True):
  its = [SyntheticBatches(vocab_size=VOCAB, batch_size=GLOBAL_BATCH, sequence_length=LENGTH, split=split,
                          start_position=start_position, process_index=p, process_count=2, repeat=repeat,
                          num_batches=EVAL_BATCHES)
         for p in range(2)]
  for parts in zip(*its):
    yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def main(out_path, model_dir, reference):
  if not reference:
    assert partitioning.initialize_distributed()
  source = reference_source if reference else synthetic_source(vocab_size=VOCAB, batch_size=GLOBAL_BATCH,
                                                                sequence_length=LENGTH, eval_batches=EVAL_BATCHES)
  losses = []
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=VOCAB), num_steps=4, batch_size=GLOBAL_BATCH,
                           sequence_length=LENGTH, optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=4,
                           checkpoint_every=4, log_every=1)
  result = trainer.train(model_dir=model_dir, spec=spec, batch_source=source, eval_batches=2, progress_bar=False,
                         mesh_data=-1, mesh_model=2)
  rows = [json.loads(l) for l in open(os.path.join(model_dir, "metrics.jsonl"))] if jax.process_index() == 0 else []
  losses = [r["loss"] for r in rows if r["split"] == "train"]
  json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
             "devices": jax.device_count(), "final_loss": result.last_train_metrics["loss"],
             "eval_loss": result.last_eval["loss"], "losses": losses}, open(out_path, "w"))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], "--reference" in sys.argv)
