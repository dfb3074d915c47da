#!/usr/bin/env python
r"""What token selection costs (RHO-1), measured in one run on one model and one batch.

  python scripts/bench_selection_costs.py --preset tiny --batch_size 16 --sequence_length 128
  python scripts/bench_selection_costs.py --preset pythia_14m --vocab_size 2176 --batch_size 8 --sequence_length 256

Four jitted programs on the same synthetic batch (bliss_jax/data/synthetic.py) and mesh:
  * offline scoring: the scorer of `selection/scorers.py` (`make_lm_scorer(with_token_losses=True)`), a forward pass;
  * plain CE train step (`losses.lm.make_lm_loss`);
  * RHO-1 train step with offline reference losses (`ref_loss` in the batch): CE + one top-k% over the batch;
  * RHO-1 train step with online reference losses: + one forward of the reference model per step.
Expected from FLOPs (bliss_jax/models/flops.py, PaLM App. B): scoring tokens/s ≈ 3 x training tokens/s (a forward is
a third of forward + backward), offline RHO-1 step ≈ CE step, online RHO-1 step ≈ 1 + F_fwd(ref) / F_train(model)
CE steps (= 1 + N_ref / (3·N) when attention FLOPs are small), or, from this machine's own forward/backward balance,
1 + t_score / t_CE (XLA:CPU runs the backward pass at well over twice the forward's time). Programs are timed in
interleaved rounds (the machine's load drifts); each figure is the median over rounds of the mean step time in a
round; compilation is excluded.
"""
import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bliss_jax import partitioning  # noqa: E402
from bliss_jax.data.synthetic import SyntheticBatches  # noqa: E402
from bliss_jax.losses.lm import make_lm_loss  # noqa: E402
from bliss_jax.losses.selective import make_selective_loss  # noqa: E402
from bliss_jax.models.config import count_params, preset  # noqa: E402
from bliss_jax.models.flops import forward_flops_per_token, train_flops_per_token  # noqa: E402
from bliss_jax.models.transformer import Transformer  # noqa: E402
from bliss_jax.selection.scorers import make_lm_scorer  # noqa: E402
from bliss_jax.training import trainer  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="tiny")
  p.add_argument("--ref_preset", default=None, help="reference model preset (default: the same as --preset)")
  p.add_argument("--vocab_size", type=int, default=None, help="override both presets' vocabulary")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--ratio", type=float, default=0.6)
  p.add_argument("--steps", type=int, default=5, help="steps per program per round")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--mesh_model", type=int, default=1)
  a = p.parse_args()

  overrides = {"dtype": a.dtype}
  if a.vocab_size:
    overrides["vocab_size"] = a.vocab_size
  cfg = preset(a.preset, **overrides)
  ref_cfg = preset(a.ref_preset or a.preset, **overrides)
  if ref_cfg.vocab_size != cfg.vocab_size:
    raise SystemExit("the reference model must share the trained model's vocabulary")
  mesh = partitioning.make_mesh(-1, a.mesh_model)
  rules = partitioning.logical_rules()
  tx, schedule = trainer.make_tx(trainer.OptimizerConfig(warmup_steps=1), 10_000)
  local = next(SyntheticBatches(vocab_size=cfg.vocab_size, batch_size=a.batch_size, sequence_length=a.sequence_length))
  tokens = a.batch_size * a.sequence_length
  with partitioning.mesh_context(mesh, rules):
    batch = partitioning.global_batch_from_local(local, mesh)
    # Offline reference losses as the store would give them (any float values: the cost does not depend on them).
    ref_loss = np.random.default_rng(0).exponential(size=local["decoder_target_tokens"].shape).astype(np.float32)
    batch_offline = dict(batch, **partitioning.global_batch_from_local({"ref_loss": ref_loss}, mesh))
    rng = jax.device_put(jax.random.PRNGKey(1), partitioning.replicated(mesh))

    ref_abstract = trainer.abstract_params(ref_cfg, mesh, rules, a.sequence_length)
    ref_sh = jax.tree.map(lambda x: x.sharding, ref_abstract)
    ref_model = Transformer(ref_cfg)
    ref_params = jax.jit(lambda r: nn.unbox(ref_model.init(r, jnp.zeros((1, a.sequence_length), jnp.int32))["params"]),
                         out_shardings=ref_sh)(jax.random.PRNGKey(2))
    frozen = {"reference": ref_params}

    def step_fns(loss_factory, frozen_models=None):
      return trainer.build_step_functions(
          cfg, tx, schedule, mesh, rules, sequence_length=a.sequence_length, loss_factory=loss_factory,
          frozen_models=frozen_models, frozen_shardings={"reference": ref_sh} if frozen_models else None)

    plain = step_fns(make_lm_loss)
    offline = step_fns(functools.partial(make_selective_loss, ratio=a.ratio, reference="offline"))
    online = step_fns(functools.partial(make_selective_loss, ratio=a.ratio, reference="online"),
                      {"reference": ref_model})
    score = jax.jit(make_lm_scorer(ref_model, with_token_losses=True), out_shardings=partitioning.replicated(mesh))

    states = {name: fns.init(jax.random.PRNGKey(0)) for name, fns in
              (("ce", plain), ("rho1_offline", offline), ("rho1_online", online))}
    calls = {
        "scoring": lambda: score(ref_params, batch),
        "ce": lambda: plain.train_step(states["ce"], batch, rng, None),
        "rho1_offline": lambda: offline.train_step(states["rho1_offline"], batch_offline, rng, None),
        "rho1_online": lambda: online.train_step(states["rho1_online"], batch, rng, frozen),
    }

    def run(name):
      out = calls[name]()
      if name != "scoring":
        states[name], out = out
      return out

    for name in calls:  # compile + one warm step
      for _ in range(2):
        jax.block_until_ready(run(name))
    times = {name: [] for name in calls}
    for _ in range(a.rounds):
      for name in calls:
        t = time.perf_counter()
        for _ in range(a.steps):
          out = run(name)
        jax.block_until_ready(out)
        times[name].append((time.perf_counter() - t) / a.steps)
    last = jax.device_get(out)

  dt = {k: statistics.median(v) for k, v in times.items()}
  f_train = train_flops_per_token(cfg, a.sequence_length)
  f_fwd_ref = forward_flops_per_token(ref_cfg, a.sequence_length)
  print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}) x{jax.device_count()}, mesh "
        f"{dict(mesh.shape)}")
  print(f"model {a.preset}: {count_params(cfg):,} params; reference {a.ref_preset or a.preset}: "
        f"{count_params(ref_cfg):,} params; vocab {cfg.vocab_size}; batch {a.batch_size} x {a.sequence_length} = "
        f"{tokens:,} tokens; {a.dtype}; ratio {a.ratio}")
  for name, label in (("scoring", "offline scoring (forward)"), ("ce", "CE train step"),
                      ("rho1_offline", "RHO-1 step, offline ref"), ("rho1_online", "RHO-1 step, online ref")):
    spread = f"{min(times[name]) * 1e3:.1f}-{max(times[name]) * 1e3:.1f}"
    print(f"  {label:28s} {dt[name] * 1e3:9.2f} ms/batch ({spread}) {tokens / dt[name]:12,.0f} tokens/s")
  print(f"scoring / training tokens/s:        {dt['ce'] / dt['scoring']:.2f}  (FLOPs: "
        f"{f_train / f_fwd_ref:.2f}; scoring runs the reference model)")
  print(f"RHO-1 offline step / CE step:       {dt['rho1_offline'] / dt['ce']:.3f}  (FLOPs: 1.000)")
  print(f"RHO-1 online step / CE step:        {dt['rho1_online'] / dt['ce']:.3f}  (FLOPs: 1 + N_ref/(3N) = "
        f"{1 + f_fwd_ref / f_train:.3f}; from the measured forward: 1 + t_score / t_CE = "
        f"{1 + dt['scoring'] / dt['ce']:.3f})")
  print(f"(last online step: selected fraction {float(last['selected_fraction']):.4f}, loss {float(last['loss']):.3f})")


if __name__ == "__main__":
  main()
