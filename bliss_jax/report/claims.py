"""The papers' claims about the methods, as data, and each one's verdict from the paired confidence interval over seeds.

A claim compares a method's held-out loss with a comparator's on the same seeds. Lower loss is better. Per seed s,

    d_s = loss(method at `at_fraction` of the target's steps) − loss(comparator at the last step)

(SALT's claim reads the method at 70% of the steps: as good as the baseline trained for all of them), and the verdict
reads the interval of d over the seeds (`intervals.paired_interval`):

  relation    the claim: the method's loss is ...          holds when      fails when
  better      lower than the comparator's                  high < 0        low > 0
  worse       higher than the comparator's                 low > 0         high < 0
  not_worse   no higher than the comparator's + `margin`   high < margin   low > margin

and `inconclusive` otherwise: the interval reaches the threshold, or fewer than 2 seeds give no interval. A
"not worse" claim with margin 0 (the papers give none, and a margin chosen after seeing the runs would choose the
verdict) is shown only by showing the method better, so it holds exactly when "better" would, and fails when the
method is shown worse; a margin fixed in advance (in nats; 0.01 is 1% perplexity) makes it a non-inferiority test.
"""
import dataclasses
from typing import Mapping, Optional, Sequence

from bliss_jax.choices import check_choice
from bliss_jax.report import intervals

RELATIONS = ("better", "worse", "not_worse")
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"


@dataclasses.dataclass(frozen=True)
class Claim:
  """`method` is `relation` than `comparator` on `metric` (lower is better), the method read at `at_fraction` of the
  target's steps, the comparator at the end; `margin` (nats) only for "not_worse"; `source`: where the paper says it."""
  method: str
  comparator: str
  relation: str
  at_fraction: float = 1.0
  metric: str = "loss"
  margin: float = 0.0
  source: str = ""

  def statement(self) -> str:
    at = "" if self.at_fraction == 1.0 else f" at {100 * self.at_fraction:g}% of the steps"
    words = {"better": "lower than", "worse": "higher than", "not_worse": "no higher than"}[self.relation]
    margin = f" + {self.margin:g}" if self.relation == "not_worse" and self.margin else ""
    return f"{self.method}{at}: {self.metric} {words} {self.comparator}'s{margin}"


PAPER_CLAIMS = (
    Claim("bliss", "random", "better", source="BLISS: lower validation loss than random selection"),
    Claim("rho1", "plain", "better", source="RHO-1: SLM beats causal LM pretraining"),
    Claim("miniplm", "plain", "better", source="MiniPLM: beats pretraining without KD"),
    Claim("miniplm", "vanilla_kd", "better", source="MiniPLM: beats Vanilla KD"),
    Claim("salt", "plain", "not_worse", at_fraction=0.7,
          source="SALT: at 70% of the steps as good as the baseline at 100%"),
    Claim("salt", "plain", "not_worse", source="SALT: at 100% at least as good as the baseline"),
    Claim("salt_ds", "salt", "not_worse", source="SALT: SALT_DS at least as good as SALT"),
    Claim("rkd", "plain", "worse", source="SALT: KD throughout (RKD) ends worse than the baseline"),
)


def verdict(interval: intervals.Interval, relation: str, margin: float = 0.0) -> str:
  """holds / fails / inconclusive for a claim of `relation` on the interval of d = method − comparator (module
  docstring)."""
  check_choice("claim relation", relation, RELATIONS)
  if interval.low is None:
    return INCONCLUSIVE
  threshold = margin if relation == "not_worse" else 0.0
  below, above = interval.high < threshold, interval.low > threshold
  if relation == "worse":
    below, above = above, below  # the claimed side is above 0
  return HOLDS if below else FAILS if above else INCONCLUSIVE


def step_at_fraction(steps: Sequence[int], num_steps: int, fraction: float) -> Optional[int]:
  """The last of `steps` (a curve's) at or before round(fraction · num_steps) (at least 1); None if there is none."""
  goal = max(1, int(round(fraction * num_steps)))
  return max((s for s in steps if s <= goal), default=None)


def judge(claim: Claim, method_values: Mapping[int, float], comparator_values: Mapping[int, float]) -> dict:
  """The claim's row: the per-seed differences, their interval and the verdict, from {seed: value} of the method (at
  its fraction) and of the comparator."""
  diff = intervals.paired_interval(method_values, comparator_values)
  return {"claim": claim.statement(), "source": claim.source, "method": claim.method,
          "comparator": claim.comparator, "relation": claim.relation, "metric": claim.metric,
          "at_fraction": claim.at_fraction, "margin": claim.margin,
          "differences": intervals.paired_differences(method_values, comparator_values),
          "difference": diff.asdict(), "verdict": verdict(diff, claim.relation, claim.margin)}
