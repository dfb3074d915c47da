#!/usr/bin/env python
r"""Training throughput of a preset on the current backend: tokens/s, achieved FLOP/s and model-FLOPs utilisation,
and, with `--peer torch`, the same model trained by PyTorch in the same process, alternating, with their ratio.

  python scripts/bench_train.py --preset tiny --batch_size 16 --sequence_length 128
  python scripts/bench_train.py --preset pythia_14m --batch_size 8 --sequence_length 256 --peer torch --loss_chunk 0,256

Model FLOPs per token: 6·N + 12·L·H·Q·T (bliss_jax/models/flops.py). Peak FLOP/s: on TPU/GPU the vendor's dense
peak for the device kind and dtype (table below); on CPU there is no datasheet figure for this machine, so the peak is
MEASURED in the same run as the best of several large float32 matmuls (jnp.dot, 2048^2) — the roofline this backend
reaches on the op the model is made of. Data are synthetic (bliss_jax/data/synthetic.py); the first steps (compile)
are excluded.

The peer (`--peer torch`) is the Hugging Face `transformers` model of the same shape (`export.hf.hf_config`:
GPTNeoXForCausalLM for the Pythia presets, LlamaForCausalLM for RMSNorm ones), built from its config with a random
initialisation (no download), float32 parameters (bfloat16 autocast with `--dtype bfloat16`), on the GPU when
bliss_jax runs on one, trained the same way: per-token cross-entropy over the same batches, AdamW
with the same betas, weight decay and global-norm clipping. The two run `--rounds` times in turn, `--steps` steps
each, so both see the same machine load; the figures are the medians over rounds and the ratio is bliss_jax's
tokens/s over the peer's; with several rounds, also the geometric mean of the rounds' paired ratios (the peer's
step time over ours in the same round) with its 95% t interval (`report.intervals.ratio_interval`), the figure to
read on a machine whose speed drifts between rounds. `--peer_process own` runs the peer in a child process of its
own (this script, serving the timed steps over a pipe) so that the two stacks' buffers do not share one heap: in one
process the one allocating second finds the heap fragmented by the other's (at pythia-14m our step faulted 18k pages
a step next to the peer's 412 MB logits, 0 alone). `--loss_chunk 0,256` runs the LM loss from the full logits and
chunked (alternating too); `--attention einsum,cudnn` the two `ModelConfig.attention` paths (cuDNN: GPU, bfloat16).
`--head_dtype float32,bfloat16` the output head's matmul in float32 and in bfloat16 (what autocast gives the peer).
`--profile DIR` then traces two steps of each variant (`jax.profiler`, one directory each; `xprof --logdir DIR`) and
prints each one's longest ops per step (`bliss_jax.op_times`; run under `XLA_FLAGS=--xla_dump_to=DIR2` to see each
op's shape and JAX operation).

Host memory: the script keeps freed memory for reuse (`bliss_jax.host_allocator`) as the CLI does, and the peer's
steps run under the same setting (PyTorch's CPU tensors come from the same malloc); `--host_allocator glibc,kept`
alternates glibc's thresholds and kept memory within the run (the arena count is fixed when the threads start:
`BLISS_JAX_HOST_ALLOCATOR=glibc` for glibc's defaults throughout). Each figure comes with the process's minor page
faults per step.
"""
import argparse
import dataclasses
import functools
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax import cli, host_allocator  # noqa: E402

cli.use_cpu_cores()  # BLISS_JAX_CPU_DEVICES=2: two XLA:CPU devices, e.g. for --data_devices 1,2
host_allocator.keep_freed_memory()  # after XLA_FLAGS is final, before any thread that allocates exists

if "--peer" in sys.argv and "torch" in sys.argv:
  # torch's own LLVM (torch._dynamo) aborts a process that loaded TensorFlow's first (seqio imports it through
  # bliss_jax); loaded first, both coexist.
  import torch  # noqa: F401
  import torch._dynamo  # noqa: F401
  import transformers  # noqa: F401
  from transformers import GPTNeoXForCausalLM, LlamaForCausalLM  # noqa: F401

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bliss_jax import op_times, partitioning  # noqa: E402
from bliss_jax.data.synthetic import SyntheticBatches  # noqa: E402
from bliss_jax.losses.lm import CHUNK_TOKENS, make_lm_loss  # noqa: E402
from bliss_jax.models.config import count_params, preset  # noqa: E402
from bliss_jax.models.flops import train_flops_per_token  # noqa: E402
from bliss_jax.report import intervals  # noqa: E402
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


def compilations(jitted) -> int:
  """How many programs a jitted function has compiled (its cache's size)."""
  return jitted._cache_size()


def minor_faults() -> int:
  """The process's minor page faults so far (a page first written after the allocator took it from the system)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def torch_peer(cfg, optimizer: trainer.OptimizerConfig, batches):
  """`step(i) -> None`: one training step of the `transformers` model of `cfg`'s shape on `batches[i]`."""
  import torch
  import transformers

  from bliss_jax.export.hf import hf_config

  device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
  config = transformers.AutoConfig.for_model(**hf_config(cfg))
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=optimizer.peak_lr, betas=(optimizer.b1, optimizer.b2),
                          weight_decay=optimizer.weight_decay)
  data = [{k: torch.from_numpy(np.asarray(b[k], np.int64)).to(device)
           for k in ("decoder_input_tokens", "decoder_target_tokens")} for b in batches]
  # bfloat16 compute as ours: float32 parameters, matmuls in bfloat16 (autocast), the loss in float32
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")

  def step(i):
    b = data[i]
    with autocast:
      logits = model(input_ids=b["decoder_input_tokens"]).logits
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                             b["decoder_target_tokens"].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if optimizer.clip_norm:
      torch.nn.utils.clip_grad_norm_(model.parameters(), optimizer.clip_norm)
    opt.step()

  def synchronize():
    if device == "cuda":
      torch.cuda.synchronize()

  return step, synchronize, f"transformers {transformers.__version__} {type(model).__name__}, torch " \
                            f"{torch.__version__} on {device} ({torch.get_num_threads()} threads)"


def timed(step, synchronize):
  """`run(mode, start, end) -> (seconds, minor page faults)` of steps start..end-1 in this process (`mode`: the host
  allocator's, already set by the caller)."""
  def run(mode, start, end):
    del mode
    f, t = minor_faults(), time.perf_counter()
    for i in range(start, end):
      step(i)
    synchronize()
    return time.perf_counter() - t, minor_faults() - f
  return run


def serve_peer(cfg, optimizer, batches):
  """The child's side of `--peer_process own`: each stdin line `mode start end` runs the peer's steps start..end-1
  under host allocator `mode` and answers `PEER seconds faults` on stdout."""
  step, synchronize, name = torch_peer(cfg, optimizer, batches)
  run = timed(step, synchronize)
  print(f"PEER {name}", flush=True)
  for line in sys.stdin:
    mode, start, end = line.split()
    host_allocator.set_mode(mode, one_arena=host_allocator.cpu_device_count() == 1)
    seconds, faults = run(mode, int(start), int(end))
    print(f"PEER {seconds} {faults}", flush=True)


def peer_process():
  """`(run, name)` of a child process serving the peer (`serve_peer`), started with this script's arguments."""
  child = subprocess.Popen([sys.executable, os.path.abspath(__file__)] + sys.argv[1:] + ["--serve_peer"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

  def answer():
    for line in child.stdout:
      if line.startswith("PEER "):
        return line[5:].strip()
    raise RuntimeError(f"the peer's process ended (exit code {child.wait()}) without answering")

  def run(mode, start, end):
    child.stdin.write(f"{mode} {start} {end}\n")
    child.stdin.flush()
    seconds, faults = answer().split()
    return float(seconds), float(faults)
  return run, answer()


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="tiny")
  p.add_argument("--vocab_size", type=int, default=None, help="override the preset's vocabulary")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--steps", type=int, default=10, help="timed steps per round (per side)")
  p.add_argument("--rounds", type=int, default=1)
  p.add_argument("--warmup_steps", type=int, default=2)
  p.add_argument("--warmup_rounds", type=int, default=1,
                 help="whole rounds (every variant and the peer) run untimed first: the first timed round after the "
                      "setup ran several times slower than the rest")
  p.add_argument("--dtype", default="float32")
  p.add_argument("--mesh_model", type=int, default=1)
  p.add_argument("--peer", choices=("none", "torch"), default="none")
  p.add_argument("--peer_process", choices=("same", "own"), default="same",
                 help="run the peer in this process (same) or in a child process of its own (own)")
  p.add_argument("--serve_peer", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--data_devices", default="",
                 help="devices of the data axis (default: all); several, comma-separated, alternate in each round, "
                      "e.g. 1,2 with BLISS_JAX_CPU_DEVICES=2 (one CPU device per core)")
  p.add_argument("--loss_chunk", default=str(CHUNK_TOKENS),
                 help="losses.lm.make_lm_loss's chunk_tokens (0: the model's full logits); several, comma-separated, "
                      "alternate in each round")
  p.add_argument("--head_dtype", default="",
                 help="comma-separated ModelConfig.head_dtype values to compare, e.g. float32,bfloat16 (default: the "
                      "model's)")
  p.add_argument("--attention", default="einsum",
                 help="ModelConfig.attention (einsum, cudnn); several, comma-separated, alternate in each round")
  p.add_argument("--profile", default="",
                 help="after the timed rounds, write a jax.profiler trace of 2 steps of each variant to a directory of "
                      "its own under this one (open it with XProf / TensorBoard's profile plugin) and print its "
                      "longest ops (bliss_jax.op_times; with their HLO where XLA_FLAGS=--xla_dump_to=DIR)")
  p.add_argument("--profile_top", type=int, default=25, help="ops listed per variant with --profile")
  p.add_argument("--host_allocator", default="kept",
                 help="bliss_jax.host_allocator modes (kept: freed host memory kept for reuse; glibc: glibc's own "
                      "thresholds); several, comma-separated, alternate in each round, the peer's steps too")
  a = p.parse_args()

  overrides = {"dtype": a.dtype}
  if a.vocab_size:
    overrides["vocab_size"] = a.vocab_size
  cfg = preset(a.preset, **overrides)
  rules = partitioning.logical_rules()
  optimizer = trainer.OptimizerConfig(warmup_steps=1)
  n_batches = a.warmup_steps + a.steps
  tx, schedule = trainer.make_tx(optimizer, n_batches * (a.warmup_rounds + a.rounds))
  source = SyntheticBatches(vocab_size=cfg.vocab_size, batch_size=a.batch_size, sequence_length=a.sequence_length)
  host_batches = [next(source) for _ in range(n_batches)]
  if a.serve_peer:
    return serve_peer(cfg, optimizer, host_batches)
  chunks = [int(c) for c in a.loss_chunk.split(",")]
  device_counts = [int(n) for n in a.data_devices.split(",")] if a.data_devices else [
      jax.device_count() // a.mesh_model]
  attentions = a.attention.split(",")
  heads = [h or None for h in a.head_dtype.split(",")]
  # (attention, head dtype, loss chunk, data devices)
  variants = [(att, h, c, n) for n in device_counts for c in chunks for h in heads for att in attentions]
  steps, states, data, rng, meshes, compiled = {}, {}, {}, {}, {}, {}
  t_start = time.perf_counter()

  def progress(message):
    """A line on stderr as each stage ends, so a run stopped at a time limit still shows how far it got."""
    print(f"[{time.perf_counter() - t_start:6.1f} s] {message}", file=sys.stderr, flush=True)

  label = lambda v: f"attention {v[0]}, head {v[1] or 'default'}, loss chunk {v[2]}, {v[3]} data device(s)"
  failed = {}
  for v in variants:
    attention, head, chunk, n = v
    mesh = meshes[v] = partitioning.make_mesh(n, a.mesh_model, jax.devices()[:n * a.mesh_model])
    try:  # a variant this backend cannot compile or run (e.g. cuDNN's kernel) is reported, and the others go on
      with partitioning.mesh_context(mesh, rules):
        rng[v] = jax.device_put(jax.random.PRNGKey(1), partitioning.replicated(mesh))
        data[v] = [partitioning.global_batch_from_local(b, mesh) for b in host_batches]
        model_cfg = dataclasses.replace(cfg, attention=attention, head_dtype=head)
        fns = trainer.build_step_functions(model_cfg, tx, schedule, mesh, rules, sequence_length=a.sequence_length,
                                           loss_factory=functools.partial(make_lm_loss, chunk_tokens=chunk))
        state = fns.init(jax.random.PRNGKey(0))
        for b in data[v][:a.warmup_steps]:
          state, m = fns.train_step(state, b, rng[v], None)
        jax.block_until_ready(m)
        steps[v], states[v], compiled[v] = fns.train_step, state, compilations(fns.train_step)
    except Exception as e:  # pylint: disable=broad-except
      failed[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
      progress(f"{label(v)}: FAILED, left out ({failed[v]})")
      continue
    progress(f"{label(v)}: compiled, {a.warmup_steps} warm-up step(s) run")
  variants = [v for v in variants if v not in failed]
  if not variants:
    raise SystemExit("every variant failed: " + "; ".join(f"{v}: {e}" for v, e in failed.items()))
  peer_run = None
  if a.peer == "torch":
    if a.peer_process == "own":
      peer_run, peer_name = peer_process()
    else:
      peer_step, peer_sync, peer_name = torch_peer(cfg, optimizer, host_batches)
      peer_run = timed(peer_step, peer_sync)
    peer_run(a.host_allocator.split(",")[0], 0, a.warmup_steps)
    if a.peer_process == "own":
      peer_name += ", in its own process"
    progress(f"peer: {a.warmup_steps} warm-up step(s) run")
  modes = a.host_allocator.split(",")
  runs = [(v, mode) for mode in modes for v in variants]
  ours, theirs = {r: [] for r in runs}, {mode: [] for mode in modes}
  faults = {r: [] for r in runs + modes}  # minor page faults per step (the process's, during the timed steps)
  for round_index in range(a.warmup_rounds + a.rounds):
    timed_round = round_index >= a.warmup_rounds
    for mode in modes:
      host_allocator.set_mode(mode, one_arena=host_allocator.cpu_device_count() == 1)
      for v in variants:
        state = states[v]
        with partitioning.mesh_context(meshes[v], rules):  # outside it the step would be traced and compiled anew
          f, t = minor_faults(), time.perf_counter()
          for b in data[v][a.warmup_steps:]:
            state, m = steps[v](state, b, rng[v], None)
          jax.block_until_ready(m)
          seconds, n_faults = time.perf_counter() - t, minor_faults() - f
        if timed_round:
          ours[(v, mode)].append(seconds / a.steps)
          faults[(v, mode)].append(n_faults / a.steps)
        states[v] = state
      if peer_run is not None:
        seconds, n_faults = peer_run(mode, a.warmup_steps, n_batches)
        if timed_round:
          theirs[mode].append(seconds / a.steps)
          faults[mode].append(n_faults / a.steps)
    if timed_round:
      progress(f"round {round_index - a.warmup_rounds + 1}/{a.rounds}, ms per step: " + ", ".join(
          [f"{r[0]} {r[1]}: {1e3 * ours[r][-1]:.1f}" for r in runs]
          + [f"peer {mode}: {1e3 * theirs[mode][-1]:.1f}" for mode in modes if theirs[mode]]))
  tables = {}
  if a.profile:
    for v in variants:
      trace_dir = os.path.join(a.profile, f"{v[0]}_{v[1] or 'default'}_{v[2]}_{v[3]}")
      with jax.profiler.trace(trace_dir), partitioning.mesh_context(meshes[v], rules):
        state = states[v]
        for b in data[v][a.warmup_steps:a.warmup_steps + 2]:
          state, m = steps[v](state, b, rng[v], None)
        states[v] = jax.block_until_ready(state)
      tables[v] = trace_dir, op_times.format_table(op_times.op_times(trace_dir), per=2, top=a.profile_top,
                                                   dump_dir=op_times.xla_dump_dir(), kinds=10)
    progress(f"profile of 2 steps per variant written to {a.profile}")
  recompiled = {v: compilations(steps[v]) - compiled[v] for v in variants}
  if any(recompiled.values()):
    raise RuntimeError(f"the train step compiled again after its warm-up steps ({recompiled} new programs per "
                       "variant): the timed steps did not run the program the warm-up compiled")
  tokens = a.batch_size * a.sequence_length
  peak, how = peak_flops(a.dtype)
  print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}) x{jax.device_count()}; each variant's "
        f"step compiled {', '.join(str(compiled[v]) for v in variants)} program(s) in its warm-up, none after")
  for v, error in failed.items():
    print(f"left out, failed to compile or run: {label(v)}: {error}")
  print(f"preset {a.preset}: {count_params(cfg):,} params, vocab {cfg.vocab_size}, batch {a.batch_size} x "
        f"{a.sequence_length}, {a.dtype}; median over {a.rounds} round(s) of {a.steps} steps, after "
        f"{a.warmup_rounds} untimed round(s)")
  peer_dt = {mode: statistics.median(t) for mode, t in theirs.items()} if peer_run is not None else None
  best_peer = min(peer_dt.values()) if peer_dt else None

  def name(r):
    (attention, head, chunk, n), mode = r
    return ((f"attention {attention}, " if len(attentions) > 1 else "")
            + (f"head {head or 'default'}, " if len(heads) > 1 else "")
            + f"loss chunk {chunk or 'none (full logits)'}, {n} data device(s)"
            + (f", host allocator {mode}" if len(modes) > 1 else ""))

  for r in runs:
    dt = statistics.median(ours[r])
    flops = train_flops_per_token(cfg, a.sequence_length) * tokens / dt
    print(f"{name(r)}: step {dt * 1e3:.1f} ms | {tokens / dt:,.0f} tokens/s | "
          f"{flops / 1e9:.2f} GFLOP/s achieved | peak {peak / 1e9:.1f} GFLOP/s ({how}) | MFU {100 * flops / peak:.1f}%"
          + f" | {statistics.median(faults[r]):,.0f} page faults/step"
          + (f" | {best_peer / dt:.2f}x the peer" if best_peer else "")
          + (f" | {statistics.median(ours[runs[0]]) / dt:.2f}x the first" if r != runs[0] else ""))
    if a.rounds > 1:
      baselines = ([("the peer", theirs[r[1]])] if peer_run is not None else []) + (
          [("the first", ours[runs[0]])] if r != runs[0] else [])
      for what, baseline in baselines:
        ratio = intervals.ratio_interval(baseline, ours[r])
        print(f"  over {what}, round by round: {ratio.mean:.3f}x [{ratio.low:.3f}, {ratio.high:.3f}] (geometric mean "
              f"of the {a.rounds} rounds' paired ratios, {ratio.level:.0%} t interval)")
  for v, (trace_dir, table) in tables.items():
    print(f"device time per step by op, {label(v)} (trace in {trace_dir}):\n{table}")
  if peer_run is not None:
    print(f"peer: {peer_name}: " + ", ".join(
        f"{tokens / dt:,.0f} tokens/s, {statistics.median(faults[mode]):,.0f} page faults/step"
        + (f" (host allocator {mode})" if len(modes) > 1 else "")
        for mode, dt in peer_dt.items()) + ("; ratios are to its faster" if len(modes) > 1 else ""))
  print("rounds (tokens/s; " + ", ".join(name(r) for r in runs)
        + "".join(f", peer ({mode})" for mode in modes) * (peer_run is not None) + "): " +
        "; ".join("/".join([f"{tokens / ours[r][i]:,.0f}" for r in runs]
                           + [f"{tokens / theirs[mode][i]:,.0f}" for mode in modes if peer_run is not None])
                  for i in range(a.rounds)))

if __name__ == "__main__":
  main()
