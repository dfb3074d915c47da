"""scripts/paired_roots.py: one method's results in two comparison roots, paired by seed."""
import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("paired_roots", REPO / "scripts" / "paired_roots.py")
paired_roots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired_roots)


def _root(path, losses, gin, share=0.5):
  for s, loss in enumerate(losses):
    d = path / f"seed_{s}"
    d.mkdir(parents=True)
    final = {"loss": loss, "step": 200}
    (d / "report.json").write_text(json.dumps({"methods": {"bliss": {"final": final,
                                                                     "selection": {"target_fraction": share}}}}))
  (path / "config.gin").write_text(gin)


def test_paired_difference_and_its_interval_by_hand(tmp_path, capsys):
  _root(tmp_path / "a", [4.0, 4.1, 4.2], "# comment\nBilevelConfig.gamma = 0.01\n")
  _root(tmp_path / "b", [4.1, 4.3, 4.2], "BilevelConfig.gamma = 0.01\nBilevelConfig.remat = True\n", share=0.6)
  assert paired_roots.main([str(tmp_path / "a"), str(tmp_path / "b"), "--method", "bliss"]) == 0
  out = capsys.readouterr().out
  # differences 0.1, 0.2, 0.0: mean 0.1, sd 0.1, t(0.975, 2 df) = 4.3027 -> half-width 0.2484
  assert "+0.1000 [-0.1484, +0.3484]" in out
  assert "4.0000 4.1000 4.2000" in out and "4.1000 4.3000 4.2000" in out
  assert f"only in {tmp_path / 'b'}/config.gin: BilevelConfig.remat = True" in out
  assert f"only in {tmp_path / 'a'}/config.gin: (nothing)" in out
  assert "0.600 0.600 0.600" in out


def test_no_common_seed_with_the_method_is_an_error(tmp_path):
  _root(tmp_path / "a", [4.0], "")
  (tmp_path / "b").mkdir()
  with pytest.raises(SystemExit, match="no seed has a finished report with method 'bliss'"):
    paired_roots.main([str(tmp_path / "a"), str(tmp_path / "b"), "--method", "bliss"])
