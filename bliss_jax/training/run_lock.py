"""An exclusive lock per run directory (a MODEL_DIR, a pipeline stage), so two processes never work in one.

`run_lock(directory)` takes `fcntl.flock` on `directory/<name>` and writes the holder's pid, host and start time into
the file; a second process is refused with `RunLocked` naming them. The OS releases a flock when its holder dies, so a
killed run never blocks the next one; a lock file that still names a holder when the lock is free was left by a
process that died without releasing it, and is reported before it is taken over. A clean release empties the file.
With `wait=True` a second process waits for the holder instead (processes sharing work on purpose: a comparison's
seeds run side by side).
Locks are re-entrant within a process. In a multi-process (multi-host) job only process 0 takes them.
"""
import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
import time
from typing import Iterator, Set

import jax

_held: Set[str] = set()  # paths of the locks this process holds
WAIT_POLL_SECONDS = 2.0  # how often a waiting process tries the lock again


class RunLocked(RuntimeError):
  """Another live process holds the directory's lock."""


def read_holder(path: str) -> dict:
  """What the lock file at `path` says about its (last) holder; {} when empty or unreadable."""
  try:
    with open(path) as f:
      text = f.read()
    return json.loads(text) if text.strip() else {}
  except (OSError, ValueError):
    return {}


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {holder.get('started', '?')}, "
          f"command: {holder.get('command', '?')})")


def _take(fd: int, path: str, what: str, wait: bool) -> None:
  """flock `fd` exclusively; BlockingIOError if another process holds it and not `wait` (polled, so that a signal
  handler runs while waiting)."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return
  except BlockingIOError:
    if not wait:
      raise
  logging.warning("%s is in use by another %s: %s; waiting for it", os.path.dirname(path), what,
                  _describe(read_holder(path)))
  while True:
    time.sleep(WAIT_POLL_SECONDS)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return
    except BlockingIOError:
      pass


@contextlib.contextmanager
def run_lock(directory: str, name: str = "run.lock", what: str = "run", wait: bool = False) -> Iterator[None]:
  """Hold the exclusive lock `directory/name` for the body; `what` names the directory's kind in messages.

  `wait`: while another live process holds it, wait (logging the holder once) instead of refusing."""
  if jax.process_index() != 0:
    yield
    return
  os.makedirs(directory, exist_ok=True)
  path = os.path.realpath(os.path.join(directory, name))
  if path in _held:
    yield
    return
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    _take(fd, path, what, wait)
  except BlockingIOError:
    os.close(fd)
    raise RunLocked(f"{os.path.dirname(path)} is in use by another {what}: {_describe(read_holder(path))}. Wait for "
                    "it to finish or stop it; two processes in one directory would both write it.") from None
  try:
    stale = read_holder(path)
    if stale:
      logging.warning("%s: stale lock record of %s, which ended without releasing it (killed?); taking it over",
                      path, _describe(stale))
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now().isoformat(timespec="seconds"),
          "command": " ".join(sys.argv)[:300]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    _held.add(path)
    yield
  finally:
    _held.discard(path)
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
