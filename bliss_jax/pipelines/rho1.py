"""RHO-1 (Lin et al.): Selective Language Modeling against a reference model, next to plain pretraining.

Stages (each resumable, under `root/`; the reference under `shared_root/`, default `root/`, as it does not depend on
the students):
  reference      the reference model, trained with plain CE on the high-quality reference set (`reference_task`)
  student_plain  plain CE on the training stream (`train_task`)
  student_rho1   the same steps with the SLM loss: CE on the top `ratio` of tokens by excess loss over the frozen
                 reference (computed online in the same jitted step)
  eval           held-out loss/accuracy of both on the same split, plus the selection statistics RHO-1 logged
                 (selected fraction, CE on selected vs. unselected tokens) from its metrics.jsonl
Both students cost the same training FLOPs (RHO-1 forwards/backwards every token); the reference's training and its
per-step forward are auxiliary cost, reported separately.
"""
import dataclasses
import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from bliss_jax.choices import check_choice
from bliss_jax.losses.selective import make_selective_loss
from bliss_jax.pipelines import common, method
from bliss_jax.pipelines.stages import run_stage
from bliss_jax.training import trainer
from bliss_jax.training.model_dir import ModelDir


STUDENTS = ("plain", "rho1")


def _selection_stats(model_dir: str) -> dict:
  rows = ModelDir(model_dir).metrics("train")
  keys = ("selected_fraction", "ce_selected", "ce_unselected", "ce_all", "excess_loss", "reference_loss")
  out = {}
  for k in keys:
    v = [r[k] for r in rows if k in r]
    if v:
      out[k + "_mean"] = float(np.mean(v))
      out[k + "_last"] = float(v[-1])
  return out


def run(*, root: str, train_task: str, reference_task: str, student: trainer.TrainSpec,
        reference: trainer.TrainSpec, eval_task: Optional[str] = None, eval_split: str = "validation",
        ratio: float = 0.6, score: str = "excess", scope: str = "batch", eval_max_batches: Optional[int] = None,
        students: Sequence[str] = ("plain", "rho1"), keep_checkpoints: Optional[int] = 3,
        shared_root: Optional[str] = None, progress_bar: bool = True) -> dict:
  """Run (or resume) the RHO-1 comparison; returns what it writes to `root/report.json`. `keep_checkpoints`: of each
  student (None: all). `shared_root`: where the reference model's stage goes (default `root`)."""
  for name in students:
    check_choice("RHO-1 student", name, STUDENTS)
  L = student.sequence_length
  ref = run_stage(shared_root or root, "reference", lambda d: common.train_on_task(d, reference, reference_task,
                                                                    progress_bar=progress_bar),
                  {"spec": dataclasses.asdict(reference), "task": reference_task})
  results = {}
  for name in students:
    if name == "plain":
      fn = lambda d: common.train_on_task(d, student, train_task, progress_bar=progress_bar,
                                          keep_checkpoints=keep_checkpoints)
    elif name == "rho1":
      def fn(d):
        res = common.train_on_task(
            d, student, train_task, progress_bar=progress_bar, frozen_model_dirs={"reference": ref["model_dir"]},
            loss_factory=lambda m, fm: make_selective_loss(m, fm, ratio=ratio, score=score, scope=scope),
            keep_checkpoints=keep_checkpoints)
        res["reference_forward_flops"] = common.forward_flops(ref["model_dir"], L, res["tokens"])
        res["selection"] = _selection_stats(d)
        return res
    results[name] = run_stage(root, f"student_{name}", fn, {"spec": dataclasses.asdict(student), "ratio": ratio,
                                                              "score": score, "scope": scope, "task": train_task})
    results[name]["heldout"] = common.heldout_eval(results[name]["model_dir"], eval_task or reference_task,
                                                   eval_split, sequence_length=L, batch_size=student.batch_size,
                                                   max_batches=eval_max_batches)
  report = {"students": results, "reference": ref}
  common.write_json(os.path.join(root, "report.json"), report)
  return report


def _compare(setting: method.Setting, methods: Sequence[str], options: Mapping) -> Dict[str, method.MethodRun]:
  kw = dict(dict(reference=setting.small, reference_task=setting.reference_task), **options)
  root, shared = setting.subroot("rho1"), setting.shared_subroot("rho1")
  kw.update(root=root, shared_root=shared, train_task=setting.train_task, student=setting.target,
            eval_task=setting.eval_task, eval_split=setting.eval_split, eval_max_batches=setting.eval_max_batches,
            students=tuple(methods), progress_bar=setting.progress_bar, keep_checkpoints=None)
  rep = run(**kw)
  out = {}
  for m in methods:
    s = rep["students"][m]
    if m == "plain":
      aux = method.AuxCost()
    else:
      n = setting.target.num_steps
      aux = method.AuxCost({"reference_training": (0, rep["reference"]["train_flops"])},
                             s["reference_forward_flops"] / n, n, "reference_forwards")
    stages = ((os.path.join(root, "student_plain"),) if m == "plain" else
              (os.path.join(shared, "reference"), os.path.join(root, "student_rho1")))
    out[m] = method.MethodRun("rho1", ((0, s["model_dir"]),), aux, stages)
  return out


PIPELINE = method.Pipeline("rho1", lambda options: ("plain", "rho1"), _compare)
