#!/usr/bin/env python
r"""BLISS's cost: one bilevel step, a Hessian-vector product and a gradient, against one proxy training step.

  python scripts/bench_bilevel.py                                # the CPU config's proxy (2 x 128) and target (4 x 192)
  python scripts/bench_bilevel.py --proxy pythia_31m --target pythia_410m --batch_size 32 --sequence_length 1024 \
      --vocab_size 50304                                         # the paper's shapes (accelerator)
  python scripts/bench_bilevel.py --memory_only --devices 8 --proxy pythia_31m --target pythia_410m \
      --target_dtype bfloat16 --batch_size 32 --sequence_length 1024 --vocab_size 50304 \
      --settings paper,remat,remat_mb4                           # the paper's shapes, per-device memory, on a CPU

Every function is compiled once and timed side by side in one run on the same batches: after warm-up, `--rounds`
rounds each time `--steps` calls of each kind back to back; each printed ratio is the median over rounds of (time of
the kind / time of the proxy train step within the round), so load changes between rounds cancel, and with several
rounds a second table gives the geometric mean of those paired ratios with its 95% t interval
(`report.intervals.ratio_interval`). Peak memory is
XLA's compiled-memory analysis of each function (argument + output + temporary bytes, what the program needs
resident), not a sampled RSS. Next to the times: the FLOP estimate of `bilevel.step.step_flops` over a proxy train
step, and the last columns divide each time and estimate by the K_in proxy updates a bilevel step makes. Kinds:
  proxy_step      AdamW step of the proxy on the LM loss (`trainer.build_step_functions`)
  proxy_step_remat the same with the proxy scanned over its layers and each block rematerialised
  grad            ∇ of the proxy's LM loss only
  hvp             one forward-over-reverse HVP of the lower objective G (`bilevel.hvp`)
  bilevel:NAME    the whole bilevel step (`bilevel.step`: K_in lower steps, ∇F, solver, hypergradient, AdamW on θs)
                  in the setting NAME (`--settings`, comma-separated):
                    paper        the reference implementation's: 3 normalised-solver iterations from z₀ = 1/numel
                    no_kl        the same with γ = 0 (no target forward)
                    warm1        one solver iteration per step, warm-started from the previous step's z
                    single       `schedule="single_pass"`: θp, z and θs from one forward-over-reverse pass
                                 (one warm-started normalised-solver iteration per step, z lagging one iteration)
                    single_no_kl the same with γ = 0
                    remat        paper with `remat=True`: the proxy and score model scanned over their layers,
                                 each block rematerialised, in every pass of the step
                    warm1_remat  warm1 and remat
                    single_remat single and remat
                    single_remat_no_kl  the same with γ = 0
                    remat_mb4    remat with `microbatches=4`: the proxy's objectives summed over 4 microbatches of
                                 rows, so one microbatch's block activations (and tangents) live at a time
                    single_remat_mb4, single_remat_mb4_no_kl  the same for single_remat, single_remat_no_kl
Next to each setting's cost: the cosine of its hypergradient to a converged solve (CG, `--converged_iters`, and
the cosine of that solve to one with twice the iterations, to show it converged) and to the paper setting's, both at
the setting's own state after the timed steps (its z carried for warm starts), so cheaper never silently means a
different direction. At a randomly initialised proxy the per-sample gradients are nearly collinear and every setting's
cosine is ≈ 1; `--proxy_train_steps N` trains the proxy on the synthetic bigram stream first. Away from the lower
optimum ∇²G is indefinite, and CG at λ_z then converges to the exact solution of an indefinite system (checked by the
twice-the-iterations cosine), which gradient-descent solvers such as the reference's never approach; the last line
prints ∇²G's most negative eigenvalue (power iteration) and each setting's cosine to the converged solve of the
positive-definite system with damping max(λ_z, 1.1·(−λ_min)).

`--memory_only` allocates and runs nothing: the proxy's train step and each setting's bilevel step are traced on
abstract inputs and compiled (`trainer.compiled_train_step`, `bilevel.loop.compiled_bilevel_step`) over `--devices`
devices with FSDP rules (faked on a CPU host, `--xla_force_host_platform_device_count`), and XLA's memory analysis
gives each program's peak per device: XLA:CPU's buffer assignment of the partitioned program, not a TPU's, but the
same program for every kind, so the ratios compare like for like at shapes no CPU could run. It is the program an
accelerator compiles: the CPU's own rewrites (`models.dense_dot`, `models.blocked_attention`) are off unless
$BLISS_JAX_DENSE_DOT is set (to an empty value: on). Next to the peaks, each
kind's FLOP estimate over a proxy train step (at the paper's shapes the target's forward for the KL alone is 6.5
proxy train steps).
"""
import argparse
import dataclasses
import os
import statistics
import sys
import time

_devices = argparse.ArgumentParser(add_help=False)
_devices.add_argument("--devices", type=int, default=0)
_devices.add_argument("--memory_only", action="store_true")
if _devices.parse_known_args()[0].devices > 1 and "jax" not in sys.modules:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                             f"{_devices.parse_known_args()[0].devices}").strip()
if _devices.parse_known_args()[0].memory_only:
  # the program an accelerator compiles: without the CPU's rewrites (`models.dense_dot`, `models.blocked_attention`)
  os.environ.setdefault("BLISS_JAX_DENSE_DOT", "xla")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax import host_allocator  # noqa: E402

host_allocator.keep_freed_memory()  # before any thread that allocates exists

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax.tree_utils as otu  # noqa: E402

from bliss_jax import partitioning  # noqa: E402
from bliss_jax.bilevel import hvp as hvp_lib  # noqa: E402
from bliss_jax.bilevel.loop import compiled_bilevel_step  # noqa: E402
from bliss_jax.bilevel.step import BilevelConfig, build_bilevel_functions, make_hypergradient, step_flops  # noqa: E402,E501
from bliss_jax.data.synthetic import SyntheticBatches  # noqa: E402
from bliss_jax.losses import bilevel as objectives  # noqa: E402
from bliss_jax.losses.lm import make_lm_loss, model_logits  # noqa: E402
from bliss_jax.models.config import count_params, preset  # noqa: E402
from bliss_jax.models.flops import hvp_flops_per_token, train_flops_per_token  # noqa: E402
from bliss_jax.models.score_model import from_lm_params, score_batch  # noqa: E402
from bliss_jax.models.transformer import Transformer, head_weight  # noqa: E402
from bliss_jax.report import intervals  # noqa: E402
from bliss_jax.training import trainer  # noqa: E402


def _memory(compiled):
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes) / 2**20


def _cosine(x, y):
  return float(otu.tree_vdot(x, y) / (otu.tree_norm(x) * otu.tree_norm(y)))


def most_negative_eigenvalue(matvec, like, iters=20):
  """λ_min of the symmetric operator `matvec` (pytrees like `like`) by two power iterations: the eigenvalue of largest
  magnitude λ*, then the largest of |λ*|·I − A, which is |λ*| − λ_min."""
  def power(op):
    v = otu.tree_random_like(jax.random.PRNGKey(0), like)
    lam = 0.0
    for _ in range(iters):
      w = op(v)
      lam = float(otu.tree_vdot(v, w) / otu.tree_vdot(v, v))
      v = otu.tree_scale(1.0 / otu.tree_norm(w), w)
    return lam
  shift = abs(power(matvec))
  return shift - power(lambda u: otu.tree_sub(otu.tree_scale(shift, u), matvec(u)))


def hypergradient_cosines(bl, settings, cfg, target, tparams, batch, converged_iters):
  """{kind: (cos to the converged solve, cos to the paper setting, cos converged vs twice its iterations, λ_min of
  ∇²G, cos to the converged solve of the positive-definite system (∇²G + λ'I), λ' = max(λ_z, 1.1·(−λ_min)))}, each at
  that setting's own state (`bilevel.step.make_hypergradient` on the candidate batch, the reference batch `batch`)."""
  out = {}
  for name, c in settings.items():
    f, s = bl["bilevel:" + name]
    t_logits = objectives.logit_chunks(target.cfg, head_weight(target.cfg, tparams), model_logits(
        target, tparams, batch, return_hidden="only")) if c.gamma else None
    run = lambda setting, x0: jax.jit(make_hypergradient(f.proxy, f.score_model, setting))(
        s.proxy, s.score, batch, batch, t_logits, x0)[0]
    converged = dataclasses.replace(c, solver="cg", solver_iters=converged_iters, warm_start=False,
                                    schedule="sequential")
    h_conv = run(converged, None)
    h_conv2 = run(dataclasses.replace(converged, solver_iters=2 * converged_iters), None)
    paper = dataclasses.replace(cfg, gamma=c.gamma)  # sequential, 3 iterations from z₀
    weights = objectives.sample_weights(score_batch(f.score_model, s.score, batch), c.weighting)
    proxy_cfg = f.proxy.cfg

    def g(q):
      hidden = model_logits(f.proxy, q, batch, return_hidden="only")
      ce, kl = objectives.chunked_sample_terms(proxy_cfg, head_weight(proxy_cfg, q), hidden, batch, t_logits,
                                               c.kl_direction)
      return objectives.lower_objective(ce, weights, q, kl=kl, gamma=c.gamma, l2=c.l2)[0]

    lam_min = most_negative_eigenvalue(jax.jit(lambda v: hvp_lib.hvp(g, s.proxy, v)), s.proxy)
    h_pd = run(dataclasses.replace(converged, damping=max(c.damping, -1.1 * lam_min)), None)
    mine = run(c, s.z if c.warm_start else None)
    out["bilevel:" + name] = (_cosine(mine, h_conv), _cosine(mine, run(paper, None)), _cosine(h_conv, h_conv2),
                              lam_min, _cosine(mine, h_pd))
  return out


def named_settings(cfg, names):
  """{name: BilevelConfig} of the comma-separated setting names (the module docstring's), from the paper setting."""
  warm1 = dataclasses.replace(cfg, warm_start=True, solver_iters=1)
  single = dataclasses.replace(warm1, schedule="single_pass")
  remat = lambda c, **kw: dataclasses.replace(c, remat=True, **kw)
  settings = {"paper": cfg, "no_kl": dataclasses.replace(cfg, gamma=0.0), "warm1": warm1, "single": single,
              "single_no_kl": dataclasses.replace(single, gamma=0.0), "remat": remat(cfg),
              "warm1_remat": remat(warm1), "single_remat": remat(single),
              "single_remat_no_kl": remat(single, gamma=0.0), "remat_mb4": remat(cfg, microbatches=4),
              "single_remat_mb4": remat(single, microbatches=4),
              "single_remat_mb4_no_kl": remat(single, microbatches=4, gamma=0.0)}
  unknown = [n for n in names.split(",") if n not in settings]
  if unknown:
    raise SystemExit(f"--settings: unknown {', '.join(unknown)} (known: {', '.join(settings)})")
  return {n: settings[n] for n in names.split(",")}


def flop_estimates(proxy_cfg, target_cfg, settings, batch_size, sequence_length):
  """{"bilevel:NAME": `step_flops` of the setting over a proxy train step} (the target's forward only with γ > 0)."""
  train = train_flops_per_token(proxy_cfg, sequence_length) * batch_size * sequence_length
  return {"bilevel:" + name: step_flops(proxy_cfg, target_cfg if c.gamma else None, c, batch_size,
                                        sequence_length) / train for name, c in settings.items()}


def memory_only(a, proxy_cfg, target_cfg, cfg):
  """Per-device compiled peaks of the proxy's train step (plain and rematerialised) and each setting's bilevel step on
  abstract inputs, FSDP over `--devices` devices; nothing is allocated."""
  B, L = a.batch_size, a.sequence_length
  mesh = partitioning.make_mesh(devices=jax.devices()[:max(a.devices, 1)])
  step = lambda c: trainer.compiled_train_step(c, batch_size=B, sequence_length=L, mesh=mesh, fsdp=True)
  mem = {"proxy_step": _memory(step(proxy_cfg)),
         "proxy_step_remat": _memory(step(dataclasses.replace(proxy_cfg, scan_layers=True, remat=True)))}
  settings = named_settings(cfg, a.settings)
  for name, c in settings.items():
    mem["bilevel:" + name] = _memory(compiled_bilevel_step(proxy_cfg, target_cfg, c, batch_size=B,
                                                           sequence_length=L, mesh=mesh, fsdp=True))
  print(f"proxy {count_params(proxy_cfg) / 1e6:.2f}M params ({proxy_cfg.dtype}), target "
        f"{count_params(target_cfg) / 1e6:.2f}M ({target_cfg.dtype}), vocab {proxy_cfg.vocab_size}, batch {B} x {L}, "
        f"K_in={a.inner_steps}, solver iterations {a.solver_iters}, FSDP over {mesh.shape['data']} "
        f"{jax.devices()[0].platform} device(s), "
        f"{'XLA dots and einsum attention' if os.environ['BLISS_JAX_DENSE_DOT'] else 'the CPU rewrites'}; compiled, "
        "nothing allocated")
  est = dict(proxy_step=1.0, proxy_step_remat=1.0, **flop_estimates(proxy_cfg, target_cfg, settings, B, L))
  print(f"{'kind':<28} {'peak MiB / device':>18} {'mem / proxy step':>17} {'FLOP est.':>10} {'per proxy update':>17}")
  for k, v in mem.items():
    updates = a.inner_steps if k.startswith("bilevel:") else 1
    print(f"{k:<28} {v:18.1f} {v / mem['proxy_step']:17.2f} {est[k]:10.2f} {est[k] / updates:17.2f}")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--proxy", default="cpu")
  p.add_argument("--target", default="cpu")
  p.add_argument("--vocab_size", type=int, default=2176)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--solver_iters", type=int, default=3)
  p.add_argument("--inner_steps", type=int, default=1)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--settings", default="paper,no_kl,warm1,single,single_no_kl")
  p.add_argument("--converged_iters", type=int, default=30,
                 help="CG iterations of the converged reference solve; 0: no cosines (each needs its own compilations)")
  p.add_argument("--target_dtype", default="float32")
  p.add_argument("--devices", type=int, default=0,
                 help="with --memory_only: FSDP over this many devices (faked on a CPU host); 0: all")
  p.add_argument("--memory_only", action="store_true",
                 help="compile on abstract inputs and print each kind's per-device peak memory; nothing runs")
  p.add_argument("--proxy_train_steps", type=int, default=0,
                 help="train the proxy this many AdamW steps on the synthetic bigram stream first, so the cosines are "
                      "measured away from a random initialisation")
  a = p.parse_args()
  V, B, L = a.vocab_size, a.batch_size, a.sequence_length
  proxy_cfg = (preset("tiny", vocab_size=V, num_layers=2, d_model=128, num_heads=4, num_kv_heads=4, d_ff=512)
               if a.proxy == "cpu" else preset(a.proxy, vocab_size=V))
  target_cfg = (preset("tiny", vocab_size=V, num_layers=4, d_model=192, num_heads=4, num_kv_heads=4, d_ff=768)
                if a.target == "cpu" else preset(a.target, vocab_size=V))
  target_cfg = dataclasses.replace(target_cfg, dtype=a.target_dtype)
  cfg = BilevelConfig(solver_iters=a.solver_iters, inner_steps=a.inner_steps, proxy_lr=1e-4, score_lr=1e-3)
  if a.memory_only:
    return memory_only(a, proxy_cfg, target_cfg, cfg)
  mesh = partitioning.make_mesh()
  rules = partitioning.logical_rules()
  batches = SyntheticBatches(vocab_size=V, batch_size=B, sequence_length=L, seed=0)
  batch = {k: np.asarray(v) for k, v in next(batches).items()}
  stacked = {k: np.stack([v] * a.inner_steps) for k, v in batch.items()}
  with partitioning.mesh_context(mesh, rules):
    tx, sched = trainer.make_tx(trainer.OptimizerConfig(), 1000)
    fns = trainer.build_step_functions(proxy_cfg, tx, sched, mesh, rules, sequence_length=L)
    state = fns.init(jax.random.PRNGKey(0))
    gbatch = partitioning.global_batch_from_local(batch, mesh)
    rng = jax.device_put(jax.random.PRNGKey(1), partitioning.replicated(mesh))
    m = None
    for _ in range(a.proxy_train_steps):
      state, m = fns.train_step(state, partitioning.global_batch_from_local(next(batches), mesh), rng, None)
    trained = f", trained {a.proxy_train_steps} steps (loss {float(m['loss']):.3f})" if m is not None else ""
    remat_fns = trainer.build_step_functions(dataclasses.replace(proxy_cfg, scan_layers=True, remat=True), tx, sched,
                                             mesh, rules, sequence_length=L)
    remat_state = remat_fns.init(jax.random.PRNGKey(0))
    proxy, target = Transformer(proxy_cfg), Transformer(target_cfg)
    params = jax.device_get(state.params)
    tparams = target.init(jax.random.PRNGKey(2), np.zeros((1, L), np.int32))["params"]
    loss = make_lm_loss(proxy)
    grad = jax.jit(jax.grad(lambda q, b: loss(q, b, None)[0]))
    w = np.full((B,), 1.0 / B, np.float32)
    g_obj = lambda q: objectives.lower_objective(objectives.chunked_sample_terms(
        proxy_cfg, head_weight(proxy_cfg, q), model_logits(proxy, q, gbatch, return_hidden="only"), gbatch)[0], w, q)[0]
    hvp = jax.jit(lambda q, v: hvp_lib.hvp(g_obj, q, v))
    settings = named_settings(cfg, a.settings)
    bl = {}
    for name, c in settings.items():
      name = "bilevel:" + name
      f = build_bilevel_functions(proxy_cfg, target_cfg, c, 1000, mesh, rules,
                                  target_shardings=jax.tree.map(lambda _: partitioning.replicated(mesh), tparams))
      head = {"kernel": np.zeros((proxy_cfg.d_model, 1), np.float32), "bias": np.zeros((1,), np.float32)}
      bl[name] = (f, f.init(params, from_lm_params(params, head)))
    train = jax.device_put(stacked, next(iter(bl.values()))[0].train_batch_sharding)

    def run(kind, n):
      """Seconds per call of `kind`'s executable (compiled once, below), over `n` calls."""
      nonlocal state, remat_state
      t = time.perf_counter()
      for _ in range(n):
        if kind == "proxy_step":
          state, _ = exe[kind](state, gbatch, rng, None)
          out = state
        elif kind == "proxy_step_remat":
          remat_state, _ = exe[kind](remat_state, gbatch, rng, None)
          out = remat_state
        elif kind == "grad":
          out = exe[kind](params, gbatch)
        elif kind == "hvp":
          out = exe[kind](params, params)
        else:
          f, s = bl[kind]
          s, out = exe[kind](s, train, gbatch, tparams)
          bl[kind] = (f, s)
      jax.block_until_ready(out)
      return (time.perf_counter() - t) / n

    kinds = ["proxy_step", "proxy_step_remat", "grad", "hvp"] + list(bl)
    t_start = time.perf_counter()
    progress = lambda message: print(f"[{time.perf_counter() - t_start:6.1f} s] {message}", file=sys.stderr,
                                     flush=True)  # how far a run stopped at a time limit got
    # each kind compiled once: its memory analysis and its timed calls use the same executable
    exe = {"proxy_step": fns.train_step.lower(state, gbatch, rng, None).compile(),
           "proxy_step_remat": remat_fns.train_step.lower(remat_state, gbatch, rng, None).compile(),
           "grad": grad.lower(params, gbatch).compile(),
           "hvp": hvp.lower(params, params).compile()}
    progress("proxy step, its remat, gradient and HVP: compiled")
    for k in bl:
      f, s = bl[k]
      exe[k] = f.step.lower(s, train, gbatch, tparams).compile()
      progress(f"{k}: compiled, peak {_memory(exe[k]):.1f} MiB")
    mem = {k: _memory(e) for k, e in exe.items()}
    for k in kinds:
      run(k, 2)  # warm up
    progress("all kinds warmed up")
    ratios = {k: [] for k in kinds}
    times = {k: [] for k in kinds}
    for r in range(a.rounds):
      order = kinds if r % 2 == 0 else kinds[::-1]
      t = {k: run(k, a.steps) for k in order}
      for k in kinds:
        ratios[k].append(t[k] / t["proxy_step"])
        times[k].append(t[k])
      progress(f"round {r + 1}/{a.rounds}, ms per step: " + ", ".join(f"{k} {1e3 * t[k]:.1f}" for k in kinds))
    cosines = (hypergradient_cosines(bl, settings, cfg, target, tparams, gbatch, a.converged_iters)
               if a.converged_iters else {})
  est = dict(grad=1.0, hvp=hvp_flops_per_token(proxy_cfg, L) / train_flops_per_token(proxy_cfg, L), proxy_step=1.0,
             proxy_step_remat=1.0,
             **flop_estimates(proxy_cfg, target_cfg, settings, B, L))
  print(f"proxy {count_params(proxy_cfg) / 1e6:.2f}M params{trained}, target {count_params(target_cfg) / 1e6:.2f}M, "
        f"batch {B} x {L}, K_in={a.inner_steps}, solver iterations {a.solver_iters}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)")
  print(f"{'kind':<28} {'ms':>9} {'time / proxy step':>18} {'FLOP est.':>10} {'peak MiB':>9} {'mem / proxy step':>17}"
        f" {'cos converged':>14} {'cos paper':>10} {'time / update':>14} {'FLOP / update':>14}")
  for k in kinds:
    cos = cosines.get(k)
    updates = a.inner_steps if k.startswith("bilevel:") else 1
    ratio = statistics.median(ratios[k])
    print(f"{k:<28} {1e3 * statistics.median(times[k]):9.1f} {ratio:18.2f} {est[k]:10.2f} "
          f"{mem[k]:9.1f} {mem[k] / mem['proxy_step']:17.2f}"
          + (f" {cos[0]:14.3f} {cos[1]:10.3f}" if cos else f" {'':14} {'':10}")
          + f" {ratio / updates:14.2f} {est[k] / updates:14.2f}")
  if not cosines:
    print("cosines not computed (--converged_iters 0)")
  else:
    print(f"converged solve: CG, {a.converged_iters} iterations; cosine to {2 * a.converged_iters}: "
          + ", ".join(f"{k} {v[2]:.4f}" for k, v in cosines.items()))
  if cosines:
    print("most negative eigenvalue of the lower Hessian (power iteration) and the cosine to the converged solve with "
          "damping max(λ_z, 1.1·(−λ_min)), positive definite: "
          + ", ".join(f"{k} λ_min {v[3]:.3g}, cos {v[4]:.3f}" for k, v in cosines.items()))
  if a.rounds > 1:
    print(f"time / proxy step, round by round (geometric mean of the {a.rounds} rounds' paired ratios, 95% t interval):")
    for k in kinds[1:]:
      r = intervals.ratio_interval(times[k], times["proxy_step"])
      print(f"  {k:<28} {r.mean:7.2f} [{r.low:.2f}, {r.high:.2f}]")


if __name__ == "__main__":
  main()
