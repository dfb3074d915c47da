#!/usr/bin/env bash
# The README's second command (and what .ci/run calls): set up .venv (once), then run the test suite.
# Extra arguments go to pytest (e.g. -m "not integration" for the unit tier, -x, tests/test_transformer.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python -m pytest -q "$@"
