"""Stages: run once, reuse after, refuse changed inputs, and a crash leaves no completion mark."""
import pytest

from bliss_jax.pipelines.stages import StageInputsChanged, run_stage, stage_done


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
