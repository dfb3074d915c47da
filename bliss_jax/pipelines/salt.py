"""SALT (small-model-aided large-model training): KD from a small LM for the first n_KD steps, then plain training;
SALT_DS also trains the KD stage on sequences the small LM selects. Baselines: plain training and RKD (KD throughout).

Stages (each resumable, under `root/`; those before the students — the teacher, its evaluation, SALT_DS's scoring
and selection — do not depend on the students and go under `shared_root/`, default `root/`):
  teacher          the small LM ζ, trained on `task`'s train split (or given as `teacher_dir`). Its training stops
                   (checkpointed) at n0 = `scorer_step`, and that checkpoint is copied to its own MODEL_DIR
                   `teacher/early_<n0>` (ζ_{n0}, SALT_DS's scorer), whatever `keep_checkpoints` later deletes
  teacher_eval     held-out loss/accuracy of ζ (the "SLM" row of the paper's Table 1)
  scorer_data      what ζ_{n0} trained on: the document token spans of the examples in the first n0 batches of its
                   stream, replayed (`data.keyed.consumed_spans`); only when ζ is trained here
  score            SALT eq. 11 (`selection.salt_ds`: the median of the token CE over the positions whose true token is
                   in ζ_{n0}'s top k, k = `top_k`; `out_of_top_k`) of every example of `pool_task:pool_split` (LM
                   chunks of the student's length) that overlaps nothing ζ_{n0} trained on: with the stream's own
                   documents as the pool (`pool_split='train'`), the paper's "remainder of the training examples"
  select           the top m by score, m = n_KD × batch (or `num_selected`), ties broken at random; reports the share
                   of candidates tied at the most common score; with `selection_report`, the selection's composition
                   next to the pool's (its `document_report`, e.g. `data.benchmark.reports.selection_report`)
  student_<name>   `baseline` (plain LM loss), `rkd` (KD at every step), `salt` (KD for n_KD steps, then plain),
                   `salt_ds` (as `salt`, the KD stage on the selection). Every student starts from the same
                   initialisation and reads the same stream, with one optimizer state and LR schedule over all steps,
                   and is evaluated (held-out loss, perplexity, next-token accuracy on `eval_task:eval_split`) at the
                   switch point n_KD and at `eval_fractions` of its steps (70% and 100%).

Training runs in segments (`train_segments`): `trainer.train` calls that stop, checkpointed, at n_KD and at each
evaluation step, where the checkpoint is evaluated at once (`MODEL_DIR/heldout.json`). A segment of KD steps runs with
the teacher loaded and `loss_phases=[(n_KD, KD loss)]`; a segment after n_KD runs without the teacher (neither loaded
nor executed). Resuming is exact (the trainer restores the state and the data position). SALT_DS's switch of data is
the same mechanism: the segments up to n_KD read the selection's stream, the later ones the normal stream from data
position n_KD, i.e. they skip the first n_KD batches of the normal stream (the position counted batches of the other
stream), so every student trains on the same batches after n_KD. Each segment starts its input pipeline afresh (on the
benchmark UL2 mixture, about a minute on CPU before the first batch).

Under UL2 (`feature_converter='prefix_lm_shared'`: examples up to the whole row), KD uses the identical formatted
example and applies at exactly the loss-carrying (target) positions; the selection is scored as plain LM chunks and
served back through the same UL2 denoisers (`selection.selected_ul2`). Either way the selection is read by index
from a chunk store of `pool_task:pool_split` (`shared_root/chunk_stores/`, written on first use: `common.pool_store`):
under UL2 chunk by chunk as the denoisers ask, under the LM objective as packed rows.
"""
import dataclasses
import functools
import json
import os
from typing import Callable, Dict, Mapping, Optional, Sequence

import jax
import numpy as np

from bliss_jax import partitioning
from bliss_jax.choices import check_choice
from bliss_jax.data import keyed
from bliss_jax.data.composition import SelectionReporter
from bliss_jax.data import pipeline as data_pipeline
from bliss_jax.losses.lm import AVERAGES, make_lm_loss
from bliss_jax.losses.salt import TRANSITIONS, salt_kd_loss_factory
from bliss_jax.models.config import count_params
from bliss_jax.models.flops import forward_flops_per_token, train_flops_per_token
from bliss_jax.pipelines import common, method
from bliss_jax.pipelines.stages import run_stage
from bliss_jax.selection import offline_scoring, rules, score_store
from bliss_jax.selection.salt_ds import NO_TOP_K_SCORE, OUT_OF_TOP_K, make_salt_ds_scorer
from bliss_jax.selection.selected_ul2 import register_selected_ul2_mixture
from bliss_jax.training import trainer
from bliss_jax.training.model_dir import MODEL_CONFIG, VOCABULARY, ModelDir

STUDENTS = ("baseline", "rkd", "salt", "salt_ds")
# SALT's n_KD as a fraction of the student's steps (36K of 208K in the paper), the comparison's default.
KD_FRACTION = 36 / 208


def kd_steps(student: str, num_steps: int, n_kd: int) -> int:
  """Steps that run the teacher: 0 (baseline), all (RKD), n_KD (SALT, SALT_DS)."""
  check_choice("SALT student", student, STUDENTS)
  return {"baseline": 0, "rkd": num_steps}.get(student, min(n_kd, num_steps))


def evaluation_steps(num_steps: int, n_kd: int, fractions: Sequence[float] = (0.7, 1.0)) -> Dict[str, int]:
  """{label: step}: "switch" at n_KD (when 0 < n_KD < steps) and "70%", "100%", ... of `num_steps`."""
  steps = {"switch": n_kd} if 0 < n_kd < num_steps else {}
  for f in fractions:
    if not 0.0 < f <= 1.0:
      raise ValueError(f"evaluation fraction {f} outside (0, 1]")
    steps[f"{100 * f:g}%"] = max(1, int(round(f * num_steps)))
  return steps


def train_segments(model_dir: str, spec: trainer.TrainSpec, batch_source, *, vocab_size: int,
                   stops: Sequence[int] = (), n_kd: int = 0, kd_factory=None, teacher_dir: Optional[str] = None,
                   kd_batch_source=None, on_stop: Optional[Callable[[int], None]] = None,
                   keep_checkpoints: Optional[int] = None, mesh_data: int = -1, mesh_model: int = 1,
                   fsdp: bool = False, devices=None, progress_bar: bool = True, average: str = "token") -> int:
  """Train `spec` to `spec.num_steps`, stopping (checkpointed) at each of `stops` and at n_kd; returns the last step.

  Steps 1..n_kd use `kd_factory` with the frozen teacher `teacher_dir` (and read `kd_batch_source`'s train split when
  given); the steps after n_kd use the plain LM loss (`make_lm_loss` with `average`), in `train` calls that neither
  load nor run the teacher.
  `on_stop(step)` runs after each segment, while its checkpoint is the latest. A rerun skips the segments already
  checkpointed (calling `on_stop` again, which must be idempotent) and resumes inside the current one.
  """
  if n_kd > 0 and (kd_factory is None or teacher_dir is None):
    raise ValueError("KD steps (n_kd > 0) need kd_factory and teacher_dir")
  n = spec.num_steps
  ends = sorted({s for s in stops if 0 < s < n} | ({n_kd} if 0 < n_kd < n else set()) | {n})
  prev = 0
  for end in ends:
    if common.latest_step(model_dir) < end:
      kd = prev < n_kd  # n_kd is a segment boundary: a segment is all KD steps or all plain steps
      source = batch_source
      if kd and kd_batch_source is not None:
        source = lambda split, _kd=kd_batch_source, **kw: (_kd if split == "train" else batch_source)(split, **kw)
      trainer.train(
          model_dir=model_dir, spec=spec, batch_source=source, vocab_size=vocab_size,
          loss_factory=functools.partial(make_lm_loss, average=average),
          loss_phases=[(n_kd, kd_factory)] if kd else None,
          frozen_model_dirs={"teacher": teacher_dir} if kd else None, keep_checkpoints=keep_checkpoints,
          mesh_data=mesh_data, mesh_model=mesh_model, fsdp=fsdp, devices=devices, progress_bar=progress_bar,
          stop_at_step=end, allow_config_change=("data",) if kd_batch_source is not None and not kd else ())
    if on_stop is not None:
      on_stop(end)
    prev = end
  return ends[-1]


def _evaluate_on_stop(model_dir: str, steps: Dict[str, int], **eval_kw) -> Callable[[int], None]:
  """An `on_stop` that evaluates the checkpoints at `steps` ({label: step}) as they are reached, recording each in
  MODEL_DIR/heldout.json (so a limited `keep_checkpoints` may delete them later)."""
  path = os.path.join(model_dir, "heldout.json")

  def on_stop(end):
    done = json.load(open(path)) if os.path.exists(path) else {}
    todo = {label: step for label, step in steps.items() if step == end and label not in done}
    if todo:
      for label, step in todo.items():
        done[label] = common.heldout_at_step(model_dir, step, **eval_kw)
      common.write_json(path, done)
  return on_stop


def _keep_early_checkpoint(model_dir: str, step: int, early_dir: str) -> Callable[[int], None]:
  """An `on_stop` that copies MODEL_DIR's checkpoint at `step` into its own MODEL_DIR `early_dir` (atomically)."""
  def on_stop(end):
    if end == step:
      ModelDir(model_dir).copy_at_step(early_dir, step, records=(MODEL_CONFIG, VOCABULARY))
  return on_stop


def run(*, root: str, task: str, student: trainer.TrainSpec, n_kd: int, teacher: Optional[trainer.TrainSpec] = None,
        teacher_dir: Optional[str] = None, feature_converter: str = "decoder", omega: float = 0.667,
        rho: float = 0.25, transition: str = "step", n_kd_start: Optional[int] = None, average: str = "sequence",
        students: Sequence[str] = STUDENTS, pool_task: Optional[str] = None, pool_split: str = "train",
        pool_max_examples: Optional[int] = None, exclude_scorer_data: bool = True, scorer_step: Optional[int] = None,
        scorer_dir: Optional[str] = None, top_k: int = 10, out_of_top_k: str = "remove",
        num_selected: Optional[int] = None,
        selection_seed: int = 0, score_batch_size: int = 32, selection_report: Optional[SelectionReporter] = None,
        eval_task: Optional[str] = None,
        eval_split: str = "validation", eval_fractions: Sequence[float] = (0.7, 1.0),
        eval_max_batches: Optional[int] = None, eval_sequence_length: Optional[int] = None,
        keep_checkpoints: Optional[int] = None, mesh_data: int = -1, mesh_model: int = 1, fsdp: bool = False,
        devices=None, shared_root: Optional[str] = None, progress_bar: bool = True) -> dict:
  """Run (or resume) the SALT pipeline; returns the report written to `root/report.json` (`summary`: held-out
  loss/accuracy of the small LM and of every student at each evaluation step).

  Args:
    task: the pretraining stream (train split) of the teacher and the students, e.g. the UL2 mixture
      `benchmark_ul2` with `feature_converter='prefix_lm_shared'`.
    student / teacher: TrainSpecs; or `teacher_dir`, a trained small LM.
    n_kd: the KD stage's last step (SALT's n_KD; n_KD,2 for the linear transitions, `n_kd_start` being n_KD,1).
    omega, rho, transition: ω₀, the teacher temperature ρ and the transition strategy (`losses.salt`).
    average: how every loss here (the small LM's, the students' LM and KD losses) averages a batch: `"sequence"`,
      the mean over sequences (packed segments) of each one's token mean (Algorithm 1), or `"token"`, the mean over
      the batch's tokens (`losses.lm.averaging_weights`).
    pool_task / pool_split: SALT_DS's candidates, scored as plain LM chunks at the student's sequence length
      (`pool_max_examples`: a seeded uniform sample of this many, `common.pool_keys`). The paper's: the stream's own documents (e.g. `benchmark_all` for
      `benchmark_ul2`, split `train`), less what ζ_{n0} trained on; a split the small LM never reads (the benchmark
      mixture's `pool`) is the other choice.
    exclude_scorer_data: leave out of the candidates every chunk that overlaps an example of the first n0 batches of
      the teacher's stream (the data ζ_{n0} trained on; the stage `scorer_data`). Only for a teacher trained here:
      with `teacher_dir` what its checkpoints read is unknown, and the pool must be data they never saw.
    scorer_step: n0, the teacher's step that scores for SALT_DS (default: an eighth of the teacher's steps, as 26K of
      208K in the paper's App. K [inferred]); with `teacher_dir` it must be one of its kept checkpoints, or give
      `scorer_dir`, a MODEL_DIR whose latest checkpoint scores.
    top_k: k of eq. 11. out_of_top_k: `"remove"` (the out-of-top-k losses are left out of the median, the paper's
      prose) or `"zero"` (counted as 0, eq. 11 as typeset); `selection.salt_ds`.
    num_selected: m (default n_KD × student batch size; at most the pool); ties in the score are broken at random with
      `selection_seed`. selection_report: writes the selection's per-document report against `pool_split`
      (its `document_report`, e.g. the benchmark's composition by domain and quality, `data.benchmark.reports`).
    eval_task / eval_split: the held-out set (default: `task`'s validation split); `eval_fractions` of the student's
      steps are evaluated besides n_KD. `eval_sequence_length`: the held-out rows' length (default: the students'
      L). A model trained only on UL2 examples of at most `example_length` tokens (`data/ul2.py`) never sees a later
      position: under `feature_converter='prefix_lm_shared'` examples fill the row and L is right; with a shorter
      `example_length` evaluate at that length, not at L, where rotary positions are extrapolated.
    keep_checkpoints: periodic checkpoints kept per model (None: all). Evaluations and the scorer's checkpoint are
      taken when their step is reached, so any value works.
    mesh_data / mesh_model / fsdp / devices: the training mesh (`trainer.train`); scoring uses all `devices` on "data".
    shared_root: where the stages that do not depend on the students go (default `root`).
  """
  shared_root = shared_root or root
  check_choice("transition", transition, TRANSITIONS)
  check_choice("average", average, AVERAGES)
  check_choice("out_of_top_k", out_of_top_k, OUT_OF_TOP_K)
  unknown = sorted(set(students) - set(STUDENTS))
  if unknown:
    raise ValueError(f"unknown SALT students {unknown}: expected some of {STUDENTS}")
  n = student.num_steps
  if not 0 < n_kd <= n:
    raise ValueError(f"n_kd={n_kd} must lie in [1, {n}] (the student's steps)")
  if "salt_ds" in students and teacher_dir is not None and scorer_step is None and scorer_dir is None:
    raise ValueError("SALT_DS with a given teacher_dir needs scorer_step (one of its checkpoints) or scorer_dir")
  L, B = student.sequence_length, student.batch_size
  eval_task = eval_task or task
  eval_L = eval_sequence_length or L
  run_ = _Run(task=task, feature_converter=feature_converter, averaged={} if average == "token" else
              {"average": average},  # stage inputs (token-mean runs keep theirs)
              train_kw=dict(vocab_size=data_pipeline.vocabulary_size(task), keep_checkpoints=keep_checkpoints,
                            mesh_data=mesh_data, mesh_model=mesh_model, fsdp=fsdp, devices=devices,
                            progress_bar=progress_bar, average=average),
              eval_kw=dict(task=eval_task, split=eval_split, sequence_length=eval_L, batch_size=B,
                           max_batches=eval_max_batches))
  small = _small_lm(shared_root, run_, teacher, teacher_dir, scorer_step, scorer_dir)
  slm_eval = run_stage(shared_root, "teacher_eval",
                       lambda d: common.heldout_at_step(small.teacher_dir, common.latest_step(small.teacher_dir),
                                                        **run_.eval_kw),
                       {"teacher": small.teacher_dir, "eval": f"{eval_task}:{eval_split}", "L": eval_L})
  scored = selection = None
  if "salt_ds" in students:
    scored, selection = _hard_but_learnable(
        shared_root, small, pool_task=pool_task, pool_split=pool_split, pool_max_examples=pool_max_examples,
        exclude_scorer_data=exclude_scorer_data, L=L, top_k=top_k, out_of_top_k=out_of_top_k,
        m=num_selected if num_selected is not None else n_kd * B, selection_seed=selection_seed,
        score_batch_size=score_batch_size, selection_report=selection_report, devices=devices,
        progress_bar=progress_bar)

  kd_factories = {"salt": salt_kd_loss_factory(omega, rho, transition=transition, n_kd=n_kd, n_kd_start=n_kd_start,
                                               average=average),
                  "rkd": salt_kd_loss_factory(omega, rho, transition="step", n_kd=n, average=average)}
  kd_record = {"omega": omega, "rho": rho, "transition": transition, "n_kd_start": n_kd_start}
  steps_at = evaluation_steps(n, n_kd, eval_fractions)
  results = {name: _student(root, name, run_, student, small.teacher_dir, n_kd=n_kd, kd_factories=kd_factories,
                            kd_record=kd_record, steps_at=steps_at, selection=selection, pool_task=pool_task,
                            pool_split=pool_split, eval_name=f"{eval_task}:{eval_split}", eval_L=eval_L,
                            store_root=shared_root)
             for name in students}

  summary = {"slm": {"final": {k: slm_eval[k] for k in ("loss", "accuracy", "step")}}}
  for name, r in results.items():
    summary[name] = {label: {k: h[k] for k in ("loss", "accuracy", "step")} for label, h in r["heldout"].items()}
  config = {"n_kd": n_kd, "omega": omega, "rho": rho, "transition": transition, "n_kd_start": n_kd_start,
            "average": average, "out_of_top_k": out_of_top_k,
            "top_k": top_k, "task": task, "eval": f"{eval_task}:{eval_split}"}
  report = {"summary": summary, "students": results, "teacher": dict(small.result, heldout=slm_eval),
            "scoring": scored, "selection": selection, "config": config}
  common.write_json(os.path.join(root, "report.json"), report)
  return report


@dataclasses.dataclass(frozen=True)
class _Run:
  """What every stage of one SALT run shares: the stream, and how it trains and evaluates."""
  task: str
  feature_converter: str
  averaged: dict  # the `average` stage input, empty for token means
  train_kw: dict  # `train_segments` keywords
  eval_kw: dict  # `common.heldout_at_step` keywords

  def source(self, spec: trainer.TrainSpec):
    return data_pipeline.seqio_batch_source(self.task, batch_size=spec.batch_size,
                                            sequence_length=spec.sequence_length, seed=spec.seed,
                                            feature_converter=self.feature_converter)


@dataclasses.dataclass(frozen=True)
class _SmallLM:
  """The small LM ζ: the KD teacher, and SALT_DS's scorer ζ_{n0} (`scorer_dir`, at `scorer_step` or its latest)."""
  result: dict  # the `teacher` stage's result (or a given MODEL_DIR's description)
  teacher_dir: str
  scorer_dir: str
  scorer_step: Optional[int]
  scorer_stream: Optional[dict]  # what ζ_{n0} read (None for a given teacher: unknown)


def _small_lm(shared_root: str, run_: _Run, teacher: Optional[trainer.TrainSpec], teacher_dir: Optional[str],
              scorer_step: Optional[int], scorer_dir: Optional[str]) -> _SmallLM:
  """Stage `teacher`: ζ trained on the stream, its checkpoint at n0 copied to `early_<n0>`; or the given MODEL_DIR."""
  if teacher_dir is not None:
    return _SmallLM({"model_dir": teacher_dir, "scorer_dir": scorer_dir or teacher_dir, "scorer_step": scorer_step,
                     "train_flops": 0.0, "num_params": count_params(ModelDir(teacher_dir).read_model_config())},
                    teacher_dir, scorer_dir or teacher_dir, None if scorer_dir is not None else scorer_step, None)
  if teacher is None:
    raise ValueError("SALT needs a small LM: give teacher_dir (a trained MODEL_DIR) or a teacher TrainSpec")
  n0 = scorer_step if scorer_step is not None else max(1, teacher.num_steps // 8)
  if not 0 < n0 <= teacher.num_steps:
    raise ValueError(f"scorer_step={n0} outside [1, {teacher.num_steps}] (the teacher's steps)")

  def do_teacher(d):
    early = os.path.join(d, f"early_{n0}")
    train_segments(d, teacher, run_.source(teacher), stops=[n0], on_stop=_keep_early_checkpoint(d, n0, early),
                   **run_.train_kw)
    cfg = ModelDir(d).read_model_config()
    tokens = teacher.num_steps * teacher.batch_size * teacher.sequence_length
    return {"model_dir": d, "scorer_dir": early, "scorer_step": n0, "steps": teacher.num_steps,
            "num_params": count_params(cfg), "train_flops": train_flops_per_token(cfg, teacher.sequence_length) *
            tokens, "scorer_train_flops": train_flops_per_token(cfg, teacher.sequence_length) * tokens * n0 /
            teacher.num_steps}
  res = run_stage(shared_root, "teacher", do_teacher,
                  {"spec": teacher.record(), "task": run_.task, "feature_converter": run_.feature_converter,
                   "scorer_step": n0, **run_.averaged})
  stream = dict(name=run_.task, split="train", sequence_length=teacher.sequence_length,
                batch_size=teacher.batch_size, num_batches=n0, seed=teacher.seed,
                feature_converter=run_.feature_converter)
  return _SmallLM(res, res["model_dir"], res["scorer_dir"], None, stream)


def _hard_but_learnable(shared_root: str, small: _SmallLM, *, pool_task: Optional[str], pool_split: str,
                        pool_max_examples: Optional[int], exclude_scorer_data: bool, L: int, top_k: int,
                        out_of_top_k: str, m: int, selection_seed: int, score_batch_size: int,
                        selection_report: Optional[SelectionReporter], devices, progress_bar: bool):
  """SALT_DS's stages `scorer_data`, `score` (eq. 11 by ζ_{n0}) and `select` (the top m); returns their results."""
  if pool_task is None:
    raise ValueError("SALT_DS needs pool_task (its candidates: the stream's documents as LM chunks, e.g. "
                     "'benchmark_all' for 'benchmark_ul2')")
  n0, scorer_dir = small.scorer_step, small.scorer_dir
  seen = None
  if exclude_scorer_data and small.scorer_stream is not None:

    def do_scorer_data(d):
      spans = keyed.consumed_spans(**small.scorer_stream, process_count=jax.process_count())
      return {"spans": common.write_json(os.path.join(d, "spans.json"), spans), "documents": len(spans),
              "tokens": sum(b - a for doc in spans.values() for a, b in doc)}
    seen = run_stage(shared_root, "scorer_data", do_scorer_data, small.scorer_stream)

  def do_score(d):
    mesh = partitioning.make_mesh(devices=devices)
    model, params = common.load_frozen(scorer_dir, mesh, step=n0)
    store = os.path.join(d, "store")
    exclude = {k: [tuple(x) for x in v] for k, v in json.load(open(seen["spans"])).items()} if seen else None
    keys = common.pool_subset_keys(pool_task, pool_split, L, pool_max_examples)
    table = offline_scoring.score_split(make_salt_ds_scorer(model, top_k, out_of_top_k=out_of_top_k), params,
                                        task=pool_task, split=pool_split, store_dir=store, sequence_length=L,
                                        batch_size=score_batch_size, mesh=mesh, keys=keys, model_dirs=(scorer_dir,),
                                        meta={"scorer": scorer_dir, "scorer_step": n0, "k": top_k,
                                              "out_of_top_k": out_of_top_k}, progress=progress_bar,
                                        exclude_spans=exclude)
    tokens = int(table.num_tokens.sum())
    return {"store": store, "scored_examples": len(table), "scored_tokens": tokens,
            "flops": forward_flops_per_token(ModelDir(small.teacher_dir).read_model_config(), L) * tokens}
  score_inputs = {"scorer": scorer_dir, "scorer_step": n0, "k": top_k, "pool": f"{pool_task}:{pool_split}", "L": L,
                  "max_examples": pool_max_examples, **common.pool_sample_inputs(pool_max_examples)}
  if out_of_top_k != "zero":
    score_inputs["out_of_top_k"] = out_of_top_k
  if seen:
    score_inputs["exclude"] = seen["spans"]
  scored = run_stage(shared_root, "score", do_score, score_inputs)

  def do_select(d):
    table = score_store.read_scores(scored["store"])
    s, in_top = table.columns["salt_ds"], table.columns["frac_in_top_k"]
    # Ties are broken uniformly at random (seeded), not by pool order: a weak scorer gives many rows one score (with
    # "zero", 0 wherever more than half the tokens are outside its top k; with "remove", NO_TOP_K_SCORE where none
    # is inside).
    order = np.random.default_rng(selection_seed).permutation(len(table))
    chosen = order[rules.top_k(s[order], min(m, len(table)))]
    keys = score_store.select_keys(table, chosen, "original")
    values, counts = np.unique(s, return_counts=True)
    scored_rows = s != NO_TOP_K_SCORE if out_of_top_k == "remove" else np.ones(len(s), bool)
    mean = lambda rows: float(s[rows].mean()) if rows.any() else None  # over rows with an in-top-k position
    result = {"selected": common.write_json(os.path.join(d, "selected_keys.json"), keys),
              "n_requested": m, "n_selected": len(keys), "n_pool": len(table),
              "score_mean_selected": mean(np.isin(np.arange(len(s)), chosen) & scored_rows),
              "score_mean_pool": mean(scored_rows), "score_threshold": float(s[chosen].min()),
              "tie_score_pool": float(values[counts.argmax()]), "tie_fraction_pool": float(counts.max() / len(s)),
              "frac_zero_score_pool": float(np.mean(s == 0)), "frac_no_top_k_pool": float(np.mean(in_top == 0)),
              "frac_in_top_k_selected": float(in_top[chosen].mean()), "frac_in_top_k_pool": float(in_top.mean())}
    if selection_report is not None:
      report, markdown = selection_report.document_report(keys, pool_split)
      result["report"] = common.write_json(os.path.join(d, "selection_report.json"), report)
      with open(os.path.join(d, "selection_report.md"), "w") as f:
        f.write(markdown + "\n")
      result["target_lift"] = report["target"]["lift"]
    return result
  selection = run_stage(shared_root, "select", do_select, {"m": m, "store": scored["store"], "seed": selection_seed})
  return scored, selection


def _student(root: str, name: str, run_: _Run, student: trainer.TrainSpec, teacher_dir: str, *, n_kd: int,
             kd_factories: Mapping, kd_record: Mapping, steps_at: Dict[str, int], selection: Optional[dict],
             pool_task: Optional[str], pool_split: str, eval_name: str, eval_L: int, store_root: str) -> dict:
  """Stage `student_<name>`: the student trained with KD for `kd_steps(name)` steps, evaluated at `steps_at`."""
  n, L, B = student.num_steps, student.sequence_length, student.batch_size
  kd_n = kd_steps(name, n, n_kd)
  inputs = {"spec": student.record(), "task": run_.task, "feature_converter": run_.feature_converter,
            "eval_steps": steps_at, "eval": eval_name, "kd_steps": kd_n, **run_.averaged}
  if eval_L != L:
    inputs["eval_L"] = eval_L
  if kd_n:
    inputs.update(teacher=teacher_dir, omega=kd_record["omega"], rho=kd_record["rho"])
  if name in ("salt", "salt_ds"):
    inputs.update(transition=kd_record["transition"], n_kd_start=kd_record["n_kd_start"])
  if name == "salt_ds":
    inputs.update(selection=selection["selected"], n_selected=selection["n_selected"])

  def fn(d):
    kd_source = None
    if name == "salt_ds":
      keys = json.load(open(selection["selected"]))
      chunks = common.pool_store(store_root, pool_task, pool_split, L)
      if run_.feature_converter in data_pipeline.PREFIX_LM_CONVERTERS:  # the UL2 denoisers over the selection
        selected = f"{os.path.basename(root.rstrip('/'))}_salt_ds_selected"
        register_selected_ul2_mixture(selected, chunks, keys)
        kd_source = data_pipeline.seqio_batch_source(selected, batch_size=B, sequence_length=L, seed=student.seed,
                                                     feature_converter=run_.feature_converter)
      else:
        kd_source = common.selection_source(chunks, keys, student)
    train_segments(d, student, run_.source(student), stops=list(steps_at.values()), n_kd=kd_n,
                   kd_factory=kd_factories["rkd" if name == "rkd" else "salt"] if kd_n else None,
                   teacher_dir=teacher_dir if kd_n else None, kd_batch_source=kd_source,
                   on_stop=_evaluate_on_stop(d, steps_at, **run_.eval_kw), **run_.train_kw)
    cfg = ModelDir(d).read_model_config()
    step_flops = train_flops_per_token(cfg, L) * B * L
    teacher_flops = forward_flops_per_token(ModelDir(teacher_dir).read_model_config(), L) * B * L * kd_n
    return {"model_dir": d, "steps": n, "kd_steps": kd_n, "num_params": count_params(cfg),
            "train_flops": step_flops * n, "teacher_forward_flops": teacher_flops,
            "step_equivalents": n + teacher_flops / step_flops,
            "heldout": json.load(open(os.path.join(d, "heldout.json")))}
  return run_stage(root, f"student_{name}", fn, inputs)


def _compare(setting: method.Setting, methods: Sequence[str], options: Mapping) -> Dict[str, method.MethodRun]:
  kw = dict(options)
  kw.setdefault("teacher", setting.small)
  kw.setdefault("n_kd", max(1, round(KD_FRACTION * setting.target.num_steps)))
  kw.setdefault("average", "token")  # every method of the comparison trains on the token mean of its loss
  if "salt_ds" in methods:
    kw.setdefault("pool_task", setting.pool_task)
    kw.setdefault("pool_split", setting.pool_split)
    kw.setdefault("pool_max_examples", setting.pool_max_examples)
  root, shared = setting.subroot("salt"), setting.shared_subroot("salt")
  kw.update(root=root, shared_root=shared, task=setting.train_task, student=setting.target, students=tuple(methods),
            eval_task=setting.eval_task, eval_split=setting.eval_split, eval_max_batches=setting.eval_max_batches,
            selection_report=setting.selection_report, progress_bar=setting.progress_bar, keep_checkpoints=None)
  rep = run(**kw)
  out = {}
  for m in methods:
    s = rep["students"][m]
    one_off = {"small_lm_training": (0, rep["teacher"]["train_flops"])}
    if m == "salt_ds":
      one_off["scoring"] = (0, rep["scoring"]["flops"])
    aux = method.AuxCost(one_off, s["teacher_forward_flops"] / max(s["kd_steps"], 1), s["kd_steps"],
                           "teacher_forwards")
    shared_stages = ["teacher", "teacher_eval"] + (["scorer_data", "score", "select"] if m == "salt_ds" else [])
    stages = tuple(os.path.join(shared, n) for n in shared_stages)
    out[m] = method.MethodRun("salt", ((0, s["model_dir"]),), aux, stages + (os.path.join(root, f"student_{m}"),),
                              (rep["selection"]["selected"],) if m == "salt_ds" else (),
                              scores=method.Scores(rep["scoring"]["store"], "salt_ds", what="the pool")
                              if m == "salt_ds" else None)
  return out


PIPELINE = method.Pipeline("salt", lambda options: ("rkd", "salt", "salt_ds"), _compare)
