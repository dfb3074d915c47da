"""Steps/FLOPs to reach a loss, speedups and markdown tables on hand-made curves."""
from bliss_jax.report import tables


def test_steps_to_reach_and_speedup():
  base = [(100, 4.0), (200, 3.5), (300, 3.2)]
  fast = [(300, 3.0), (100, 3.6), (200, 3.1)]  # unsorted on purpose
  assert tables.steps_to_reach(fast, 3.2) == 200
  assert tables.steps_to_reach(fast, 2.0) is None
  assert tables.speedup(fast, base) == 1.5
  assert tables.speedup(base, base) == 1.0
  assert tables.speedup([(100, 5.0)], base) is None and tables.speedup(fast, []) is None


def test_markdown_table():
  out = tables.markdown_table([{"m": "bliss", "loss": 3.5054, "x": None}, {"m": "random", "loss": 3.6532}],
                              [("m", "method", str), ("loss", "loss", tables.fmt(".3f")),
                               ("x", "speedup", tables.fmt(".2f"))])
  assert out.splitlines() == ["| method | loss | speedup |", "|---|---:|---:|", "| bliss | 3.505 | — |",
                              "| random | 3.653 | — |"]
