#!/usr/bin/env bash
# The accelerator figures of docs/ARCHITECTURE.md's "Performance" section on the GPU or TPU at hand, in under 10
# minutes (each run has its own time limit): pythia-160m train-step throughput and MFU against the datasheet peak
# (bfloat16; both attention paths and both output-head dtypes on a GPU) and the PyTorch peer on the same device;
# BLISS's bilevel step at the paper's models (one device's share of the batch, 4 x 1024; the reference schedule with
# remat and 4 microbatches, K_in = 5 lower steps) against a proxy step (time and memory, per proxy update); the loop
# over the bare step; the pythia-14m step against the peer; the compiled peak memory of SALT's 2.8B step with and
# without the chunked loss. (The bilevel settings' hypergradient cosines are a CPU figure:
# `python scripts/bench_bilevel.py --settings paper,single_remat_mb4`.)
#   bash scripts/bench_accelerator.sh 2>&1 | tee bench_accelerator.log
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONFAULTHANDLER=1
# JAX takes 75% of GPU memory at start by default; the PyTorch peer runs in the same process and needs its own.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
PEER=()
if "$PY" -c "import torch, transformers" 2>/dev/null; then PEER=(--peer torch); fi
INFO=$("$PY" -c "import jax; print(jax.default_backend(), 'jax', jax.__version__, jax.devices())"); echo "$INFO"
# $BENCH_PROFILE: a directory for jax.profiler traces of the pythia-160m steps, whose longest ops are printed with
# their HLO (an XLA dump beside them). On a GPU the profiled run launches each kernel on its own (no CUDA graphs:
# a graph shows in a trace as one op).
PROFILE=(); PROFILE_FLAGS=${XLA_FLAGS:-}
if [[ -n ${BENCH_PROFILE:-} ]]; then
  PROFILE=(--profile "$BENCH_PROFILE/train_pythia_160m")
  PROFILE_FLAGS="$PROFILE_FLAGS --xla_dump_to=$BENCH_PROFILE/hlo"
  if [[ $INFO == gpu* ]]; then PROFILE_FLAGS="$PROFILE_FLAGS --xla_gpu_enable_command_buffer="; fi
fi
# cuDNN's fused attention: GPUs only; the output head's matmul in float32 (the default) and bfloat16 (the peer's)
VARIANTS=(--attention einsum); if [[ $INFO == gpu* ]]; then VARIANTS=(--attention einsum,cudnn --head_dtype float32,bfloat16); fi
# Each run has its own time limit (seconds; $BENCH_TIME_SCALE scales them all), most telling figures first; a run
# that fails or runs out of time is reported (SIGABRT: Python prints where each thread was) and the next one starts.
# The host allocator's "kept" mode (one malloc arena) is for XLA:CPU only, so the train-step runs use glibc's.
run() { local limit; limit=$(awk -v a="$1" -v s="${BENCH_TIME_SCALE:-1}" 'BEGIN { printf "%d", a * s }'); shift
        echo; echo "\$ $*"; local t0=$SECONDS
        timeout -s ABRT -k 10 "$limit" "$@" || echo "(exit $? — continuing)"; echo "($((SECONDS - t0)) s)"; }
run 270 env XLA_FLAGS="$PROFILE_FLAGS" "$PY" scripts/bench_train.py --preset pythia_160m --batch_size 32 --sequence_length 1024 --dtype bfloat16 --steps 10 --rounds 2 "${VARIANTS[@]}" --loss_chunk 8192 --host_allocator glibc "${PEER[@]}" "${PROFILE[@]}"
run 170 "$PY" scripts/bench_bilevel.py --proxy pythia_31m --target pythia_410m --target_dtype bfloat16 --vocab_size 50304 --batch_size 4 --sequence_length 1024 --inner_steps 5 --steps 2 --rounds 2 --converged_iters 0 --settings remat_mb4
run 60 "$PY" scripts/bench_train.py --preset pythia_14m --batch_size 8 --sequence_length 256 --steps 10 --rounds 2 --host_allocator glibc "${PEER[@]}"
run 60 "$PY" scripts/bench_loop.py --preset tiny --batch_size 16 --sequence_length 128 --steps 200 --log_every 50 --prefetch 0,2
run 40 "$PY" scripts/bench_memory.py --devices 1 --batch_size 16
