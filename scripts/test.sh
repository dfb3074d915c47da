#!/usr/bin/env bash
# The README's second command (and what .ci/run calls): set up .venv (once), then run the test suite.
# Extra arguments go to pytest (e.g. -m "not integration" for the unit tier, -x, tests/test_transformer.py).
# The tests run in $BLISS_JAX_TEST_WORKERS processes (default: one per core, at most 4), each test file in one of them
# (pytest-xdist --dist loadfile, so module fixtures are built once); BLISS_JAX_TEST_WORKERS=0 runs them in this process.
# The 20 slowest test phases are listed at the end (--durations=0: all of them).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL=3
cores="$(nproc 2>/dev/null || echo 1)"
workers="${BLISS_JAX_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
if [ "$workers" -gt 1 ]; then
  exec .venv/bin/python -m pytest -q --durations=20 -n "$workers" --dist loadfile "$@"
fi
exec .venv/bin/python -m pytest -q --durations=20 "$@"
