"""Comparison figures (matplotlib, Agg backend: files only, no display).

  loss_vs_flops      held-out loss against training FLOPs, one line per method (the comparison's main chart), with
                     an optional band per method (e.g. the spread over seeds)
  composition_bars   what each method selected, as stacked bars of label fractions (domain or quality shares), one
                     distinct colour per label (`label_colors`)

Both return the matplotlib Figure (closed after saving) so callers and tests can read back what was drawn.
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def loss_vs_flops(curves: Mapping[str, Sequence[Tuple[float, float]]], path: str, *,
                  title: str = "held-out loss vs training FLOPs", ylabel: str = "held-out loss (nats/token)",
                  reference: Optional[Tuple[str, float]] = None,
                  bands: Optional[Mapping[str, Sequence[Tuple[float, float, float]]]] = None,
                  band_label: Optional[str] = None):
  """One line per method from its [(flops, loss), ...] points (sorted by FLOPs); `bands` = {method: [(flops, low,
  high), ...]} shades each method's band in its line's colour, `band_label` saying what it is (in the title);
  `reference` = (label, loss) adds a horizontal line (e.g. the baseline's final loss). Saves a PNG at `path`."""
  if not curves or not any(curves.values()):
    raise ValueError("loss_vs_flops needs at least one non-empty curve")
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
  for name, points in curves.items():
    if points:
      xs, ys = zip(*sorted(points))
      line, = ax.plot(xs, ys, marker="o", markersize=3, label=name)
      if bands and bands.get(name):
        bx, low, high = zip(*sorted(bands[name]))
        ax.fill_between(bx, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
  if band_label:
    title = f"{title}\n(lines: mean; bands: {band_label})"
  if reference is not None:
    ax.axhline(reference[1], color="gray", linestyle="--", linewidth=1, label=reference[0])
  ax.set_xlabel("training FLOPs")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return fig


def label_colors(labels: Sequence[str]) -> Dict[str, Tuple[float, ...]]:
  """{label: RGBA}, a distinct colour for each label, assigned in sorted label order (so figures over the same labels
  colour each alike): tab10's colours, then the lighter half of tab20, then tab20b and tab20c (60 in all), then
  evenly spaced hues."""
  palette = list(matplotlib.colormaps["tab20"].colors)
  palette = palette[0::2] + palette[1::2] + list(matplotlib.colormaps["tab20b"].colors) + list(
      matplotlib.colormaps["tab20c"].colors)
  names = sorted(set(labels))
  extra = max(0, len(names) - len(palette))
  palette += [matplotlib.colormaps["hsv"](i / extra) for i in range(extra)]
  return {name: matplotlib.colors.to_rgba(palette[i]) for i, name in enumerate(names)}


def composition_bars(compositions: Mapping[str, Mapping[str, float]], path: str, *,
                     title: str = "what each method selected", ylabel: str = "fraction of selected examples",
                     colors: Optional[Mapping[str, object]] = None):
  """Stacked bars: one bar per method, one segment per label (fractions of that method's selection). Labels are
  stacked by their total share, the largest at the bottom; the legend lists them as the bars stack them, top segment
  first. `colors`: {label: matplotlib colour} (default `label_colors`). Fractions of a bar must sum to at most 1
  (+1e-6). Saves a PNG at `path`."""
  if not compositions:
    raise ValueError("composition_bars needs at least one method")
  for name, fr in compositions.items():
    if sum(fr.values()) > 1 + 1e-6 or any(v < 0 for v in fr.values()):
      raise ValueError(f"{name}: fractions must be >= 0 and sum to <= 1, got {dict(fr)}")
  labels = sorted({l for fr in compositions.values() for l in fr},
                  key=lambda l: -sum(fr.get(l, 0.0) for fr in compositions.values()))
  colors = label_colors(labels) if colors is None else colors
  names = list(compositions)
  fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2.5), 4.2), dpi=120)
  bottom = [0.0] * len(names)
  for label in labels:
    heights = [compositions[n].get(label, 0.0) for n in names]
    ax.bar(names, heights, bottom=bottom, label=label, color=colors[label])
    bottom = [b + h for b, h in zip(bottom, heights)]
  ax.set_ylabel(ylabel)
  ax.set_ylim(0, 1)
  ax.set_title(title)
  handles, texts = ax.get_legend_handles_labels()
  ax.legend(handles[::-1], texts[::-1], fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
  plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return fig
