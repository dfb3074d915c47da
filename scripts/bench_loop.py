#!/usr/bin/env python
r"""The training loop's throughput over the bare train step's, at one shape, in the same process run.

  python scripts/bench_loop.py --preset tiny --batch_size 16 --sequence_length 128

Loop: `trainer.train` on synthetic batches (bliss_jax/data/synthetic.py), logging every `--log_every` steps, with its
host work: reading and placing each batch, metrics, the NaN guard, the progress bar off and one checkpoint at the
end; its tokens/s are the `tokens_per_sec` of its metric rows after the first (which holds the compile). Bare: the
same jitted step (`trainer.build_step_functions`) on batches already on the device, back to back. The two alternate
`--rounds` times; the figures are medians and the ratio is loop / bare.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from bliss_jax import partitioning  # noqa: E402
from bliss_jax.data.synthetic import SyntheticBatches, synthetic_source  # noqa: E402
from bliss_jax.models.config import preset  # noqa: E402
from bliss_jax.training import trainer  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="tiny")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--log_every", type=int, default=10)
  p.add_argument("--rounds", type=int, default=2)
  a = p.parse_args()
  cfg = preset(a.preset)
  spec = trainer.TrainSpec(model_config=cfg, num_steps=a.steps, batch_size=a.batch_size,
                           sequence_length=a.sequence_length, optimizer=trainer.OptimizerConfig(warmup_steps=1),
                           checkpoint_every=a.steps, log_every=a.log_every)
  source = synthetic_source(vocab_size=cfg.vocab_size, batch_size=a.batch_size, sequence_length=a.sequence_length)
  tokens = a.batch_size * a.sequence_length

  def loop():
    with tempfile.TemporaryDirectory() as d:
      trainer.train(model_dir=d, spec=spec, batch_source=source, progress_bar=False, mesh_data=1,
                    devices=jax.devices()[:1], keep_checkpoints=1)
      rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    return statistics.median(r["tokens_per_sec"] for r in rows if r["split"] == "train" and "tokens_per_sec" in r
                             and r["step"] > a.log_every)

  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  rules = partitioning.logical_rules()
  tx, schedule = trainer.make_tx(spec.optimizer, a.steps)
  with partitioning.mesh_context(mesh, rules):
    fns = trainer.build_step_functions(cfg, tx, schedule, mesh, rules, sequence_length=a.sequence_length)
    batches = SyntheticBatches(vocab_size=cfg.vocab_size, batch_size=a.batch_size, sequence_length=a.sequence_length)
    data = [partitioning.global_batch_from_local(next(batches), mesh) for _ in range(a.steps)]
    rng = jax.device_put(jax.random.PRNGKey(1), partitioning.replicated(mesh))

    def bare():
      state = fns.init(jax.random.PRNGKey(0))
      state, m = fns.train_step(state, data[0], rng, None)  # compiled once, in the first round
      jax.block_until_ready(m)
      t = time.perf_counter()
      for b in data[1:]:
        state, m = fns.train_step(state, b, rng, None)
      jax.block_until_ready(m)
      return tokens * (len(data) - 1) / (time.perf_counter() - t)

    loops, bares = [], []
    for _ in range(a.rounds):
      loops.append(loop())
      bares.append(bare())
  lp, br = statistics.median(loops), statistics.median(bares)
  print(f"preset {a.preset}, batch {a.batch_size} x {a.sequence_length}, {a.steps} steps, log every {a.log_every}")
  print("rounds (loop / bare tokens/s): " + ", ".join(f"{x:,.0f}/{y:,.0f}" for x, y in zip(loops, bares)))
  print(f"loop {lp:,.0f} tokens/s | bare step {br:,.0f} tokens/s | loop/bare {lp / br:.3f} (median over {a.rounds} "
        "rounds)")


if __name__ == "__main__":
  main()
