#!/usr/bin/env python
r"""SALT's KD overhead: the time of a KD step (student train step + one frozen-teacher forward) over a plain step.

  python scripts/bench_kd_overhead.py                                   # CPU pair: student 4 x 256, teacher 2 x 256
  python scripts/bench_kd_overhead.py --student_layers 92 --teacher_layers 44 --d_model 1024 --d_ff 8192 \
      --vocab_size 256000 --sequence_length 1280 --batch_size 8 --dtype bfloat16    # the paper's shapes (accelerator)

Both steps are compiled from the same `trainer.build_step_functions` (the KD one by `make_train_step` with SALT's KD
loss, the plain one with the LM loss) and timed side by side in one run on the same batch: after warm-up (compilation)
steps, `--rounds` rounds each time `--steps` steps of each, back to back (the order alternating between rounds). The
measured ratio is the median over rounds of (KD time / plain time within the round): the two kinds of a round run
under the same machine load, which on a shared machine changes between rounds (the ratios of the fastest rounds and of
the median times are printed too). Printed next to:
  * the FLOP prediction KD/plain = 1 + F_fwd(teacher) / F_train(student), with F per token from
    `bliss_jax.models.flops` (2N + attention forward, 6N + attention for a train step) = 1 + N_t/(3 N_s) without the
    attention term;
  * the paper's accounting for 1.5B -> 2.8B (§5.2): a forward is 1/4 of a train step and the teacher's forward half the
    student's, +12.5% predicted, +12.0% measured.
The FLOP count leaves out the KD loss's own vocabulary-sized work (softmax of the teacher's logits, the soft CE), which
matters for small models with large vocabularies.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bliss_jax import partitioning  # noqa: E402
from bliss_jax.data.synthetic import SyntheticBatches  # noqa: E402
from bliss_jax.losses.salt import salt_kd_loss_factory  # noqa: E402
from bliss_jax.models.config import count_params, preset  # noqa: E402
from bliss_jax.models.flops import forward_flops_per_token, matmul_params, train_flops_per_token  # noqa: E402
from bliss_jax.models.transformer import Transformer  # noqa: E402
from bliss_jax.training import trainer  # noqa: E402

PAPER_MEASURED, PAPER_PREDICTED = 0.120, 0.125


def _shape(preset_name, layers, a):
  return preset(preset_name, num_layers=layers, d_model=a.d_model, num_heads=a.num_heads, d_ff=a.d_ff,
                vocab_size=a.vocab_size, dtype=a.dtype, remat=a.remat, scan_layers=a.scan_layers)


def _time_steps(step, state, batch, rng, frozen, n):
  t = time.perf_counter()
  for _ in range(n):
    state, _ = step(state, batch, rng, frozen)
  jax.block_until_ready(state)
  return state, (time.perf_counter() - t) / n


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="tiny_mqa", help="shape family of both models (SALT: MQA, gated MLP, tied)")
  p.add_argument("--student_layers", type=int, default=4)
  p.add_argument("--teacher_layers", type=int, default=2)
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--num_heads", type=int, default=4)
  p.add_argument("--d_ff", type=int, default=1024)
  p.add_argument("--vocab_size", type=int, default=2176)
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--remat", action="store_true")
  p.add_argument("--scan_layers", action="store_true")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first (compilation)")
  p.add_argument("--rounds", type=int, default=9)
  p.add_argument("--steps", type=int, default=4, help="timed steps of each kind per round")
  a = p.parse_args()

  s_cfg, t_cfg = _shape(a.preset, a.student_layers, a), _shape(a.preset, a.teacher_layers, a)
  L = a.sequence_length
  mesh = partitioning.make_mesh()
  rules = partitioning.logical_rules()
  tx, schedule = trainer.make_tx(trainer.OptimizerConfig(warmup_steps=1), 10 ** 6)
  with partitioning.mesh_context(mesh, rules):
    abstract_t = trainer.abstract_params(t_cfg, mesh, rules, L)
    t_shardings = jax.tree.map(lambda x: x.sharding, abstract_t)
    dummy = jnp.zeros((1, L), jnp.int32)
    init_t = jax.jit(lambda r: nn.unbox(Transformer(t_cfg).init(r, dummy)["params"]), out_shardings=t_shardings)
    frozen = {"teacher": init_t(jax.random.PRNGKey(1))}
    fns = trainer.build_step_functions(s_cfg, tx, schedule, mesh, rules, sequence_length=L,
                                       frozen_models={"teacher": Transformer(t_cfg)},
                                       frozen_shardings={"teacher": t_shardings})
    steps = {"plain": fns.train_step,
             "kd": fns.make_train_step(salt_kd_loss_factory(0.667, 0.25, n_kd=10 ** 9))}
    state = fns.init(jax.random.PRNGKey(0))
    rng = jax.device_put(jax.random.PRNGKey(2), partitioning.replicated(mesh))
    local = next(SyntheticBatches(vocab_size=a.vocab_size, batch_size=a.batch_size, sequence_length=L))
    batch = partitioning.global_batch_from_local(local, mesh)
    for name in ("plain", "kd"):
      state, _ = _time_steps(steps[name], state, batch, rng, frozen, a.warmup)
    times = {"plain": [], "kd": []}
    for r in range(a.rounds):
      for name in (("plain", "kd") if r % 2 == 0 else ("kd", "plain")):
        state, dt = _time_steps(steps[name], state, batch, rng, frozen, a.steps)
        times[name].append(dt)

  plain, kd = statistics.median(times["plain"]), statistics.median(times["kd"])
  ratio = statistics.median(k / q for k, q in zip(times["kd"], times["plain"]))
  n_s, n_t = count_params(s_cfg), count_params(t_cfg)
  f_s, f_t = train_flops_per_token(s_cfg, L), forward_flops_per_token(t_cfg, L)
  print(f"backend {jax.default_backend()} ({jax.device_count()} x {jax.devices()[0].device_kind}), dtype {a.dtype}, "
        f"batch {a.batch_size} x {L}, {a.rounds} rounds x {a.steps} steps after {a.warmup} warm-up steps each")
  print(f"student {a.student_layers} x d{a.d_model}: {n_s / 1e6:.2f}M params ({matmul_params(s_cfg) / 1e6:.2f}M in "
        f"matmuls); teacher {a.teacher_layers} x d{a.d_model}: {n_t / 1e6:.2f}M ({matmul_params(t_cfg) / 1e6:.2f}M); "
        f"vocab {a.vocab_size}")
  print(f"plain step {1e3 * plain:.1f} ms (per-round {', '.join(f'{1e3 * x:.1f}' for x in times['plain'])})")
  print(f"KD step    {1e3 * kd:.1f} ms (per-round {', '.join(f'{1e3 * x:.1f}' for x in times['kd'])})")
  print(f"measured   KD / plain = {ratio:.3f} (+{100 * (ratio - 1):.1f}%), the median of the per-round ratios "
        f"({', '.join(f'{k / q:.3f}' for k, q in zip(times['kd'], times['plain']))}); fastest rounds "
        f"{min(times['kd']) / min(times['plain']):.3f}, median times {kd / plain:.3f}")
  print(f"predicted  1 + F_fwd(teacher)/F_train(student) = 1 + {f_t / 1e6:.2f}/{f_s / 1e6:.2f} MFLOP/token = "
        f"{1 + f_t / f_s:.3f} (+{100 * f_t / f_s:.1f}%); params only 1 + N_t/(3 N_s) = "
        f"{1 + matmul_params(t_cfg) / (3 * matmul_params(s_cfg)):.3f}")
  ps, pt = preset("salt_2p8b"), preset("salt_1p5b")
  paper_flops = forward_flops_per_token(pt, 1280) / train_flops_per_token(ps, 1280)
  print(f"paper      1.5B -> 2.8B: +{100 * PAPER_MEASURED:.1f}% measured, +{100 * PAPER_PREDICTED:.1f}% predicted "
        f"(forward = 1/4 of a step, teacher forward = 1/2 of the student's); this FLOP formula at their shapes "
        f"(L = 1280): +{100 * paper_flops:.1f}% (a step = 3 forwards), +{100 * paper_flops * 3 / 4:.1f}% with "
        f"rematerialisation (4 forwards)")


if __name__ == "__main__":
  main()
