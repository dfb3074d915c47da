"""Resumable pipeline stages: each stage writes under its own directory and marks completion atomically.

`run_stage(root, name, fn, inputs)` returns the recorded result of a finished stage without running it again, and
otherwise runs `fn(stage_dir)` (which may itself resume, as training does from its checkpoints) and records
`{"inputs", "result"}` in `root/name/stage.json` by write-then-rename. A finished stage whose recorded inputs differ
from the ones given now is an error naming the stage, never a silent reuse.
"""
import json
import os
import time
from typing import Any, Callable, Optional

STAGE_FILE = "stage.json"


class StageInputsChanged(ValueError):
  pass


def _canonical(x):
  return json.loads(json.dumps(x, sort_keys=True, default=str))


def stage_done(root: str, name: str) -> bool:
  return os.path.exists(os.path.join(root, name, STAGE_FILE))


def run_stage(root: str, name: str, fn: Callable[[str], Any], inputs: Optional[dict] = None, *,
              log: Callable[[str], None] = print) -> Any:
  stage_dir = os.path.join(root, name)
  record_path = os.path.join(stage_dir, STAGE_FILE)
  inputs = _canonical(inputs or {})
  if os.path.exists(record_path):
    with open(record_path) as f:
      record = json.load(f)
    if record.get("inputs") != inputs:
      raise StageInputsChanged(
          f"stage {name!r} in {stage_dir} finished with other inputs ({record.get('inputs')} != {inputs}); "
          "delete that directory to rerun it")
    log(f"[stage {name}] done earlier, reusing its result")
    return record["result"]
  os.makedirs(stage_dir, exist_ok=True)
  log(f"[stage {name}] running")
  t0 = time.time()
  result = fn(stage_dir)
  record = {"name": name, "inputs": inputs, "result": _canonical(result), "seconds": time.time() - t0}
  tmp = record_path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  os.replace(tmp, record_path)
  return record["result"]
