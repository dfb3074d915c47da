"""Comparison figures: what is drawn is what was given, files are PNGs, bad input is refused."""
import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest

from bliss_jax.report import plots


def test_loss_vs_flops_draws_each_curve_sorted(tmp_path):
  path = str(tmp_path / "loss.png")
  fig = plots.loss_vs_flops({"random": [(2e12, 3.9), (1e12, 4.2)], "bliss": [(1e12, 4.2), (2e12, 3.7)]}, path,
                            reference=("random final", 3.9))
  ax = fig.axes[0]
  lines = {l.get_label(): l.get_xydata() for l in ax.get_lines()}
  np.testing.assert_array_equal(lines["random"], [[1e12, 4.2], [2e12, 3.9]])
  np.testing.assert_array_equal(lines["bliss"], [[1e12, 4.2], [2e12, 3.7]])
  assert lines["random final"][0][1] == 3.9
  assert matplotlib.image.imread(path).ndim == 3
  with pytest.raises(ValueError, match="non-empty"):
    plots.loss_vs_flops({"a": []}, path)


def test_loss_vs_flops_shades_each_band_in_its_line_colour(tmp_path):
  path = str(tmp_path / "band.png")
  fig = plots.loss_vs_flops({"plain": [(1e12, 4.2), (2e12, 3.9)], "bliss": [(1e12, 4.1), (2e12, 3.7)]}, path,
                            bands={"plain": [(2e12, 3.8, 4.0), (1e12, 4.1, 4.3)]},
                            band_label="min–max over 2 seeds")
  ax = fig.axes[0]
  assert len(ax.collections) == 1  # bliss has no band
  band = ax.collections[0]
  xs, ys = band.get_paths()[0].vertices.T
  assert set(xs) == {1e12, 2e12} and {3.8, 4.0, 4.1, 4.3} <= set(ys)
  plain = next(l for l in ax.get_lines() if l.get_label() == "plain")
  np.testing.assert_allclose(band.get_facecolor()[0][:3], matplotlib.colors.to_rgb(plain.get_color()))
  assert "min–max over 2 seeds" in ax.get_title()


def test_composition_bars_stack_fractions(tmp_path):
  path = str(tmp_path / "comp.png")
  fig = plots.composition_bars({"random": {"clean": 0.6, "raw": 0.3, "junk": 0.1},
                                "bliss": {"clean": 0.8, "raw": 0.2}}, path)
  patches = fig.axes[0].patches
  assert len(patches) == 6  # 3 labels x 2 methods (a missing label is a zero-height segment)
  heights = sorted(round(p.get_height(), 6) for p in patches)
  assert heights == [0.0, 0.1, 0.2, 0.3, 0.6, 0.8]
  tops = {}
  for p in patches:
    x = round(p.get_x(), 6)
    tops[x] = max(tops.get(x, 0.0), p.get_y() + p.get_height())
  assert sorted(round(t, 6) for t in tops.values()) == [1.0, 1.0]
  assert matplotlib.image.imread(path).shape[2] in (3, 4)
  with pytest.raises(ValueError, match="sum to <= 1"):
    plots.composition_bars({"x": {"a": 0.7, "b": 0.7}}, path)


def test_composition_bars_colour_each_label_apart_and_list_them_as_stacked(tmp_path):
  labels = [f"domain_{i:02d}" for i in range(25)]  # more labels than any one qualitative colormap has colours
  comps = {"pool": {l: 1 / 25 for l in labels},
           "bliss": {l: (i + 1) / sum(range(1, 26)) for i, l in enumerate(labels)}}
  fig = plots.composition_bars(comps, str(tmp_path / "comp.png"))
  ax = fig.axes[0]
  # one container per label, in stacking order (bottom first); each segment of a label has that label's colour
  stacked = [c.get_label() for c in ax.containers]
  assert sorted(stacked) == labels
  colours = {}
  for c in ax.containers:
    faces = {tuple(p.get_facecolor()) for p in c.patches}
    assert len(faces) == 1
    colours[c.get_label()] = faces.pop()
  assert len(set(colours.values())) == len(labels)
  for c_below, c_above in zip(ax.containers, ax.containers[1:]):  # each segment sits on the one below it
    for below, above in zip(c_below.patches, c_above.patches):
      assert above.get_y() == pytest.approx(below.get_y() + below.get_height())
  legend = ax.get_legend()
  assert [t.get_text() for t in legend.get_texts()] == stacked[::-1]  # the top segment first
  assert [tuple(h.get_facecolor()) for h in legend.legend_handles] == [colours[l] for l in stacked[::-1]]
  # the colour is the label's, whichever figure it is in
  other = plots.composition_bars({"x": {l: 1 / 25 for l in reversed(labels)}}, str(tmp_path / "other.png"))
  assert {c.get_label(): tuple(c.patches[0].get_facecolor()) for c in other.axes[0].containers} == colours


def test_label_colors_stay_distinct_past_the_palette():
  colours = plots.label_colors([f"l{i}" for i in range(75)])
  assert len(set(colours.values())) == 75
