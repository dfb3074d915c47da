"""`host_allocator`: freed host memory kept for reuse (glibc's mallopt), so a block allocated again every step is
not faulted in again."""
import subprocess
import sys

import pytest

from bliss_jax import host_allocator

# A block of MiB (56: the `tiny` train step's temporary buffer) allocated, written and freed four times on each of two
# threads, as XLA:CPU's workers do every step; prints the page faults of each allocation.
REALLOCATE = r"""
import resource, sys, threading
import numpy as np
from bliss_jax import host_allocator
mode, mib = sys.argv[1], int(sys.argv[2])
if mode == "kept_several_devices":  # as the CLI sets it up in a process with two XLA:CPU devices
  assert host_allocator.keep_freed_memory({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
elif mode != "default":
  assert host_allocator.set_mode(mode)
faults = []
def work():
  for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    block = np.empty(mib << 18, np.float32)
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


def _faults(mode, mib=56):
  out = subprocess.run([sys.executable, "-c", REALLOCATE, mode, str(mib)], capture_output=True, text=True,
                       check=True).stdout
  return [int(f) for f in out.split()]


@pytest.mark.skipif(host_allocator._libc() is None, reason="the C library is not glibc")  # pylint: disable=protected-access
def test_kept_memory_is_not_faulted_in_again():
  default, glibc, kept = _faults("default"), _faults("glibc"), _faults("kept")
  # glibc maps a block this large afresh every time: every allocation faults its pages in (fewer with huge pages)
  assert min(default) > 8 and min(glibc) > 8, (default, glibc)
  # kept: the first allocation faults its pages in once; every later one, on either thread, reuses them
  assert kept[0] > 8 and max(kept[1:]) <= 2, kept


@pytest.mark.skipif(host_allocator._libc() is None, reason="the C library is not glibc")  # pylint: disable=protected-access
def test_blocks_larger_than_a_thread_arena_are_kept_with_several_devices_too():
  # 128 MiB (pythia-14m's step needs 476): a worker thread's own arena grows in heaps of at most 64 MiB and maps a
  # larger block afresh, so the threads must share the main heap whatever the device count (they had their own
  # arenas where XLA_FLAGS asked for several CPU devices: every allocation faulted)
  kept = _faults("kept_several_devices", mib=128)
  assert kept[0] > 8 and max(kept[1:]) <= 2, kept


def test_keep_freed_memory_obeys_the_environment():
  assert host_allocator.keep_freed_memory({host_allocator.ENV_VAR: "glibc"}) is False  # nothing changed
  with pytest.raises(ValueError, match="BLISS_JAX_HOST_ALLOCATOR='tcmalloc': expected one of kept, glibc"):
    host_allocator.keep_freed_memory({host_allocator.ENV_VAR: "tcmalloc"})
  with pytest.raises(ValueError, match="unknown host allocator mode 'cached'"):
    host_allocator.set_mode("cached")

