"""`host_allocator`: freed host memory kept for reuse (glibc's mallopt), so a block allocated again every step is
not faulted in again."""
import subprocess
import sys

import pytest

from bliss_jax import host_allocator

# A 56 MiB block (the `tiny` train step's temporary buffer) allocated, written and freed four times on each of two
# threads, as XLA:CPU's workers do every step; prints the page faults of each allocation.
REALLOCATE = r"""
import resource, sys, threading
import numpy as np
from bliss_jax import host_allocator
mode = sys.argv[1]
if mode != "default":
  assert host_allocator.set_mode(mode)
faults = []
def work():
  for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    block = np.empty(56 << 18, np.float32)
    block[::1024] = 1.0  # one write per 4 KiB page
    keep = np.empty(1 << 10, np.float32)  # a small live block, as a step's outputs are
    del block
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
for _ in range(2):
  thread = threading.Thread(target=work)
  thread.start()
  thread.join()
print(*faults)
"""


def _faults(mode):
  out = subprocess.run([sys.executable, "-c", REALLOCATE, mode], capture_output=True, text=True, check=True).stdout
  return [int(f) for f in out.split()]


@pytest.mark.skipif(host_allocator._libc() is None, reason="the C library is not glibc")  # pylint: disable=protected-access
def test_kept_memory_is_not_faulted_in_again():
  default, glibc, kept = _faults("default"), _faults("glibc"), _faults("kept")
  # glibc maps a block this large afresh every time: every allocation faults its pages in (fewer with huge pages)
  assert min(default) > 8 and min(glibc) > 8, (default, glibc)
  # kept: the first allocation faults its pages in once; every later one, on either thread, reuses them
  assert kept[0] > 8 and max(kept[1:]) <= 2, kept


def test_keep_freed_memory_obeys_the_environment():
  assert host_allocator.keep_freed_memory({host_allocator.ENV_VAR: "glibc"}) is False  # nothing changed
  with pytest.raises(ValueError, match="BLISS_JAX_HOST_ALLOCATOR='tcmalloc': expected one of kept, glibc"):
    host_allocator.keep_freed_memory({host_allocator.ENV_VAR: "tcmalloc"})
  with pytest.raises(ValueError, match="unknown host allocator mode 'cached'"):
    host_allocator.set_mode("cached")


def test_accelerator_backends_keep_glibc_defaults(monkeypatch):
  assert host_allocator.cpu_only({"JAX_PLATFORMS": "cpu"})
  assert not host_allocator.cpu_only({"JAX_PLATFORMS": "cuda,cpu"})
  assert not host_allocator.cpu_only({"JAX_PLATFORMS": "tpu"})
  # no JAX_PLATFORMS: what is installed decides
  assert host_allocator.cpu_only({}) == (host_allocator.accelerator_plugins() == [])
  monkeypatch.setattr(host_allocator, "accelerator_plugins", lambda: ["xla_cuda13"])
  assert not host_allocator.cpu_only({})
  assert host_allocator.cpu_only({"JAX_PLATFORMS": "cpu"})
  # a GPU plugin installed: nothing changes (no mallopt call)
  monkeypatch.setattr(host_allocator, "set_mode", lambda *a, **k: pytest.fail("set_mode called"))
  assert host_allocator.keep_freed_memory({}) is False
  assert host_allocator.keep_freed_memory({"JAX_PLATFORMS": "cuda"}) is False


def test_accelerator_plugins_finds_jax_plugins_modules(tmp_path, monkeypatch):
  plugin = tmp_path / "jax_plugins" / "xla_fake"
  plugin.mkdir(parents=True)
  (plugin / "__init__.py").write_text("raise RuntimeError('imported')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  assert "xla_fake" in host_allocator.accelerator_plugins()  # found, not imported


def test_cpu_device_count_reads_xla_flags():
  assert host_allocator.cpu_device_count({}) == 1
  assert host_allocator.cpu_device_count({"XLA_FLAGS": "--xla_cpu_x=1 --xla_force_host_platform_device_count=2"}) == 2
  assert host_allocator.cpu_device_count({"XLA_FLAGS": "--xla_force_host_platform_device_count=8 "
                                                       "--xla_force_host_platform_device_count=3"}) == 3
