"""A method as the comparison sees it: the pipeline that runs it, and what its run left (checkpoints, cost, selections).

A pipeline module declares a `Pipeline`: its name (its directory under the comparison's root), the methods it provides
for given options, and `run(setting, methods, options) -> {method: MethodRun}`. The comparison loops over its
pipelines (`pipelines.builtin.PIPELINES` by default) and reads nothing else of them; a new selection method is a
`RoundScorer` given to the selection rounds (`pipelines.rounds`) through the options, a new kind of method a new
`Pipeline`.
"""
import dataclasses
import os
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

from bliss_jax.data.composition import SelectionReporter
from bliss_jax.training.trainer import TrainSpec


@dataclasses.dataclass(frozen=True)
class Setting:
  """What every method of one comparison (of one seed) shares (`compare.run`'s arguments, defaults resolved).

  root: where the stages of this seed go (`subroot(pipeline)`): everything that depends on the target.
  shared_root: where the stages that do not depend on the target go (`shared_subroot(pipeline)`: the small and large
    models, their scores and selections), computed once for every seed of the comparison (may equal `root`).
  """
  root: str
  shared_root: str
  target: TrainSpec
  small: TrainSpec
  large: Optional[TrainSpec]
  train_task: str
  pool_task: str
  pool_split: str
  pool_max_examples: Optional[int]
  reference_task: str
  eval_task: str
  eval_split: str
  eval_max_batches: Optional[int]
  selection_report: Optional[SelectionReporter]  # the selection stages' per-document report, where there is one
  progress_bar: bool

  def subroot(self, pipeline: str) -> str:
    return os.path.join(self.root, pipeline)

  def shared_subroot(self, pipeline: str) -> str:
    return os.path.join(self.shared_root, pipeline)


@dataclasses.dataclass(frozen=True)
class AuxCost:
  """A method's auxiliary FLOPs: one-off items incurred before a step ({label: (after_step, flops)}, after_step 0 =
  before training) and a per-step forward (`per_step` FLOPs at each of the first `per_step_until` steps)."""
  one_off: Mapping[str, Tuple[int, float]] = dataclasses.field(default_factory=dict)
  per_step: float = 0.0
  per_step_until: int = 0
  per_step_label: str = ""

  def at(self, step: int) -> float:
    """Auxiliary FLOPs spent by the time the target finished `step` steps."""
    once = sum(f for after, f in self.one_off.values() if after < step or after == 0)
    return once + self.per_step * min(step, self.per_step_until)

  def breakdown(self) -> Dict[str, float]:
    out = {k: f for k, (_, f) in self.one_off.items()}
    if self.per_step_until:
      out[self.per_step_label] = self.per_step * self.per_step_until
    return out


@dataclasses.dataclass(frozen=True)
class Scores:
  """The scores a method's (last) selection was chosen by: a score store (`selection.score_store`), its column, the
  file of the candidates' keys among its rows (a JSON list; None: every row) and what was scored, in words."""
  store: str
  column: str
  candidates: Optional[str] = None
  what: str = ""


@dataclasses.dataclass(frozen=True)
class MethodRun:
  """One method's outcome: its target's checkpoints, what it cost besides the target, what it selected.

  model_dirs: ((first step, MODEL_DIR), ...): the checkpoint at step t is in the last MODEL_DIR whose first step ≤ t.
  stages: the directories of the stages this method depends on (its own and those it shares with other methods or
    seeds, under `Setting.subroot` or `Setting.shared_subroot`), for its wall time.
  selections: files of the example keys it selected (JSON lists), for the composition report.
  pool: the file of the candidate pool's keys it selected from, if any.
  token_selection: a token-selecting method's file of {"kept": {doc_id: tokens it kept}, "all": {doc_id: tokens},
    "steps"} over some of its training batches (`rho1.token_selection`), for the composition report.
  scores: the scores its (last) selection was chosen by, if any, for the report's highest- and lowest-scored examples.
  """
  pipeline: str
  model_dirs: Tuple[Tuple[int, str], ...]
  aux: AuxCost
  stages: Tuple[str, ...]
  selections: Tuple[str, ...] = ()
  pool: Optional[str] = None
  token_selection: Optional[str] = None
  scores: Optional[Scores] = None

  def model_dir_at(self, step: int) -> str:
    return [md for first, md in self.model_dirs if first <= step][-1]


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """A registered pipeline: `provides(options)` lists its methods in report order; `run(setting, methods, options)`
  runs (or resumes) those of them asked for and returns {method: MethodRun}."""
  name: str
  provides: Callable[[Mapping], Tuple[str, ...]]
  run: Callable[[Setting, Sequence[str], Mapping], Dict[str, MethodRun]]


def methods(pipelines: Sequence[Pipeline], options: Mapping[str, Mapping]) -> Dict[str, Pipeline]:
  """{method: the pipeline providing it} given each pipeline's options, in pipeline and report order."""
  out: Dict[str, Pipeline] = {}
  for p in pipelines:
    for m in p.provides(options.get(p.name) or {}):
      if m in out:
        raise ValueError(f"method {m!r} is provided by both {out[m].name!r} and {p.name!r}")
      out[m] = p
  return out
