#!/usr/bin/env python
r"""Per-device peak memory of one compiled train step at a paper's shape, with the LM loss from the model's full
logits and from the chunked output head + cross-entropy (`losses.lm.head_cross_entropy`), without allocating anything.

  python scripts/bench_memory.py                    # SALT's 2.8B student, vocab 256K, batch 2048 x 1280, 1024 devices
  python scripts/bench_memory.py --devices 8 --batch_size 16

The step is traced on abstract inputs (`trainer.compiled_train_step`) over a ("data", "model") mesh of `--devices`
devices with FSDP rules, and XLA's `memory_analysis()` of the compiled program gives, per device: arguments (the
sharded state and batch), outputs, temporaries (activations, logits, gradients) and their sum less what donation
aliases. On a CPU host the devices are faked (`--xla_force_host_platform_device_count`), so the figures are XLA:CPU's
buffer assignment for the same partitioned program, not a TPU's; they compare the two losses like for like. It is the
program an accelerator compiles: the CPU's own rewrites (`models.dense_dot`, `models.blocked_attention`) are off
unless $BLISS_JAX_DENSE_DOT is set (to an empty value: on). The model
is SALT's (paper/salt_2p8b.gin): bfloat16 compute, scanned and rematerialised layers, Adafactor, and the plain LM
phase's per-sequence mean.
"""
import argparse
import os
import sys

p = argparse.ArgumentParser()
p.add_argument("--preset", default="salt_2p8b")
p.add_argument("--vocab_size", type=int, default=256_000)
p.add_argument("--batch_size", type=int, default=2048)
p.add_argument("--sequence_length", type=int, default=1280)
p.add_argument("--devices", type=int, default=1024, help="SALT trained on 1024 TPU v5e chips")
p.add_argument("--mesh_model", type=int, default=1)
p.add_argument("--chunk_tokens", type=int, default=None,
               help="tokens of the global batch per chunk (default: 128 positions of every row)")
p.add_argument("--num_layers", type=int, default=None, help="override the preset's depth (a quicker compile)")
a = p.parse_args()
if "jax" not in sys.modules:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={a.devices}").strip()
# the program an accelerator compiles: without the CPU's rewrites (`models.dense_dot`, `models.blocked_attention`)
os.environ.setdefault("BLISS_JAX_DENSE_DOT", "xla")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import functools  # noqa: E402

import jax  # noqa: E402

from bliss_jax import partitioning  # noqa: E402
from bliss_jax.losses.lm import make_lm_loss  # noqa: E402
from bliss_jax.models.config import preset  # noqa: E402
from bliss_jax.training import trainer  # noqa: E402


def main():
  overrides = dict(vocab_size=a.vocab_size, dtype="bfloat16", scan_layers=True, remat=True)
  if a.num_layers:
    overrides["num_layers"] = a.num_layers
  cfg = preset(a.preset, **overrides)
  optimizer = trainer.OptimizerConfig(name="adafactor", peak_lr=1e-3, warmup_steps=4000, final_fraction=0.1,
                                      weight_decay=0.0, clip_norm=1.0)
  chunk = a.chunk_tokens or 128 * a.batch_size
  mesh = partitioning.make_mesh(-1, a.mesh_model, jax.devices()[:a.devices])
  print(f"{a.preset} (vocab {cfg.vocab_size}, {cfg.num_layers} layers), batch {a.batch_size} x {a.sequence_length}, "
        f"mesh data {mesh.shape['data']} x model {mesh.shape['model']} ({jax.default_backend()}), FSDP, "
        f"{'XLA dots and einsum attention' if os.environ['BLISS_JAX_DENSE_DOT'] else 'the CPU rewrites'}; per device:")
  gib = 2 ** 30
  for name, chunk_tokens in (("full logits", 0), (f"chunked ({chunk} tokens)", chunk)):
    loss = functools.partial(make_lm_loss, average="sequence", chunk_tokens=chunk_tokens)
    m = trainer.compiled_train_step(cfg, batch_size=a.batch_size, sequence_length=a.sequence_length,
                                    optimizer=optimizer, num_steps=208_000, loss_factory=loss, mesh=mesh, fsdp=True,
                                    prefix_lm=True).memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    print(f"  {name:28s} peak {peak / gib:7.2f} GiB = arguments {m.argument_size_in_bytes / gib:.2f} + outputs "
          f"{m.output_size_in_bytes / gib:.2f} + temporaries {m.temp_size_in_bytes / gib:.2f} - aliased "
          f"{m.alias_size_in_bytes / gib:.2f}")


if __name__ == "__main__":
  main()
