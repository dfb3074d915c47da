"""Means over seeds with Student-t confidence intervals, and paired differences of two methods run on the same seeds.

For n values x_1..x_n (one per seed):

    mean = (1/n) Σ x_i,   sd = sqrt(Σ (x_i − mean)² / (n − 1)),   half = t_{1−(1−level)/2, n−1} · sd / sqrt(n)

and the interval is [mean − half, mean + half] (the t quantile from `scipy.stats.t`; at the 95% level it is 12.706
for n = 2, 4.303 for n = 3, 2.776 for n = 5). One value gives a mean and no interval (`low`, `high`, `half_width`, `sd`
are None). The paired difference of methods a and b is the interval of d_i = a_i − b_i over the seeds both ran: the
seed-to-seed variation both share (initialisation, data order) cancels in d_i, which is why a comparison of two
methods reads this interval, not the overlap of their two intervals.
"""
import dataclasses
import math
from typing import Mapping, Optional, Sequence

from scipy import stats

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean over n seeds and its confidence interval at `level` (None bounds when n < 2)."""
  mean: Optional[float]
  low: Optional[float]
  high: Optional[float]
  half_width: Optional[float]
  sd: Optional[float]
  n: int
  level: float = LEVEL

  def asdict(self) -> dict:
    return dataclasses.asdict(self)


def t_quantile(n: int, level: float = LEVEL) -> float:
  """The two-sided Student-t quantile t_{1−(1−level)/2, n−1} for n ≥ 2 values."""
  if n < 2:
    raise ValueError(f"a t interval needs at least 2 values, got {n}")
  return float(stats.t.ppf(1.0 - (1.0 - level) / 2.0, n - 1))


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
  """The mean of `values` (one per seed) and its Student-t confidence interval (module docstring)."""
  xs = [float(v) for v in values]
  n = len(xs)
  if n == 0:
    return Interval(None, None, None, None, None, 0, level)
  mean = sum(xs) / n
  if n == 1:
    return Interval(mean, None, None, None, None, 1, level)
  sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
  half = t_quantile(n, level) * sd / math.sqrt(n)
  return Interval(mean, mean - half, mean + half, half, sd, n, level)


def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> list:
  """[a_s − b_s] over the seeds s both map (in seed order)."""
  return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def paired_interval(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Interval:
  """The mean and interval of the per-seed difference a − b ({seed: value} each; seeds only one side has are left
  out)."""
  return mean_interval(paired_differences(a, b), level)


def ratio_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
  """The geometric mean of paired ratios a_i / b_i (e.g. two programs' step times measured in the same round) and its
  interval: exp of the mean and the Student-t interval of log(a_i / b_i), a ratio's interval being symmetric on the
  log scale. `half_width` and `sd` are those of the logs."""
  if len(a) != len(b):
    raise ValueError(f"paired ratios need as many numerators as denominators, got {len(a)} and {len(b)}")
  if any(x <= 0 for x in list(a) + list(b)):
    raise ValueError("ratios need positive values")
  logs = mean_interval([math.log(x / y) for x, y in zip(a, b)], level)
  if logs.mean is None:
    return logs
  bounds = (None, None) if logs.low is None else (math.exp(logs.low), math.exp(logs.high))
  return Interval(math.exp(logs.mean), *bounds, logs.half_width, logs.sd, logs.n, level)
