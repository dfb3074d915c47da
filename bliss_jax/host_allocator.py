"""How the host's C allocator (glibc malloc) treats freed memory: keep it for reuse, as a caching allocator does.

XLA:CPU allocates each execution's temporary buffer (a program's intermediate arrays: 56 MiB for the `tiny` train
step at 16 x 128) with malloc, on its worker threads, and frees it when the execution ends. By default glibc serves a
block above its mmap threshold (at most 32 MiB) by a fresh `mmap`, gives a worker thread's arena back to the system
when its heap empties, and trims the main heap's free top: every step then writes to new pages, one page fault per
4 KiB (docs/ARCHITECTURE.md, "Performance", has the measurements). `keep_freed_memory` (`mallopt`): blocks below
`KEPT_BYTES` from the heap, no trimming, and, where XLA:CPU runs one device, one arena for all threads (the main heap;
several CPU devices' threads would contend for it, and keep their own arenas, which still map a block over 64 MiB
afresh), so the next step reuses the same pages. The process then holds its peak host memory instead of returning
it. No computed number changes. Only where XLA:CPU is the backend (`cpu_only`): with a GPU or TPU plugin that JAX
would start, the device holds the arrays, and one arena for XLA:GPU's many compiler threads stalled its compile
(docs/ARCHITECTURE.md), so glibc's defaults stay.

It is process-wide and belongs at a program's start, before the threads that allocate exist (`cli.setup`, the
benchmarks, the test session, the notebook), never on import. `$BLISS_JAX_HOST_ALLOCATOR=glibc` leaves glibc's
defaults. Elsewhere than glibc (macOS, musl) it does nothing.
"""
import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import pkgutil
import re
from typing import Optional

ENV_VAR = "BLISS_JAX_HOST_ALLOCATOR"
MODES = ("kept", "glibc")

KEPT_BYTES = 1 << 30  # blocks below 1 GiB come from the heap; larger ones are mapped and unmapped as before
# glibc's thresholds once its dynamic adjustment has reached its maximum (64-bit: mmap 32 MiB, trim twice that):
# what a long-running process has by default, to benchmark against in one process.
GLIBC_BYTES = (32 << 20, 64 << 20)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _libc() -> Optional[ctypes.CDLL]:
  """The C library if it is glibc (it has `gnu_get_libc_version` and `mallopt`), else None."""
  name = ctypes.util.find_library("c")
  if not name:
    return None
  try:
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None
  except OSError:
    return None


def set_mode(mode: str, one_arena: bool = True) -> bool:
  """"kept": blocks below `KEPT_BYTES` from the heap, no trimming, and with `one_arena` one arena for the threads
  created afterwards (the main heap); "glibc": glibc's thresholds at their dynamic maximum (`GLIBC_BYTES`) and its
  default arena count. Returns whether glibc took every setting (False where the C library is not glibc)."""
  if mode not in MODES:
    raise ValueError(f"unknown host allocator mode {mode!r}; modes: {', '.join(MODES)}")
  libc = _libc()
  if libc is None:
    return False
  # trim -1: never trim (mallopt(3)); arena max 0: glibc's default (8 per core)
  settings = ((_M_ARENA_MAX, 1 if one_arena else 0), (_M_MMAP_THRESHOLD, KEPT_BYTES), (_M_TRIM_THRESHOLD, -1)) if (
      mode == "kept") else ((_M_ARENA_MAX, 0), (_M_MMAP_THRESHOLD, GLIBC_BYTES[0]), (_M_TRIM_THRESHOLD, GLIBC_BYTES[1]))
  return all([bool(libc.mallopt(param, ctypes.c_int(value))) for param, value in settings])


def cpu_device_count(environ=os.environ) -> int:
  """The XLA:CPU device count XLA_FLAGS asks for (`--xla_force_host_platform_device_count`), 1 without it."""
  counts = re.findall(r"--xla_force_host_platform_device_count=(\d+)", environ.get("XLA_FLAGS", ""))
  return int(counts[-1]) if counts else 1


def accelerator_plugins() -> list:
  """The installed PJRT plugins JAX would start besides XLA:CPU, found as JAX finds them (modules of the
  `jax_plugins` namespace package, entry points of group "jax_plugins", the `libtpu` package), without importing
  any of them."""
  found = [entry.name for entry in importlib.metadata.entry_points(group="jax_plugins")]
  spec = importlib.util.find_spec("jax_plugins")
  if spec is not None and spec.submodule_search_locations:
    found += [module.name for module in pkgutil.iter_modules(spec.submodule_search_locations)]
  if importlib.util.find_spec("libtpu") is not None:
    found.append("libtpu")
  return sorted(set(found))


def cpu_only(environ=os.environ) -> bool:
  """Whether XLA:CPU is the only backend JAX will start: `$JAX_PLATFORMS` names cpu alone, or, unset, no
  accelerator plugin is installed (`accelerator_plugins`)."""
  platforms = environ.get("JAX_PLATFORMS", "")
  if platforms:
    return {p.strip() for p in platforms.split(",") if p.strip()} <= {"cpu"}
  return not accelerator_plugins()


def keep_freed_memory(environ=os.environ) -> bool:
  """`set_mode("kept")`, with one arena where XLA_FLAGS asks for one CPU device, where XLA:CPU is the only backend
  (`cpu_only`) and `$BLISS_JAX_HOST_ALLOCATOR` is not "glibc"; else nothing changes. Returns whether the settings
  were made. Run it after XLA_FLAGS is final."""
  mode = environ.get(ENV_VAR, "kept") or "kept"
  if mode not in MODES:
    raise ValueError(f"${ENV_VAR}={mode!r}: expected one of {', '.join(MODES)}")
  return mode == "kept" and cpu_only(environ) and set_mode("kept", one_arena=cpu_device_count(environ) == 1)
