"""Resumable pipeline stages: each stage writes under its own directory and marks completion atomically.

`run_stage(root, name, fn, inputs)` returns the recorded result of a finished stage without running it again, and
otherwise runs `fn(stage_dir)` (which may itself resume, as training does from its checkpoints) and records
`{"inputs", "result"}` in `root/name/stage.json` by write-then-rename. A finished stage whose recorded inputs differ
from the ones given now is an error naming the stage, never a silent reuse. A running stage holds
`root/name/stage.lock` (`run_lock`): a second process that reaches the same unfinished stage is refused, naming the
holder.
"""
import json
import os
import time
from typing import Any, Callable, Optional

from bliss_jax.training.run_config import write_json
from bliss_jax.training.run_lock import run_lock

STAGE_FILE = "stage.json"
STAGE_LOCK = "stage.lock"


class StageInputsChanged(ValueError):
  pass


def _canonical(x):
  return json.loads(json.dumps(x, sort_keys=True, default=str))


def stage_done(root: str, name: str) -> bool:
  return os.path.exists(os.path.join(root, name, STAGE_FILE))


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


def run_stage(root: str, name: str, fn: Callable[[str], Any], inputs: Optional[dict] = None, *,
              log: Callable[[str], None] = print) -> Any:
  stage_dir = os.path.join(root, name)
  inputs = _canonical(inputs or {})
  record = _finished(stage_dir, name, inputs)
  if record is None:
    with run_lock(stage_dir, STAGE_LOCK, what=f"pipeline stage {name!r}"):
      record = _finished(stage_dir, name, inputs)  # another process may have finished it meanwhile
      if record is None:
        log(f"[stage {name}] running")
        t0 = time.time()
        result = fn(stage_dir)
        record = {"name": name, "inputs": inputs, "result": _canonical(result), "seconds": time.time() - t0}
        write_json(os.path.join(stage_dir, STAGE_FILE), record)
        return record["result"]
  log(f"[stage {name}] done earlier, reusing its result")
  return record["result"]
