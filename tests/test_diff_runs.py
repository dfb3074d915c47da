"""scripts/diff_runs.py: what two run roots recorded, compared value by value."""
import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("diff_runs", REPO / "scripts" / "diff_runs.py")
diff_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diff_runs)


def _write(root, rel, obj):
  path = root / rel
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj))


def test_differences_by_path():
  a = {"x": 1.0, "y": [1, {"z": "s"}], "gone": 0}
  b = {"x": 1.0000001, "y": [1, {"z": "s"}], "new": 0}
  assert diff_runs.differences(a, b) == [("/gone", "only_a", ""), ("/new", "only_b", ""),
                                         ("/x", "changed", "1.0 != 1.0000001")]
  assert diff_runs.differences([1, 2], [1, 2, 3]) == [("", "changed", "[1, 2] != [1, 2, 3]")]


def test_roots_compare_equal_but_for_wall_time_and_their_own_paths(tmp_path, capsys):
  a, b = tmp_path / "a", tmp_path / "b"
  for root, seconds in ((a, 1.0), (b, 7.5)):
    _write(root, "report.json", {"loss": 2.5, "model_dir": str(root / "m"), "wall_seconds": seconds})
    _write(root, "s/stage.json", {"result": {"flops": 3e9}, "seconds": seconds,
                                  "attempts": [{"started": seconds, "seconds": seconds, "end": "finished"}]})
  assert diff_runs.main([str(a), str(b)]) == 0
  assert "2 records compared: 0 changed values, 0 missing files" in capsys.readouterr().out
  _write(b, "s/stage.json", {"result": {"flops": 3.0000001e9}, "seconds": 0.0})
  (b / "report.json").unlink()
  assert diff_runs.main([str(a), str(b)]) == 1
  out = capsys.readouterr().out
  assert "s/stage.json /result/flops: 3000000000.0 != 3000000100.0" in out
  assert "report.json: missing in" in out and "1 records compared: 1 changed values, 1 missing files" in out


def test_numbers_within_a_tolerance_count_as_close_with_their_relative_difference():
  a = {"loss": 2.0, "acc": 0.5, "n": 7, "ok": True, "tokens": [1, 2]}
  b = {"loss": 2.0002, "acc": 0.6, "n": 7, "ok": False, "tokens": [1, 2]}
  diffs = diff_runs.differences(a, b, rtol=1e-3)
  assert [(p, k) for p, k, _ in diffs] == [("/acc", "changed"), ("/loss", "close"), ("/ok", "changed")]
  assert abs(dict((p, d) for p, _, d in diffs)["/loss"] - 0.0002 / 2.0002) < 1e-15
  assert [(p, k) for p, k, _ in diff_runs.differences(a, b, atol=2.0)] == [
      ("/acc", "close"), ("/loss", "close"), ("/ok", "changed")]  # booleans are not numbers here
  assert diff_runs.differences({"x": float("nan")}, {"x": 1.0}, rtol=1.0)[0][1] == "changed"
  assert diff_runs.differences(a, b)[1] == ("/loss", "changed", "2.0 != 2.0002")


def test_tolerances_on_the_command_line(tmp_path, capsys):
  a, b = tmp_path / "a", tmp_path / "b"
  _write(a, "report.json", {"loss": 3.0, "other": 1.0})
  _write(b, "report.json", {"loss": 3.0003, "other": 1.0})
  assert diff_runs.main([str(a), str(b)]) == 1
  assert diff_runs.main([str(a), str(b), "--rtol", "1e-4"]) == 0
  out = capsys.readouterr().out
  assert "1 numbers within --rtol 0.0001 --atol 0, largest relative difference 0.0001 (report.json /loss)" in out
  assert diff_runs.main([str(a), str(b), "--rtol", "1e-5"]) == 1
  with pytest.raises(SystemExit):
    diff_runs.main([str(a), str(tmp_path / "absent")])
  assert "is not a directory" in capsys.readouterr().err
