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
