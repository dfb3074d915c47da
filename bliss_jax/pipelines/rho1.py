"""RHO-1 (Lin et al.): Selective Language Modeling against a reference model, next to plain pretraining.

Stages (each resumable, under `root/`; the reference under `shared_root/`, default `root/`, as it does not depend on
the students):
  reference      the reference model, trained with plain CE on the high-quality reference set (`reference_task`)
  student_plain  plain CE on the training stream (`train_task`)
  student_rho1   the same steps with the SLM loss: CE on the top `ratio` of tokens by excess loss over the frozen
                 reference (computed online in the same jitted step)
  eval           held-out loss/accuracy of both on the same split, plus the selection statistics RHO-1 logged
                 (selected fraction, CE on selected vs. unselected tokens) from its metrics.jsonl
  token_selection  which documents the tokens SLM kept came from (`token_selection`): after training, on up to
                 `token_selection_batches` of the training batches, the ones that followed a kept checkpoint of the
                 student, with that checkpoint and the reference, so the training step itself carries no labels
Both students cost the same training FLOPs (RHO-1 forwards/backwards every token); the reference's training and its
per-step forward are auxiliary cost, reported separately.
"""
import os
from typing import Dict, Mapping, Optional, Sequence

import jax
import numpy as np

from bliss_jax.choices import check_choice
from bliss_jax.data import composition, keyed
from bliss_jax.losses.selective import make_selective_loss, make_token_selection
from bliss_jax.models.transformer import Transformer
from bliss_jax.pipelines import common, method
from bliss_jax.pipelines.stages import run_stage
from bliss_jax.training import checkpoints, trainer
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


def token_selection(out_dir: str, *, student_dir: str, reference_dir: str, task: str, spec: trainer.TrainSpec,
                    ratio: float, score: str, scope: str, max_batches: int) -> dict:
  """Which documents the tokens an SLM student kept came from, on some of its training batches, recomputed.

  The batches: the one that followed each of the student's kept checkpoints at a step s < `spec.num_steps` (stream
  position s, which step s + 1 trained on), at most `max_batches` of them spread evenly over those steps, read again
  with their documents (`keyed.replay_packed_batches`, the stream as `jax.process_count()` processes read it). The
  selection on each: the SLM's (`make_token_selection`) with the student's parameters at step s and the reference's
  latest checkpoint (the frozen model it trained against), i.e. the one step s + 1 made, up to tokens whose scores
  tie at the threshold to the last bit. Writes `out_dir/counts.json`: {"kept": {doc_id: kept tokens}, "all": {doc_id:
  loss-carrying tokens}, "steps"} of those batches; returns its path ("counts") and totals.
  """
  steps = [s for s in ModelDir(student_dir).checkpoint_steps() if s < spec.num_steps]
  if len(steps) > max_batches:
    steps = sorted({steps[i] for i in np.linspace(0, len(steps) - 1, max_batches).round().astype(int)})
  process_count = jax.process_count()
  read = {s: [] for s in steps}  # position -> [(local batch, its rows' documents)] in process order
  for p in range(process_count if steps else 0):
    replay = keyed.replay_packed_batches(task, "train", spec.sequence_length, spec.batch_size, steps[-1] + 1,
                                         seed=spec.seed, process_index=p, process_count=process_count)
    for position, (batch, rows) in enumerate(replay):
      if position in read:
        read[position].append((batch, [[x["doc_id"].decode() for x in row] for row in rows]))
  reference = Transformer(ModelDir(reference_dir).read_model_config())
  _, reference_params = checkpoints.load_params(reference_dir)
  select = make_token_selection(Transformer(ModelDir(student_dir).read_model_config()), {"reference": reference},
                                ratio=ratio, score=score, scope=scope)
  selected_of = jax.jit(lambda params, batch, frozen: select(params, batch, frozen)["selected"])
  kept, every = {}, {}
  for s in steps:
    batch = {k: np.concatenate([b[k] for b, _ in read[s]]) for k in read[s][0][0]}
    docs = [row for _, rows in read[s] for row in rows]
    _, params = checkpoints.load_params(student_dir, step=s)
    selected = np.asarray(selected_of(params, batch, {"reference": reference_params}))
    composition.token_counts_by_document(batch["decoder_segment_ids"], docs, selected, kept)
    composition.token_counts_by_document(batch["decoder_segment_ids"], docs, batch["decoder_loss_weights"] > 0, every)
  path = common.write_json(os.path.join(out_dir, "counts.json"), {"kept": kept, "all": every, "steps": steps})
  return {"counts": path, "steps": steps, "kept_tokens": sum(kept.values()), "tokens": sum(every.values())}


def run(*, root: str, train_task: str, reference_task: str, student: trainer.TrainSpec,
        reference: trainer.TrainSpec, eval_task: Optional[str] = None, eval_split: str = "validation",
        ratio: float = 0.6, score: str = "excess", scope: str = "batch", eval_max_batches: Optional[int] = None,
        students: Sequence[str] = ("plain", "rho1"), keep_checkpoints: Optional[int] = 3,
        token_selection_batches: int = 16, shared_root: Optional[str] = None, progress_bar: bool = True) -> dict:
  """Run (or resume) the RHO-1 comparison; returns what it writes to `root/report.json`. `keep_checkpoints`: of each
  student (None: all). `token_selection_batches`: at most this many training batches for the `token_selection`
  stage (0: no such stage). `shared_root`: where the reference model's stage goes (default `root`)."""
  for name in students:
    check_choice("RHO-1 student", name, STUDENTS)
  L = student.sequence_length
  ref = run_stage(shared_root or root, "reference", lambda d: common.train_on_task(d, reference, reference_task,
                                                                    progress_bar=progress_bar),
                  {"spec": reference.record(), "task": reference_task})
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
    results[name] = run_stage(root, f"student_{name}", fn, {"spec": student.record(), "ratio": ratio,
                                                              "score": score, "scope": scope, "task": train_task})
    results[name]["heldout"] = common.heldout_eval(results[name]["model_dir"], eval_task or reference_task,
                                                   eval_split, sequence_length=L, batch_size=student.batch_size,
                                                   max_batches=eval_max_batches)
    if name == "rho1" and token_selection_batches:
      sel_kw = dict(task=train_task, spec=student, ratio=ratio, score=score, scope=scope,
                    max_batches=token_selection_batches)
      results[name]["token_selection"] = run_stage(
          root, "token_selection", lambda d: token_selection(d, student_dir=results["rho1"]["model_dir"],
                                                             reference_dir=ref["model_dir"], **sel_kw),
          dict(sel_kw, spec=student.record(), process_count=jax.process_count()))
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
    token_selection = (s.get("token_selection") or {}).get("counts")
    if token_selection:
      stages += (os.path.join(root, "token_selection"),)
    out[m] = method.MethodRun("rho1", ((0, s["model_dir"]),), aux, stages, token_selection=token_selection)
  return out


PIPELINE = method.Pipeline("rho1", lambda options: ("plain", "rho1"), _compare)
