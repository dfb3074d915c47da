"""Stages: run once, reuse after, refuse changed inputs, a crash leaves no completion mark, the recorded wall time
counts every attempt, and a stage another process runs is refused (or, under `waiting_under`, waited for)."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from bliss_jax.pipelines import stages
from bliss_jax.pipelines.stages import StageInputsChanged, run_stage, stage_done
from bliss_jax.training import run_lock as run_lock_lib


def test_stage_runs_once_and_is_reused(tmp_path):
  calls = []

  def fn(stage_dir):
    calls.append(stage_dir)
    return {"value": 3}

  assert run_stage(str(tmp_path), "a", fn, {"x": 1}, log=lambda m: None) == {"value": 3}
  assert run_stage(str(tmp_path), "a", fn, {"x": 1}, log=lambda m: None) == {"value": 3}
  assert len(calls) == 1
  with pytest.raises(StageInputsChanged, match="stage 'a'"):
    run_stage(str(tmp_path), "a", fn, {"x": 2}, log=lambda m: None)


def test_crashed_stage_is_not_marked_done(tmp_path):
  def boom(stage_dir):
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    run_stage(str(tmp_path), "b", boom, log=lambda m: None)
  assert not stage_done(str(tmp_path), "b")
  assert run_stage(str(tmp_path), "b", lambda d: 7, log=lambda m: None) == 7


# --- wall time: every attempt counts ---

def _clock(monkeypatch, *times):
  ticks = iter(times)
  monkeypatch.setattr(stages, "_now", lambda: next(ticks))


def test_a_killed_attempt_counts_up_to_its_last_sign_of_life(tmp_path, monkeypatch):
  """A first attempt started at t=100, last heartbeat at t=160, wrote a checkpoint at t=175, and was killed (its record
  still open); the second runs from t=200 to t=230: the stage took 75 + 30 seconds. The lock file, touched when the
  second attempt takes the stage, is no sign of the first."""
  d = tmp_path / "a"
  (d / "checkpoints").mkdir(parents=True)
  path = d / stages.STAGE_ATTEMPTS
  path.write_text(json.dumps([{"started": 100.0, "seconds": None, "end": None}]))
  os.utime(path, (160.0, 160.0))
  (d / "checkpoints" / "5").write_text("x")
  os.utime(d / "checkpoints" / "5", (175.0, 175.0))
  (d / stages.STAGE_LOCK).write_text("")
  _clock(monkeypatch, 200.0, 230.0)
  assert run_stage(str(tmp_path), "a", lambda d: 1, log=lambda m: None) == 1
  record = json.loads((d / stages.STAGE_FILE).read_text())
  assert record["seconds"] == 105.0
  assert record["attempts"] == [{"started": 100.0, "seconds": 75.0, "end": "interrupted"},
                                {"started": 200.0, "seconds": 30.0, "end": "finished"}]
  assert stages.stage_seconds(str(d)) == 105.0
  assert stages.stage_seconds(str(tmp_path / "never_ran")) is None


def test_a_failed_attempt_counts_its_measured_seconds(tmp_path, monkeypatch):
  def boom(stage_dir):
    raise RuntimeError("killed")

  _clock(monkeypatch, 10.0, 17.0, 20.0, 22.5)
  with pytest.raises(RuntimeError):
    run_stage(str(tmp_path), "b", boom, log=lambda m: None)
  assert run_stage(str(tmp_path), "b", lambda d: 7, log=lambda m: None) == 7
  record = json.loads((tmp_path / "b" / stages.STAGE_FILE).read_text())
  assert record["seconds"] == 7.0 + 2.5
  assert [a["end"] for a in record["attempts"]] == ["error", "finished"]


def test_close_interrupted_closes_only_open_attempts():
  done = {"started": 0.0, "seconds": 5.0, "end": "finished"}
  assert stages.close_interrupted([done, {"started": 10.0, "seconds": None, "end": None}], 12.5) == [
      done, {"started": 10.0, "seconds": 2.5, "end": "interrupted"}]
  # a heartbeat older than the start (clock skew) counts nothing rather than negative time
  assert stages.close_interrupted([{"started": 10.0, "seconds": None, "end": None}], 9.0)[0]["seconds"] == 0.0


def test_the_heartbeat_refreshes_a_running_attempt(tmp_path, monkeypatch):
  monkeypatch.setattr(stages, "HEARTBEAT_SECONDS", 0.01)
  path = tmp_path / "c" / stages.STAGE_ATTEMPTS
  seen = []

  def fn(stage_dir):
    os.utime(path, (1.0, 1.0))  # as if written long ago
    deadline = time.time() + 5
    while os.path.getmtime(path) == 1.0 and time.time() < deadline:
      time.sleep(0.01)
    seen.append(os.path.getmtime(path))

  run_stage(str(tmp_path), "c", fn, log=lambda m: None)
  assert seen[0] > 1.0


_HOLDER = """
import pathlib, sys, time
from bliss_jax.pipelines.stages import run_stage
root, gate = sys.argv[1], pathlib.Path(sys.argv[2])
def fn(stage_dir):
  (gate / "started").write_text("")
  while not (gate / "go").exists():
    time.sleep(0.05)
  return {"by": "holder"}
run_stage(root, "shared/teacher", fn, {"x": 1}, log=lambda m: None)
"""


def _start_holder(tmp_path):
  """A second process running stage `shared/teacher`, held until `gate/go` exists."""
  gate = tmp_path / "gate"
  gate.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "root"), str(gate)])
  while not (gate / "started").exists():
    assert holder.poll() is None, "the holder process died"
    time.sleep(0.05)
  return holder, gate


def test_a_stage_another_process_runs_is_refused_or_waited_for_under_waiting_under(tmp_path, monkeypatch):
  monkeypatch.setattr(run_lock_lib, "WAIT_POLL_SECONDS", 0.05)
  root = str(tmp_path / "root")
  holder, gate = _start_holder(tmp_path)
  try:
    with pytest.raises(run_lock_lib.RunLocked, match="pipeline stage 'shared/teacher'"):
      run_stage(root, "shared/teacher", lambda d: {"by": "me"}, {"x": 1}, log=lambda m: None)
    with stages.waiting_under(os.path.join(root, "seed_0")):  # another directory: still refused
      with pytest.raises(run_lock_lib.RunLocked):
        run_stage(root, "shared/teacher", lambda d: {"by": "me"}, {"x": 1}, log=lambda m: None)
    threading.Timer(0.5, lambda: (gate / "go").write_text("")).start()
    ran = []
    with stages.waiting_under(os.path.join(root, "shared")):
      got = run_stage(root, "shared/teacher", lambda d: ran.append(d) or {"by": "me"}, {"x": 1}, log=lambda m: None)
    assert got == {"by": "holder"} and ran == []  # waited, then reused the holder's result
    assert holder.wait(30) == 0
    assert stages._wait_roots == []
  finally:
    (gate / "go").write_text("")
    holder.wait(30)
