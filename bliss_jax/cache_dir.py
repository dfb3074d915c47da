"""Where bliss_jax keeps what it builds once and reuses (trained vocabularies, compiled programs): `$BLISS_JAX_CACHE`,
by default ~/.cache/bliss_jax."""
import os

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "bliss_jax")
CACHE_ENV_VAR = "BLISS_JAX_CACHE"


def cache_dir() -> str:
  """Returns `$BLISS_JAX_CACHE`, by default `~/.cache/bliss_jax`."""
  return os.path.expanduser(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR)
