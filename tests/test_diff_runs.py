"""scripts/diff_runs.py: what two run roots recorded, compared value by value."""
import importlib.util
import json
import pathlib

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
