#!/usr/bin/env python
r"""Training throughput of a preset on the current backend: tokens/s, achieved FLOP/s and model-FLOPs utilisation.

  python scripts/bench_train.py --preset tiny --batch_size 16 --sequence_length 128
  python scripts/bench_train.py --preset pythia_14m --batch_size 8 --sequence_length 256

Model FLOPs per token: 6·N + 12·L·H·Q·T (bliss_jax/models/flops.py). Peak FLOP/s: on TPU/GPU the vendor's dense
peak for the device kind and dtype (table below); on CPU there is no datasheet figure for this machine, so the peak is
MEASURED in the same run as the best of several large float32 matmuls (jnp.dot, 2048^2) — the roofline this backend
reaches on the op the model is made of. Data are synthetic (bliss_jax/data/synthetic.py); the first steps (compile)
are excluded.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bliss_jax import partitioning  # noqa: E402
from bliss_jax.data.synthetic import SyntheticBatches  # noqa: E402
from bliss_jax.models.config import count_params, preset  # noqa: E402
from bliss_jax.models.flops import train_flops_per_token  # noqa: E402
from bliss_jax.training import trainer  # noqa: E402

# Dense peak FLOP/s per chip (vendor datasheets): (bfloat16, float32).
PEAKS = {"TPU v4": (275e12, 275e12 / 2), "TPU v5 lite": (197e12, 197e12 / 2), "TPU v5e": (197e12, 197e12 / 2),
         "TPU v5p": (459e12, 459e12 / 2), "NVIDIA H100": (989e12, 67e12), "NVIDIA H200": (989e12, 67e12),
         "NVIDIA A100": (312e12, 19.5e12)}


def measured_matmul_peak(n=2048, repeats=10, dtype=jnp.float32):
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def peak_flops(dtype):
  kind = jax.devices()[0].device_kind
  for name, (bf16, fp32) in PEAKS.items():
    if kind.startswith(name):
      return (bf16 if dtype == "bfloat16" else fp32) * jax.device_count(), f"datasheet {name} x{jax.device_count()}"
  per = measured_matmul_peak()
  return per, f"measured {per / 1e9:.1f} GFLOP/s float32 matmul (2048^2), all {jax.device_count()} device(s)"


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="tiny")
  p.add_argument("--vocab_size", type=int, default=None, help="override the preset's vocabulary")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup_steps", type=int, default=2)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--mesh_model", type=int, default=1)
  a = p.parse_args()

  overrides = {"dtype": a.dtype}
  if a.vocab_size:
    overrides["vocab_size"] = a.vocab_size
  cfg = preset(a.preset, **overrides)
  mesh = partitioning.make_mesh(-1, a.mesh_model)
  rules = partitioning.logical_rules()
  tx, schedule = trainer.make_tx(trainer.OptimizerConfig(warmup_steps=1), a.steps + a.warmup_steps)
  batches = SyntheticBatches(vocab_size=cfg.vocab_size, batch_size=a.batch_size, sequence_length=a.sequence_length)
  with partitioning.mesh_context(mesh, rules):
    fns = trainer.build_step_functions(cfg, tx, schedule, mesh, rules, sequence_length=a.sequence_length)
    state = fns.init(jax.random.PRNGKey(0))
    rng = jax.device_put(jax.random.PRNGKey(1), partitioning.replicated(mesh))
    data = [partitioning.global_batch_from_local(next(batches), mesh) for _ in range(a.steps + a.warmup_steps)]
    for b in data[:a.warmup_steps]:
      state, m = fns.train_step(state, b, rng, None)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for b in data[a.warmup_steps:]:
      state, m = fns.train_step(state, b, rng, None)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t) / a.steps
  tokens = a.batch_size * a.sequence_length
  flops = train_flops_per_token(cfg, a.sequence_length) * tokens / dt
  peak, how = peak_flops(a.dtype)
  print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}) x{jax.device_count()}")
  print(f"preset {a.preset}: {count_params(cfg):,} params, vocab {cfg.vocab_size}, batch {a.batch_size} x "
        f"{a.sequence_length}, {a.dtype}")
  print(f"step {dt * 1e3:.1f} ms | {tokens / dt:,.0f} tokens/s | {flops / 1e9:.2f} GFLOP/s achieved | "
        f"peak {peak / 1e9:.1f} GFLOP/s ({how}) | MFU {100 * flops / peak:.1f}%")


if __name__ == "__main__":
  main()
