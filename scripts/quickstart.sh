#!/usr/bin/env bash
# The README's first command: set up .venv (once), train a small LM on the embedded default corpus, and compare its
# held-out loss with the unigram entropy of its tokenizer. Extra arguments go to scripts/train.py
# (e.g. --gin.NUM_STEPS=100).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/python scripts/train.py --gin_file=quickstart.gin "$@"
model_dir="$(sed -n "s/^MODEL_DIR = '\(.*\)'$/\1/p" runs/quickstart/config.gin 2>/dev/null || true)"
.venv/bin/python scripts/unigram_entropy.py --task embedded_default --split validation --sequence_length 128 \
  --model_dir "${model_dir:-runs/quickstart}"
