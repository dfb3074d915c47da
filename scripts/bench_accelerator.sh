#!/usr/bin/env bash
# The accelerator figures of docs/ARCHITECTURE.md's "Performance" section on the GPU or TPU at hand, in under 10
# minutes (each run has its own time limit): pythia-160m train-step throughput and MFU against the datasheet peak
# (bfloat16, both attention paths) and the PyTorch peer on the same GPU; BLISS's bilevel step at the paper's models
# (one device's share of the batch, 4 x 1024) against a proxy step (time, memory); the loop over the bare step; the
# pythia-14m step against the peer; the compiled peak memory of SALT's 2.8B step with and without the chunked loss;
# the bilevel settings at the CPU config's shapes (with the cosines).
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
# $BENCH_PROFILE: a directory for a jax.profiler trace of the pythia-160m steps (per-op device times: xprof --logdir)
PROFILE=(); if [[ -n ${BENCH_PROFILE:-} ]]; then PROFILE=(--profile "$BENCH_PROFILE/train_pythia_160m"); fi
ATTENTION=einsum; if [[ $INFO == gpu* ]]; then ATTENTION=einsum,cudnn; fi  # cuDNN's fused attention: GPUs only
# Each run has its own time limit (seconds; $BENCH_TIME_SCALE scales them all), most telling figures first; a run
# that fails or runs out of time is reported (SIGABRT: Python prints where each thread was) and the next one starts.
# The host allocator's "kept" mode (one malloc arena) is for XLA:CPU only, so the train-step runs use glibc's.
run() { local limit; limit=$(awk -v a="$1" -v s="${BENCH_TIME_SCALE:-1}" 'BEGIN { printf "%d", a * s }'); shift
        echo; echo "\$ $*"; local t0=$SECONDS
        timeout -s ABRT -k 10 "$limit" "$@" || echo "(exit $? — continuing)"; echo "($((SECONDS - t0)) s)"; }
run 220 "$PY" scripts/bench_train.py --preset pythia_160m --batch_size 32 --sequence_length 1024 --dtype bfloat16 --steps 10 --rounds 2 --attention $ATTENTION --loss_chunk 8192 --host_allocator glibc "${PEER[@]}" "${PROFILE[@]}"
run 200 "$PY" scripts/bench_bilevel.py --proxy pythia_31m --target pythia_410m --target_dtype bfloat16 --vocab_size 50304 --batch_size 4 --sequence_length 1024 --steps 2 --rounds 2 --converged_iters 0 --settings paper
run 60 "$PY" scripts/bench_loop.py --preset tiny --batch_size 16 --sequence_length 128 --steps 200 --log_every 50 --prefetch 0,2
run 40 "$PY" scripts/bench_train.py --preset pythia_14m --batch_size 8 --sequence_length 256 --steps 10 --rounds 2 --host_allocator glibc "${PEER[@]}"
run 40 "$PY" scripts/bench_memory.py --devices 1 --batch_size 16
run 40 "$PY" scripts/bench_bilevel.py --steps 2 --rounds 2 --settings paper,single_remat_mb4
