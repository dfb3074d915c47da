#!/usr/bin/env bash
# Creates ./.venv (once) and installs bliss_jax with its extras into it: $BLISS_JAX_EXTRAS, default "test,plot"
# (.ci/run adds "export": torch and transformers, ~3 GB, for the Hugging Face export tests). Idempotent: a second call
# only reinstalls when setup.cfg or the extras changed. Used by the two README commands and by .ci/run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BLISS_JAX_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
stamp="$venv/.bliss_jax_installed"
extras="${BLISS_JAX_EXTRAS:-test,plot}"
want="$( (cat "$root/setup.cfg"; echo "extras=$extras") | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || \
   ! (cd / && "$venv/bin/python" -c "import bliss_jax.models, tasks" 2>/dev/null); then
  echo "[setup_env] installing bliss_jax[$extras] into $venv (first run: ~1-3 min)" >&2
  "$venv/bin/pip" install -q -e "$root[$extras]"
  echo "$want" > "$stamp"
fi
