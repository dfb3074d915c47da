"""Resumable pipeline stages: each stage writes under its own directory and marks completion atomically.

`run_stage(root, name, fn, inputs)` returns the recorded result of a finished stage without running it again, and
otherwise runs `fn(stage_dir)` (which may itself resume, as training does from its checkpoints) and records
`{"inputs", "result", "seconds", "attempts"}` in `root/name/stage.json` by write-then-rename. A finished stage whose
recorded inputs differ from the ones given now is an error naming the stage, never a silent reuse. A running stage
holds `root/name/stage.lock` (`run_lock`): a second process that reaches the same unfinished stage is refused, naming
the holder, unless the stage lies under a directory given to `waiting_under` (a comparison's shared stages, when its
seeds run as separate processes): then it waits for the holder and reuses the stage's result.

Wall time counts every attempt. An attempt is recorded in `root/name/stage_attempts.json` when it starts; while it
runs, a heartbeat refreshes that file's modification time every `HEARTBEAT_SECONDS`. An attempt that ends (finished,
or raised: an error, an exit) records its measured seconds; one that was killed (a signal, power loss) is closed by the
next attempt as lasting from its start to the later of its last heartbeat and the last modification of a file in the
stage directory (a checkpoint, a shard) — short by less than `HEARTBEAT_SECONDS`.
`seconds` in stage.json is the sum over all attempts, `attempts` lists them (`end`: finished, error or interrupted).
"""
import contextlib
import json
import os
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence

from bliss_jax.training.run_config import write_json
from bliss_jax.training.run_lock import run_lock

STAGE_FILE = "stage.json"
STAGE_LOCK = "stage.lock"
STAGE_ATTEMPTS = "stage_attempts.json"
HEARTBEAT_SECONDS = 10.0
_now = time.time  # the clock of the attempts (tests replace it)


class StageInputsChanged(ValueError):
  pass


def _canonical(x):
  return json.loads(json.dumps(x, sort_keys=True, default=str))


def stage_done(root: str, name: str) -> bool:
  return os.path.exists(os.path.join(root, name, STAGE_FILE))


def stage_seconds(stage_dir: str) -> Optional[float]:
  """The wall seconds a finished stage took over all its attempts (None if it has not finished)."""
  path = os.path.join(stage_dir, STAGE_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get("seconds", 0.0)


def close_interrupted(attempts: List[dict], last_seen: float) -> List[dict]:
  """`attempts` with any attempt still open (killed: `seconds` None) closed as lasting from its start to `last_seen`
  (the last sign of it)."""
  return [a if a["seconds"] is not None else dict(a, seconds=max(0.0, last_seen - a["started"]), end="interrupted")
          for a in attempts]


def last_modified(directory: str, skip: Sequence[str] = (STAGE_LOCK,)) -> float:
  """The latest modification time of a file under `directory` (names in `skip` left out; 0.0 if none)."""
  times = [os.path.getmtime(os.path.join(d, f)) for d, _, files in os.walk(directory) for f in files if f not in skip]
  return max(times, default=0.0)


def _previous_attempts(stage_dir: str) -> List[dict]:
  """The attempts recorded in `stage_dir`, a killed one closed at the last sign of it (module docstring)."""
  path = os.path.join(stage_dir, STAGE_ATTEMPTS)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    attempts = json.load(f)
  return close_interrupted(attempts, last_modified(stage_dir))


@contextlib.contextmanager
def _heartbeat(path: str, every: float) -> Iterator[None]:
  """Refresh `path`'s modification time every `every` seconds while the body runs."""
  stop = threading.Event()

  def beat():
    while not stop.wait(every):
      t = _now()
      with contextlib.suppress(OSError):
        os.utime(path, (t, t))
  thread = threading.Thread(target=beat, daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()


def _finished(stage_dir: str, name: str, inputs: dict):
  """The recorded result of a finished stage (None if unfinished); refuses other inputs."""
  record_path = os.path.join(stage_dir, STAGE_FILE)
  if not os.path.exists(record_path):
    return None
  with open(record_path) as f:
    record = json.load(f)
  if record.get("inputs") != inputs:
    raise StageInputsChanged(
        f"stage {name!r} in {stage_dir} finished with other inputs ({record.get('inputs')} != {inputs}); "
        "delete that directory to rerun it")
  return record


def _attempt(stage_dir: str, fn: Callable[[str], Any]):
  """Run `fn(stage_dir)` as a new attempt; returns (result, every attempt so far with this one closed)."""
  os.makedirs(stage_dir, exist_ok=True)
  path = os.path.join(stage_dir, STAGE_ATTEMPTS)
  attempts = _previous_attempts(stage_dir)
  t0 = _now()
  attempts.append({"started": t0, "seconds": None, "end": None})
  write_json(path, attempts)
  try:
    with _heartbeat(path, HEARTBEAT_SECONDS):
      result = fn(stage_dir)
  except BaseException:
    attempts[-1].update(seconds=_now() - t0, end="error")
    write_json(path, attempts)
    raise
  attempts[-1].update(seconds=_now() - t0, end="finished")
  write_json(path, attempts)
  return result, attempts


_wait_roots: List[str] = []  # stages under these directories wait for another process's run of them


@contextlib.contextmanager
def waiting_under(directory: str) -> Iterator[None]:
  """In the body, a stage under `directory` that another process is running is waited for instead of refused."""
  path = os.path.realpath(directory)
  _wait_roots.append(path)
  try:
    yield
  finally:
    _wait_roots.remove(path)


def _waits(stage_dir: str) -> bool:
  path = os.path.realpath(stage_dir)
  return any(os.path.commonpath([path, r]) == r for r in _wait_roots)


def run_stage(root: str, name: str, fn: Callable[[str], Any], inputs: Optional[dict] = None, *,
              log: Callable[[str], None] = print) -> Any:
  stage_dir = os.path.join(root, name)
  inputs = _canonical(inputs or {})
  record = _finished(stage_dir, name, inputs)
  if record is None:
    with run_lock(stage_dir, STAGE_LOCK, what=f"pipeline stage {name!r}", wait=_waits(stage_dir)):
      record = _finished(stage_dir, name, inputs)  # another process may have finished it meanwhile
      if record is None:
        log(f"[stage {name}] running")
        result, attempts = _attempt(stage_dir, fn)
        record = {"name": name, "inputs": inputs, "result": _canonical(result),
                  "seconds": sum(a["seconds"] for a in attempts), "attempts": attempts}
        write_json(os.path.join(stage_dir, STAGE_FILE), record)
        return record["result"]
  log(f"[stage {name}] done earlier, reusing its result")
  return record["result"]
