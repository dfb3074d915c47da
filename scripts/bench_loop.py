#!/usr/bin/env python
r"""The training loop's throughput over the bare train step's, at one shape, in the same process run; and the loop's
with asynchronous over synchronous checkpoints.

  python scripts/bench_loop.py --preset tiny --batch_size 16 --sequence_length 128
  python scripts/bench_loop.py --preset tiny --checkpoint_every 10 --checkpoints sync,async

Loop: `trainer.train` on synthetic batches (bliss_jax/data/synthetic.py), logging every `--log_every` steps, with its
host work: reading and placing each batch, metrics, the NaN guard, the progress bar off and checkpoints every
`--checkpoint_every` steps (default: one, at the end), written as `--checkpoints` says (`train(async_checkpoints=)`;
with both, each round runs the loop once per mode); its tokens/s are the `tokens_per_sec` of its metric rows after the
first (which holds the compile), so a save counts in the row after it. Save: how long one `RunCheckpoints.save` of the
train state holds the loop in each mode. Bare: the same jitted step (`trainer.build_step_functions`) on batches
already on the device, back to back. They alternate `--rounds` times (the bare step first in every other round),
after `--warmup_rounds` untimed ones; the figures are medians, and the ratios loop / bare and async / sync are
printed as the medians' ratio and, with several rounds, as the geometric mean of the rounds' paired ratios with its
95% t interval (`report.intervals.ratio_interval`; the machine's drift between rounds cancels in a pair).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax import host_allocator  # noqa: E402

host_allocator.keep_freed_memory()  # before any thread that allocates exists

import jax  # noqa: E402

from bliss_jax import partitioning  # noqa: E402
from bliss_jax.data.synthetic import SyntheticBatches, synthetic_source  # noqa: E402
from bliss_jax.models.config import preset  # noqa: E402
from bliss_jax.report import intervals  # noqa: E402
from bliss_jax.training import checkpoints, trainer  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="tiny")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--log_every", type=int, default=10)
  p.add_argument("--checkpoint_every", type=int, default=None, help="default: --steps (one checkpoint, at the end)")
  p.add_argument("--checkpoints", default="async", help="sync, async or sync,async: how the loop writes them")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--warmup_rounds", type=int, default=1,
                 help="whole rounds run untimed first (the first round after the setup runs slower than the rest)")
  a = p.parse_args()
  modes = a.checkpoints.split(",")
  if not modes or set(modes) - {"sync", "async"}:
    p.error(f"--checkpoints={a.checkpoints}: expected sync, async or both, comma-separated")
  cfg = preset(a.preset)
  spec = trainer.TrainSpec(model_config=cfg, num_steps=a.steps, batch_size=a.batch_size,
                           sequence_length=a.sequence_length, optimizer=trainer.OptimizerConfig(warmup_steps=1),
                           checkpoint_every=a.checkpoint_every or a.steps, log_every=a.log_every)
  source = synthetic_source(vocab_size=cfg.vocab_size, batch_size=a.batch_size, sequence_length=a.sequence_length)
  tokens = a.batch_size * a.sequence_length

  def loop(mode):
    with tempfile.TemporaryDirectory() as d:
      trainer.train(model_dir=d, spec=spec, batch_source=source, progress_bar=False, mesh_data=1,
                    devices=jax.devices()[:1], keep_checkpoints=1, async_checkpoints=mode == "async")
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
    n_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(fns.abstract_state))

    def bare():
      state = fns.init(jax.random.PRNGKey(0))
      state, m = fns.train_step(state, data[0], rng, None)  # compiled once, in the first round
      jax.block_until_ready(m)
      t = time.perf_counter()
      for b in data[1:]:
        state, m = fns.train_step(state, b, rng, None)
      jax.block_until_ready(m)
      return tokens * (len(data) - 1) / (time.perf_counter() - t)

    def save_block(mode):
      """Seconds one `RunCheckpoints.save` of the train state holds the loop (median of 5; the write of an
      asynchronous save is waited for outside the timing)."""
      state, out = fns.init(jax.random.PRNGKey(0)), []
      with tempfile.TemporaryDirectory() as d, checkpoints.RunCheckpoints(d, 1, async_save=mode == "async") as ckpts:
        for i in range(1, 6):
          t = time.perf_counter()
          ckpts.save(i, state, {"position": i})
          out.append(time.perf_counter() - t)
          ckpts.wait()
      return statistics.median(out)

    loops, bares, blocks = {m: [] for m in modes}, [], {m: [] for m in modes}
    for round_index in range(a.warmup_rounds + a.rounds):
      if round_index % 2:  # every other round the bare step first, so neither side always follows the other
        bare_tokens_per_sec = bare()
        measured = [(m, loop(m), save_block(m)) for m in modes], bare_tokens_per_sec
      else:
        measured = [(m, loop(m), save_block(m)) for m in modes], bare()
      if round_index >= a.warmup_rounds:
        for m, tokens_per_sec, block in measured[0]:
          loops[m].append(tokens_per_sec)
          blocks[m].append(block)
        bares.append(measured[1])
  med = {m: statistics.median(x) for m, x in loops.items()}
  br = statistics.median(bares)
  print(f"preset {a.preset}, batch {a.batch_size} x {a.sequence_length}, {a.steps} steps, log every {a.log_every}, "
        f"checkpoint every {spec.checkpoint_every}; {a.rounds} timed round(s) after {a.warmup_rounds} untimed")

  def paired(what, x, y):
    if a.rounds > 1:
      r = intervals.ratio_interval(x, y)
      print(f"  {what}, round by round: {r.mean:.3f} [{r.low:.3f}, {r.high:.3f}] (geometric mean of the {a.rounds} "
            f"rounds' paired ratios, {r.level:.0%} t interval)")

  print(f"rounds (loop {' / loop '.join(modes)} / bare tokens/s): " + ", ".join(
      "/".join(f"{x:,.0f}" for x in xs) for xs in zip(*loops.values(), bares)))
  for m in modes:
    print(f"loop, {m} checkpoints {med[m]:,.0f} tokens/s | bare step {br:,.0f} tokens/s | loop/bare "
          f"{med[m] / br:.3f} (medians over {a.rounds} rounds)")
    paired(f"loop ({m}) / bare", loops[m], bares)
  if len(modes) == 2:
    per_round = ", ".join(f"{x / y:.3f}" for x, y in zip(loops["async"], loops["sync"]))
    print(f"async/sync {med['async'] / med['sync']:.3f} (of the medians; per round: {per_round})")
    paired("async / sync", loops["async"], loops["sync"])
  print("one save holds the loop: " + " | ".join(f"{m} {1e3 * statistics.median(blocks[m]):.1f} ms" for m in modes) +
        f" (median over {a.rounds} rounds of 5 saves; state {n_bytes / 2**20:.1f} MiB)")


if __name__ == "__main__":
  main()
