"""Test-session set-up: 8 host CPU devices for the sharding tests, quiet TF, shared fixtures.

XLA_FLAGS must be set before jax is imported anywhere, so it is done here at import time. Tests that want one
device use ``jax.devices()[:1]``.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
  """../shared/data, or a clean skip when the checkout has no shared/ beside it."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data not found at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture(scope="session")
def spread_params():
  """`spread(params, seed)`: params + 0.5 · N(0, 1) noise, leaf by leaf. Init's 0.02 scale makes every next-token
  distribution nearly uniform, which would hide what a model conditions on and let greedy decoding tie."""
  import jax  # pylint: disable=g-import-not-at-top

  def spread(params, seed):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [x + 0.5 * jax.random.normal(k, x.shape, x.dtype)
                                                  for x, k in zip(leaves, keys)])

  return spread
