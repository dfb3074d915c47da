#!/usr/bin/env bash
# The README's first command: set up .venv (once), then compare every method (plain, random selection, BLISS, MATES,
# SALT, SALT_DS, RKD, Vanilla KD, MiniPLM, RHO-1) at equal target compute on the embedded mixture (what a Python
# installation carries, labelled), and print the table (runs/compare_embedded/report.md, with figures). About 5
# minutes on 2 CPU cores; nothing is downloaded. On a CPU the job runs on one XLA device per core
# (BLISS_JAX_CPU_DEVICES=cores, docs/ARCHITECTURE.md "Performance"; set BLISS_JAX_CPU_DEVICES=1 for one device).
# Extra arguments go to scripts/compare.py (e.g. --gin.compare.methods="('plain', 'rho1')"). Rerunning continues
# where an interrupted run stopped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL=3
export BLISS_JAX_CPU_DEVICES="${BLISS_JAX_CPU_DEVICES:-cores}"
exec .venv/bin/python scripts/compare.py --gin_file=compare/embedded.gin "$@"
