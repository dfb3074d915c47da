"""Means and Student-t intervals over seeds, and paired differences, on hand-computed numbers."""
import math

import pytest

from bliss_jax.report import intervals


def test_t_quantiles_are_the_tables():
  assert intervals.t_quantile(2) == pytest.approx(12.7062, abs=1e-4)
  assert intervals.t_quantile(3) == pytest.approx(4.3027, abs=1e-4)
  assert intervals.t_quantile(5) == pytest.approx(2.7764, abs=1e-4)
  assert intervals.t_quantile(3, level=0.9) == pytest.approx(2.9200, abs=1e-4)
  with pytest.raises(ValueError, match="at least 2"):
    intervals.t_quantile(1)


def test_mean_interval_of_three_values():
  # mean 2, sd 1, half-width 4.3027 / sqrt(3)
  r = intervals.mean_interval([1.0, 2.0, 3.0])
  assert (r.mean, r.sd, r.n) == (2.0, 1.0, 3)
  assert r.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
  assert (r.low, r.high) == pytest.approx((2.0 - r.half_width, 2.0 + r.half_width))
  assert r.half_width == pytest.approx(2.48414, abs=1e-5)


def test_two_values_and_one_and_none():
  r = intervals.mean_interval([1.0, 3.0])  # sd sqrt(2), se 1
  assert r.mean == 2.0 and r.half_width == pytest.approx(12.7062, abs=1e-4)
  one = intervals.mean_interval([3.5])
  assert (one.mean, one.low, one.high, one.half_width, one.sd, one.n) == (3.5, None, None, None, None, 1)
  assert intervals.mean_interval([]).mean is None
  same = intervals.mean_interval([2.0, 2.0, 2.0])
  assert (same.low, same.high) == (2.0, 2.0)


def test_paired_interval_of_the_per_seed_differences():
  a = {0: 3.0, 1: 3.2, 2: 3.1}
  b = {0: 3.1, 1: 3.25, 2: 3.3, 7: 9.9}  # seed 7 has no partner: left out
  assert intervals.paired_differences(a, b) == pytest.approx([-0.1, -0.05, -0.2])
  r = intervals.paired_interval(a, b)
  # d = (-0.1, -0.05, -0.2): mean -0.116667, sd 0.076376, se 0.044096, half 4.302653 * se = 0.189729
  assert r.n == 3 and r.mean == pytest.approx(-0.116667, abs=1e-6)
  assert r.sd == pytest.approx(0.076376, abs=1e-6)
  assert r.half_width == pytest.approx(0.189729, abs=1e-6)
  assert (r.low, r.high) == pytest.approx((-0.306396, 0.073062), abs=1e-6)
  # the same differences in other seeds' levels: pairing removes the shared seed effect
  shifted = intervals.paired_interval({s: v + 10 * s for s, v in a.items()}, {s: v + 10 * s for s, v in b.items()})
  assert shifted.half_width == pytest.approx(r.half_width)
  assert intervals.mean_interval(list(a.values())).asdict()["n"] == 3


def test_ratio_interval_is_the_log_scale_t_interval_exponentiated():
  r = intervals.ratio_interval([2.0, 8.0], [1.0, 2.0])  # ratios 2 and 4
  half = 12.706204736174698 * (math.log(2.0) / math.sqrt(2.0)) / math.sqrt(2.0)
  assert math.isclose(r.mean, 2.0 ** 1.5)
  assert math.isclose(r.low, 2.0 ** 1.5 * math.exp(-half)) and math.isclose(r.high, 2.0 ** 1.5 * math.exp(half))
  assert r.n == 2 and math.isclose(r.half_width, half)
  one = intervals.ratio_interval([3.0], [2.0])
  assert one.mean == 1.5 and one.low is None
  with pytest.raises(ValueError, match="as many"):
    intervals.ratio_interval([1.0], [1.0, 2.0])
  with pytest.raises(ValueError, match="positive"):
    intervals.ratio_interval([0.0], [1.0])
