"""The papers' claims: verdicts on hand-made intervals, the step a fraction reads, a judged claim."""
import pytest

from bliss_jax.report import claims
from bliss_jax.report.intervals import Interval


def _ci(low, high):
  return Interval(mean=(low + high) / 2, low=low, high=high, half_width=(high - low) / 2, sd=1.0, n=3)


@pytest.mark.parametrize("low, high, better, worse, not_worse", [
    (-0.30, -0.05, "holds", "fails", "holds"),  # entirely below 0
    (0.02, 0.10, "fails", "holds", "fails"),  # entirely above 0
    (-0.30, 0.07, "inconclusive", "inconclusive", "inconclusive"),  # contains 0
    (-0.10, 0.00, "inconclusive", "inconclusive", "inconclusive"),  # reaches 0
])
def test_verdicts_from_the_interval(low, high, better, worse, not_worse):
  ci = _ci(low, high)
  assert claims.verdict(ci, "better") == better
  assert claims.verdict(ci, "worse") == worse
  assert claims.verdict(ci, "not_worse") == not_worse


def test_not_worse_with_a_margin_is_non_inferiority():
  assert claims.verdict(_ci(0.002, 0.008), "not_worse", margin=0.01) == "holds"  # worse, but by less than 0.01
  assert claims.verdict(_ci(-0.02, 0.03), "not_worse", margin=0.01) == "inconclusive"
  assert claims.verdict(_ci(0.015, 0.03), "not_worse", margin=0.01) == "fails"


def test_one_seed_is_inconclusive_and_relations_are_checked():
  one = Interval(mean=-0.5, low=None, high=None, half_width=None, sd=None, n=1)
  assert claims.verdict(one, "better") == "inconclusive"
  with pytest.raises(ValueError, match="claim relation"):
    claims.verdict(_ci(-1, -0.5), "much_better")


def test_step_at_fraction_is_the_last_curve_point_at_or_before_it():
  steps = [40, 80, 120, 160, 200, 240, 280, 320, 360, 400]
  assert claims.step_at_fraction(steps, 400, 0.7) == 280
  assert claims.step_at_fraction(steps, 400, 1.0) == 400
  assert claims.step_at_fraction([5, 10, 15, 20], 20, 0.7) == 10  # 14 is not a point
  assert claims.step_at_fraction([50, 100], 400, 0.1) is None


def test_judge_pairs_the_seeds():
  claim = claims.Claim("bliss", "random", "better")
  row = claims.judge(claim, {0: 3.0, 1: 3.2, 2: 3.1}, {0: 3.1, 1: 3.25, 2: 3.3})
  assert row["differences"] == pytest.approx([-0.1, -0.05, -0.2])
  assert row["difference"]["high"] == pytest.approx(0.073062, abs=1e-6)  # tests/test_intervals.py's numbers
  assert row["verdict"] == "inconclusive"
  row = claims.judge(claim, {0: 3.0, 1: 3.1, 2: 3.05}, {0: 3.2, 1: 3.3, 2: 3.26})  # d = -0.2, -0.2, -0.21
  assert row["verdict"] == "holds"
  assert row["claim"] == "bliss: loss lower than random's"
  assert claims.Claim("salt", "plain", "not_worse", at_fraction=0.7).statement() == (
      "salt at 70% of the steps: loss no higher than plain's")


def test_paper_claims_name_known_relations():
  assert {c.relation for c in claims.PAPER_CLAIMS} <= set(claims.RELATIONS)
  assert [(c.method, c.comparator, c.at_fraction) for c in claims.PAPER_CLAIMS if c.method == "salt"] == [
      ("salt", "plain", 0.7), ("salt", "plain", 1.0)]
