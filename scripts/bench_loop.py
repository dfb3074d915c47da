#!/usr/bin/env python
r"""The training loop's throughput over the bare train step's, at one shape, in the same process run; and the loop's
with asynchronous over synchronous checkpoints.

  python scripts/bench_loop.py --preset tiny --batch_size 16 --sequence_length 128
  python scripts/bench_loop.py --preset tiny --checkpoint_every 10 --checkpoints sync,async
  python scripts/bench_loop.py --preset tiny --batch_size 2 --sequence_length 32 --prefetch 0,2

Loop: `trainer.train` on synthetic batches (bliss_jax/data/synthetic.py), logging every `--log_every` steps, with its
host work: reading and placing each batch, metrics, the NaN guard, the progress bar off and checkpoints every
`--checkpoint_every` steps (default: one, at the end), written as `--checkpoints` says (`train(async_checkpoints=)`;
with both, each round runs the loop once per mode); its tokens/s are the `tokens_per_sec` of its metric rows after the
first (which holds the compile), so a save counts in the row after it. Save: how long one `RunCheckpoints.save` of the
train state holds the loop in each mode. `--prefetch 0,2` runs the loop with each batch read and placed in turn and
with two read ahead on a background thread (`train(prefetch_batches=)`), alternating. Bare: the same jitted step
(`trainer.build_step_functions`) on batches already on the device, back to back. They alternate `--rounds` times (the
bare step first in every other round), after `--warmup_rounds` untimed ones; the figures are medians, and the ratios
loop / bare and async / sync are printed as the medians' ratio and, with several rounds, as the geometric mean of the
rounds' paired ratios with its 95% t interval (`report.intervals.ratio_interval`; the machine's drift between rounds
cancels in a pair). Host work: the loop's per-step work on the host (next batch, placement, dispatch), each piece
timed alone: a device step shorter than their sum leaves the device waiting on the host, whatever the dispatch
overlaps. Each loop compiles its own step (`trainer.train` builds it), so JAX's persistent compilation cache is on
(`cli.enable_compilation_cache`): after the first round those compilations load the executable.
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

from bliss_jax import cli, partitioning  # noqa: E402
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
  p.add_argument("--prefetch", default="0", help="batches read and placed ahead on a background thread "
                 "(`train(prefetch_batches=)`); comma-separated counts alternate within each round, e.g. 0,2")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--warmup_rounds", type=int, default=1,
                 help="whole rounds run untimed first (the first round after the setup runs slower than the rest)")
  a = p.parse_args()
  cli.enable_compilation_cache()
  t_start = time.perf_counter()
  progress = lambda message: print(f"[{time.perf_counter() - t_start:6.1f} s] {message}", file=sys.stderr, flush=True)
  modes = a.checkpoints.split(",")
  if not modes or set(modes) - {"sync", "async"}:
    p.error(f"--checkpoints={a.checkpoints}: expected sync, async or both, comma-separated")
  prefetches = [int(k) for k in a.prefetch.split(",")]
  variants = [(m, k) for m in modes for k in prefetches]
  name = lambda v: v[0] if len(prefetches) == 1 else f"{v[0]}, prefetch {v[1]}"
  cfg = preset(a.preset)
  spec = trainer.TrainSpec(model_config=cfg, num_steps=a.steps, batch_size=a.batch_size,
                           sequence_length=a.sequence_length, optimizer=trainer.OptimizerConfig(warmup_steps=1),
                           checkpoint_every=a.checkpoint_every or a.steps, log_every=a.log_every)
  source = synthetic_source(vocab_size=cfg.vocab_size, batch_size=a.batch_size, sequence_length=a.sequence_length)
  tokens = a.batch_size * a.sequence_length

  def loop(variant):
    mode, prefetch = variant
    with tempfile.TemporaryDirectory() as d:
      trainer.train(model_dir=d, spec=spec, batch_source=source, progress_bar=False, mesh_data=1,
                    devices=jax.devices()[:1], keep_checkpoints=1, async_checkpoints=mode == "async",
                    prefetch_batches=prefetch)
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

    def host_work():
      """Median seconds per step of the loop's host work, each piece timed with the device idle: the next batch from
      the source, its placement (`partitioning.global_batch_from_local`), and the step's dispatch (until the call
      returns, the step then waited for outside the timing)."""
      it, state = source("train"), fns.init(jax.random.PRNGKey(0))
      pieces = {"batch": [], "placement": [], "dispatch": []}
      for _ in range(a.steps):
        t0 = time.perf_counter()
        b = next(it)
        t1 = time.perf_counter()
        g = jax.block_until_ready(partitioning.global_batch_from_local(b, mesh))
        t2 = time.perf_counter()
        state, m = fns.train_step(state, g, rng, None)
        t3 = time.perf_counter()
        jax.block_until_ready(m)
        for k, dt in zip(pieces, (t1 - t0, t2 - t1, t3 - t2)):
          pieces[k].append(dt)
      return {k: statistics.median(v) for k, v in pieces.items()}

    loops, bares, blocks = {v: [] for v in variants}, [], {m: [] for m in modes}
    for round_index in range(a.warmup_rounds + a.rounds):
      # every other round the bare step first and the variants in reverse, so none always follows another
      order = variants[::-1] if round_index % 2 else variants
      if round_index % 2:
        bare_tokens_per_sec = bare()
        measured = [(v, loop(v)) for v in order], bare_tokens_per_sec
      else:
        measured = [(v, loop(v)) for v in order], bare()
      saves = [(m, save_block(m)) for m in modes]
      if round_index >= a.warmup_rounds:
        for v, tokens_per_sec in measured[0]:
          loops[v].append(tokens_per_sec)
        for m, block in saves:
          blocks[m].append(block)
        bares.append(measured[1])
      kind = "untimed" if round_index < a.warmup_rounds else "timed"
      progress(f"round {round_index + 1}/{a.warmup_rounds + a.rounds} ({kind}), tokens/s: loop " +
               ", ".join(f"{name(v)} {x:,.0f}" for v, x in measured[0]) + f" | bare {measured[1]:,.0f}")
    host = host_work()
  med = {m: statistics.median(x) for m, x in loops.items()}
  br = statistics.median(bares)
  print(f"preset {a.preset}, batch {a.batch_size} x {a.sequence_length}, {a.steps} steps, log every {a.log_every}, "
        f"checkpoint every {spec.checkpoint_every}; {a.rounds} timed round(s) after {a.warmup_rounds} untimed")

  def paired(what, x, y):
    if a.rounds > 1:
      r = intervals.ratio_interval(x, y)
      print(f"  {what}, round by round: {r.mean:.3f} [{r.low:.3f}, {r.high:.3f}] (geometric mean of the {a.rounds} "
            f"rounds' paired ratios, {r.level:.0%} t interval)")

  print(f"rounds (loop {' / loop '.join(map(name, variants))} / bare tokens/s): " + ", ".join(
      "/".join(f"{x:,.0f}" for x in xs) for xs in zip(*loops.values(), bares)))
  for v in variants:
    print(f"loop, {name(v)} checkpoints {med[v]:,.0f} tokens/s | bare step {br:,.0f} tokens/s | loop/bare "
          f"{med[v] / br:.3f} (medians over {a.rounds} rounds)")
    paired(f"loop ({name(v)}) / bare", loops[v], bares)
  for k in prefetches if len(modes) == 2 else ():
    sync, async_ = loops[("sync", k)], loops[("async", k)]
    per_round = ", ".join(f"{x / y:.3f}" for x, y in zip(async_, sync))
    print(f"async/sync{'' if len(prefetches) == 1 else f' (prefetch {k})'} "
          f"{med[('async', k)] / med[('sync', k)]:.3f} (of the medians; per round: {per_round})")
    paired("async / sync", async_, sync)
  for m in modes if len(prefetches) > 1 else ():
    for k in prefetches[1:]:
      paired(f"prefetch {k} / prefetch {prefetches[0]} ({m} checkpoints)", loops[(m, k)], loops[(m, prefetches[0])])
  step_ms, host_ms = 1e3 * tokens / br, 1e3 * sum(host.values())
  print("host work per step: " + " + ".join(f"{k} {1e3 * v:.2f} ms" for k, v in host.items()) +
        f" = {host_ms:.2f} ms (medians over {a.steps} steps, the device idle) against a bare step of {step_ms:.2f} "
        f"ms here: a device whose step is shorter than ~{host_ms:.2f} ms waits on the host")
  print("one save holds the loop: " + " | ".join(f"{m} {1e3 * statistics.median(blocks[m]):.1f} ms" for m in modes) +
        f" (median over {a.rounds} rounds of 5 saves; state {n_bytes / 2**20:.1f} MiB)")


if __name__ == "__main__":
  main()
