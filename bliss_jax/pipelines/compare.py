"""The comparison: every method on one corpus and one target shape, at equal target-training compute, over seeds.

Each method's own pipeline runs under `root/seed_<s>/<pipeline>/` (its stages resumable as always), given the same
target `TrainSpec` (shape, steps N, batch B, length L, optimizer, seed), so every target is trained for exactly N·B·L
tokens at the same FLOPs per token. What the small (and large) models cost is auxiliary and reported apart.

  method      pipeline  what trains the target                              auxiliary models and cost
  plain       rho1      CE on `train_task`'s stream                         none
  rho1        rho1      SLM: CE on the top tokens by excess loss            reference LM (`small`, on the reference
                                                                            set) and its forward at every step
  random      bliss     CE on a random 20% of each round's fresh pool       none
  bliss       bliss     CE on the top 20% by the bilevel score model        proxy warm-up, bilevel steps, scoring
  rkd         salt      KD from the small LM at every step                  small LM; its forward at every step
  salt        salt      KD for n_KD steps, then CE                          small LM; its forward for n_KD steps
  salt_ds     salt      as salt, the KD stage on SALT_DS's selection        small LM, scoring, forwards for n_KD steps
  miniplm     miniplm   CE on the top α by difference sampling              large teacher, reference LM, scoring
  vanilla_kd  miniplm   KD from the large teacher at every step (N steps)   large teacher; its forward every step

Seeds (`seeds`, default 1): seed s = 0, 1, ... trains every method's target with `target.seed + s`, its
initialisation and data order (every pipeline shuffles the target's stream with `TrainSpec.seed`; the selection
rounds also draw random's samples and their scorers' chance from round 1 on with it, `pipelines.rounds`). A stage
that does not depend on the target runs once, under `root/shared/<pipeline>/`, and every seed reuses it:
  rho1     reference                                     RHO-1's reference LM
  salt     teacher, teacher_eval, scorer_data, score,     the small LM, its held-out row, SALT_DS's scoring and
           select                                        selection (its tie-breaking `selection_seed` fixed)
  miniplm  pool_keys, split_reference, teacher,          the pool, D_ref (its `seed` fixed), the large teacher and
           reference, score, select, prx_*               the reference LM, the difference scores and selection
  bliss    pool_keys, pools, warmup_select, proxy_warmup  the rounds' pools, round 0's random selection and the proxy
                                                         warmed up on it (drawn with the pipeline's `seed`)
They are auxiliary: the seeds measure how a method's result varies with its target's chance (initialisation, data
order, random draws) given the same small models; redrawing those would multiply their cost by the seeds. Everything
that depends on the target (round 0's target steps, BLISS's bilevel stages and scores, MATES's probes, the
selections made from them, every target) runs per seed.

Stages of the comparison itself (under `root/seed_<s>/`, resumable like the others):
  curve_<m>      held-out loss and next-token accuracy of m's target at every `target.checkpoint_every` steps on
                 the primary held-out set, the first of `eval_sets` (the whole split, or `eval_max_batches` batches
                 sampled uniformly over it with a fixed seed; report.json's `config.eval_sample` says which): one
                 estimator for every method
  curve_<m>@<s>  the same on each further held-out set s of `eval_sets`
  stream_keys    the stream's example keys (`train_task`'s train split), for its composition, when there are labels
                 (under `root/shared/`: one stream for every seed)
  unigram_entropy@<s>  the unigram entropy of held-out set s at the target's sequence length (the loss of the best
                 context-free predictor: a target's loss must get well below it before its differences mean much;
                 under `root/shared/`)
  zero_shot_<m>  the zero-shot harness (`eval.harness`) on m's final target, when `zero_shot_tasks` are given
Then, always rewritten from the stage results (so an interrupted and a clean run write the same report), per seed
under `root/seed_<s>/`:
  report.json    per method: the curve (with target and total FLOPs at each point), final loss/accuracy (the primary
                 set; `loss@<s>` / `accuracy@<s>` for the others, in the curve's points too), FLOPs (target training,
                 auxiliary by item), wall time of its own stages and the stages it shares, what it selected
                 (composition by domain; for RHO-1, of the tokens it kept, `rho1.token_selection`), zero-shot results,
                 and steps / FLOPs to reach plain's final held-out loss (speedups); the composition of the stream and
                 of the candidate pool, side by side
  report.md      the table (a loss column per held-out set), the compositions, the zero-shot table, the figures
  loss_vs_flops.png, loss_vs_total_flops.png, composition.png
  tensorboard/<m>  the held-out curves of every method, so `tensorboard --logdir ROOT` overlays them next to every
                 stage's own training logs (which live under ROOT too)
and over the seeds under `root/` (`report.across_seeds`; with one seed the same files, without intervals):
  report.json    per method: mean and 95% interval of every final value and zero-shot metric, the paired difference
                 to plain and to random on the same seed, the curve as mean and min–max; the papers' claims
                 (`report.claims`) as holds / fails / inconclusive; wall time, shared stages once
  report.md, loss_vs_flops.png, loss_vs_total_flops.png (mean with a min–max band), composition.png (mean)

Wall time: a stage's seconds count every attempt (`pipelines.stages`). A method's own stages are those under its
seed's directory that no other method uses; every other stage (shared across seeds, or within a seed such as the
rounds' round 0 or SALT's teacher) is listed once with the methods that use it, and counted in no method's minutes.

FLOPs at a step t of a method's curve: t·(target step) + its per-step forwards up to t (teacher or reference) + the
one-off auxiliary costs incurred before step t (the small models' training at the start; BLISS's bilevel and scoring of
round r before round r's steps).
"""
import contextlib
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bliss_jax.data import composition as composition_lib
from bliss_jax.data import data_dir as data_dir_lib
from bliss_jax.data import pipeline as data_pipeline
from bliss_jax.data import seqio_tasks
from bliss_jax.models.config import count_params
from bliss_jax.models.flops import train_flops_per_token
from bliss_jax.pipelines import builtin, common, method
from bliss_jax.pipelines import stages
from bliss_jax.pipelines.stages import run_stage, stage_seconds
from bliss_jax.report import across_seeds, composition_text, tables
from bliss_jax.report import scored_documents as scored_documents_lib
from bliss_jax.selection import score_store
from bliss_jax.training import checkpoints, trainer
from bliss_jax.training.model_dir import ModelDir

SHARED_DIR = "shared"  # under the comparison's root: the stages every seed shares


def _with_further_sets(curve: Sequence[Mapping], further: Mapping[str, Sequence[Mapping]]) -> List[dict]:
  """The primary set's curve with `loss@<name>` / `accuracy@<name>` of each further set at the same steps."""
  by_step = {name: {p["step"]: p for p in points} for name, points in further.items()}
  return [dict(p, **{f"{k}@{name}": by_step[name][p["step"]][k] for name in further for k in ("loss", "accuracy")})
          for p in curve]


def flops_curve(curve: Sequence[Mapping], target_step_flops: float, aux: method.AuxCost) -> List[Tuple[float, float]]:
  """[(total FLOPs, loss)] of a curve of {"step", "loss"} points: target training plus auxiliary cost so far."""
  return [(p["step"] * target_step_flops + aux.at(p["step"]), p["loss"]) for p in curve]


def _rel(path: str, root: str) -> str:
  return os.path.relpath(os.path.abspath(path), os.path.abspath(root))


def seed_dir(seed: int) -> str:
  """The directory of seed `seed` (0, 1, ...) under the comparison's root."""
  return f"seed_{seed}"


def stage_users(stages: Mapping[str, Sequence[str]], seed_root: str) -> Tuple[Dict[str, List[str]],
                                                                             Dict[str, List[str]]]:
  """(own, shared) from {method: its stage directories} (`MethodRun.stages`): each method's own stages, those under
  `seed_root` that no other method uses, and every other stage with the methods that use it (in method order)."""
  stages = {m: [os.path.abspath(p) for p in paths] for m, paths in stages.items()}
  users: Dict[str, List[str]] = {}
  for m, paths in stages.items():
    for p in paths:
      users.setdefault(p, []).append(m)
  inside = lambda p: p.startswith(os.path.join(os.path.abspath(seed_root), ""))
  own = {m: [p for p in paths if users[p] == [m] and inside(p)] for m, paths in stages.items()}
  return own, {p: ms for p, ms in users.items() if len(ms) > 1 or not inside(p)}


def _seconds(stage_dirs: Sequence[str]) -> float:
  """The wall seconds of the finished stages among `stage_dirs`, every attempt counted (`stages.stage_seconds`)."""
  return sum(s for s in map(stage_seconds, stage_dirs) if s is not None)


def _read_keys(path: Optional[str]) -> List[str]:
  return json.load(open(path)) if path else []


DEFAULT_EVAL_SET = "heldout"  # the name of the held-out set when none is given: `train_task`'s validation split


def eval_sets_of(eval_sets: Optional[Mapping[str, str]], train_task: str) -> Tuple[Tuple[str, str, str], ...]:
  """((name, task, split), ...) of `eval_sets` ({name: "task:split"}, the first the primary), in order; None:
  `train_task`'s validation split, named `DEFAULT_EVAL_SET`. Names are letters, digits, "_", "-" and "." (they
  name report keys `loss@<name>` and stages `curve_<m>@<name>`)."""
  if eval_sets is None:
    return ((DEFAULT_EVAL_SET, train_task, "validation"),)
  if not eval_sets:
    raise ValueError("eval_sets is empty: give at least one {name: 'task:split'}")
  out = []
  for name, spec in eval_sets.items():
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
      raise ValueError(f"eval set name {name!r}: use letters, digits, '_', '-' and '.'")
    task, _, split = str(spec).rpartition(":")
    if not task or not split:
      raise ValueError(f"eval set {name!r}: {spec!r} is not 'task:split'")
    out.append((name, task, split))
  return tuple(out)


def run(*, root: str, target: trainer.TrainSpec, small: trainer.TrainSpec, train_task: str,
        large: Optional[trainer.TrainSpec] = None, pool_task: Optional[str] = None, pool_split: str = "train",
        pool_max_examples: Optional[int] = None,
        reference_task: Optional[str] = None, eval_sets: Optional[Mapping[str, str]] = None,
        eval_max_batches: Optional[int] = None, methods: Optional[Sequence[str]] = None,
        options: Optional[Mapping[str, Mapping]] = None,
        composition: Optional[composition_lib.SelectionReporter] = None,
        zero_shot_tasks: Sequence[str] = (), zero_shot_limit: Optional[float] = None,
        zero_shot_data_dir: Optional[str] = None, zero_shot_files: Optional[Mapping[str, Any]] = None,
        zero_shot_max_length: int = 2048, scale: str = "", scope: str = "",
        scored_documents: int = 3, seeds: int = 1, only_seed: Optional[int] = None,
        pipelines: Sequence[method.Pipeline] = builtin.PIPELINES, progress_bar: bool = True) -> dict:
  """Run (or resume) every method in `methods` on `seeds` seeds and write the comparison: each seed's report under
  `root/seed_<s>/`, the aggregate over the seeds as `root/report.json`, `report.md` and figures (module docstring).

  Args:
    target: the target model's TrainSpec, shared by every method (`checkpoint_every` is the curve's period; every
      checkpoint is kept). `num_steps` must split into BLISS's rounds + 1 when BLISS or random selection runs.
    small: the small model: RHO-1's reference LM, SALT's teacher and SALT_DS's scorer, MiniPLM's reference LM and
      BLISS's proxy (per-pipeline overrides in `options`, e.g. `{"salt": {"teacher": ...}}`).
    large: MiniPLM's (and Vanilla KD's) teacher, trained on `train_task`.
    train_task: the pretraining stream (its train split): plain, RHO-1, SALT, RKD and the teachers.
    pool_task / pool_split: the candidates of the selecting methods (random, BLISS, SALT_DS, MiniPLM; default:
      `train_task`'s train split, the stream itself, so that stream and candidates come from one distribution;
      the report gives both compositions).
      pool_max_examples: a seeded uniform sample of this many of the split's examples (`common.pool_keys`; for
      corpora as large as C4).
    reference_task: the high-quality reference set (its train split): RHO-1's reference LM and BLISS's upper level
      (default: `train_task`; a pipeline's options may name their own, e.g. BLISS's LAMBADA). MiniPLM's reference
      LM trains on D_ref, a part of the pool (the paper's setting), unless `options["miniplm"]["reference_task"]`
      names a task.
    eval_sets / eval_max_batches: the held-out sets every curve is measured on, {name: "task:split"} (`eval_sets_of`;
      default: `train_task`'s validation split): the first is the primary (`loss`, `accuracy`, the speedups and the
      pipelines' own evaluations), the others add `loss@<name>` / `accuracy@<name>`; each set whole, or
      `eval_max_batches` of its batches sampled uniformly over it.
    methods: some of the registered pipelines' methods (`method.methods(options)`; default: all of them).
    options: {pipeline name: further arguments of its `run`} (ratio, n_kd, alpha, rounds, bilevel, scorers, ...).
    composition: how selected examples are labelled for the composition report (`data.composition`): its
      labellers (e.g. the benchmark catalog's: domain, quality and the target-like share; or the document id up to
      its first ":"); its per-document report, if any, also goes to the pipelines' selection stages. None:
      no composition. (gin: `compare.composition = 'benchmark'` or `'doc_prefix'`, `configurables.compare`.)
    zero_shot_tasks / zero_shot_limit / zero_shot_data_dir: harness tasks run on every final target (default data
      dir: the shared data's `eval/`; skipped with a note where it is absent): built-in ones or any registered by a
      module the gin file imports (`eval.registry.register_task`). zero_shot_files: {task: path or [paths]} of tasks
      whose files are elsewhere (`registry.task_paths`). zero_shot_max_length: the longest scored row (contexts are
      left-truncated; as scripts/evaluate.py's --max_length).
    scale: a name for the report ("smoke", "small", ...).
    scope: one line for the top of the reports: what this run does and does not show.
    scored_documents: how many of the highest- and of the lowest-scored candidates the reports show per scoring
      method (its `MethodRun.scores`; with their labels and texts where `composition` gives them); 0: none.
    seeds: how many targets of every method: seed s trains them with `target.seed + s` (initialisation and data
      order); the stages that do not depend on the target run once, under `root/shared/`.
    only_seed: run seed `only_seed`'s stages and report only (its `seed_<s>/report.json`, returned), not the
      aggregate: several processes can then run the seeds side by side, started together: a shared stage that
      another seed's process is running is waited for, then reused; a later run without it reuses every stage and
      writes the aggregate.
    pipelines: the pipelines providing the methods (`method.Pipeline`), in report order.
  """
  options = dict(options or {})
  provided = method.methods(pipelines, options)
  methods = list(provided) if methods is None else list(methods)
  unknown = [m for m in methods if m not in provided]
  if unknown:
    raise ValueError(f"unknown methods {unknown}: expected some of {tuple(provided)}")
  methods = [m for m in provided if m in methods]
  L = target.sequence_length
  if small.sequence_length != L:
    raise ValueError(f"small.sequence_length={small.sequence_length} != target's {L}: they score the same chunks")
  if seeds < 1:
    raise ValueError(f"seeds={seeds} must be >= 1")
  if only_seed is not None and not 0 <= only_seed < seeds:
    raise ValueError(f"only_seed={only_seed} is not one of the seeds 0..{seeds - 1}")
  sets = eval_sets_of(eval_sets, train_task)
  reports = []
  # Seeds run as separate processes share the stages under root/shared/: one runs each, the others wait for it.
  waits = only_seed is not None
  with stages.waiting_under(os.path.join(root, SHARED_DIR)) if waits else contextlib.nullcontext():
    for seed in range(seeds) if only_seed is None else (only_seed,):
      setting = method.Setting(
          root=os.path.join(root, seed_dir(seed)), shared_root=os.path.join(root, SHARED_DIR),
          target=target.replace(seed=target.seed + seed), small=small, large=large, train_task=train_task,
          pool_task=pool_task or train_task, pool_split=pool_split, pool_max_examples=pool_max_examples,
          reference_task=reference_task or train_task, eval_task=sets[0][1], eval_split=sets[0][2],
          eval_max_batches=eval_max_batches,
          selection_report=composition if composition is not None and composition.document_report else None,
          progress_bar=progress_bar)
      runs: Dict[str, method.MethodRun] = {}
      for p in pipelines:
        wanted = [m for m in methods if provided[m] is p]
        if wanted:
          runs.update(p.run(setting, wanted, options.get(p.name) or {}))
      reports.append(_report(setting, methods, runs, sets, top=root, seed=seed, composition=composition,
                             zero_shot_tasks=zero_shot_tasks, zero_shot_limit=zero_shot_limit,
                             zero_shot_data_dir=zero_shot_data_dir, zero_shot_files=zero_shot_files,
                             zero_shot_max_length=zero_shot_max_length,
                             scale=scale, scope=scope, scored_documents=scored_documents, seeds=seeds))
  if only_seed is not None:
    return reports[0]
  return _aggregate(root, reports, [seed_dir(s) for s in range(seeds)])


def _aggregate(root: str, reports: Sequence[Mapping], dirs: Sequence[str]) -> dict:
  """The aggregate of the seeds' reports (`report.across_seeds`): `root/report.json`, `report.md` and figures."""
  report = across_seeds.aggregate(reports, dirs)
  common.write_json(os.path.join(root, "report.json"), report)
  rows = report["methods"]
  band = len(reports) > 1
  points = {m: [{"target_flops": p["target_flops"], "total_flops": p["total_flops"], "loss": p["mean"]["loss"],
                 **({"low": p["min"]["loss"], "high": p["max"]["loss"]} if band else {})} for p in r["curve"]]
            for m, r in rows.items()}
  figures = _figures(root, points, rows["plain"]["final"]["loss"] if "plain" in rows else None,
                     {m: r["selection"]["by_domain"] for m, r in rows.items() if r.get("selection")},
                     report["pool_composition"],
                     band=report["band"] if band else None)
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write(across_seeds.format_report(report, figures))
  return report


def _report(setting: method.Setting, methods: Sequence[str], runs: Mapping[str, method.MethodRun],
            sets: Sequence[Tuple[str, str, str]], *, top: str, seed: int, composition, zero_shot_tasks,
            zero_shot_limit, zero_shot_data_dir, zero_shot_files, zero_shot_max_length, scale, scope="",
            scored_documents=0, seeds=1) -> dict:
  """One seed's comparison stages (held-out curves, stream keys, zero-shot) and its report under `setting.root`, from
  every method's run; `sets`: the held-out sets (`eval_sets_of`), the primary first; `top`: the comparison's root
  (shared stages are named relative to it)."""
  root, target = setting.root, setting.target
  N, B, L = target.num_steps, target.batch_size, target.sequence_length
  eval_max_batches = setting.eval_max_batches
  model_dirs = {m: r.model_dirs for m, r in runs.items()}
  aux = {m: r.aux for m, r in runs.items()}

  # --- the comparison's own stages: one held-out estimator per set for every curve; zero-shot ---
  curve_steps = sorted(set(range(target.checkpoint_every, N + 1, target.checkpoint_every)) | {N})
  heldout = {}  # {set name: evaluation.HeldOut}, each read once for every curve

  def do_curve(m, name, eval_kw):
    if name not in heldout:
      held = common.heldout_batches(**eval_kw)
      heldout[name] = held._replace(batches=list(held.batches))
    points = []
    for step in curve_steps:
      model_dir = [md for first, md in model_dirs[m] if first <= step][-1]
      r = common.heldout_at_step(model_dir, step, heldout=heldout[name], **eval_kw)
      points.append({k: r[k] for k in ("step", "loss", "accuracy", "num_tokens", "eval_sample")})
    return points

  def curve_stage(m, i):
    """m's curve on the i-th held-out set: stage curve_<m> for the primary, curve_<m>@<name> for the others."""
    name, task, split = sets[i]
    eval_kw = dict(task=task, split=split, sequence_length=L, batch_size=B, max_batches=eval_max_batches)
    return run_stage(root, f"curve_{m}" if i == 0 else f"curve_{m}@{name}",
                     lambda d: do_curve(m, name, eval_kw),
                     {"model_dirs": [(f, _rel(md, root)) for f, md in model_dirs[m]], "steps": curve_steps,
                      "eval": f"{task}:{split}:{eval_max_batches}", **common.heldout_sample_inputs(eval_max_batches)})
  set_curves = {m: [curve_stage(m, i) for i in range(len(sets))] for m in methods}
  curves = {m: _with_further_sets(c[0], {name: ci for (name, _, _), ci in zip(sets[1:], c[1:])})
            for m, c in set_curves.items()}

  labellers = composition.labellers() if composition is not None else {}
  stream = None
  if labellers:
    stream_keys_path = run_stage(  # the same for every seed
        setting.shared_root, "stream_keys", lambda d: common.write_json(os.path.join(d, "keys.json"),
                                                         common.pool_keys(setting.train_task, "train", L)),
        {"task": setting.train_task, "split": "train", "L": L})
    stream = composition_lib.composition(_read_keys(stream_keys_path), labellers)

  entropy = {name: run_stage(setting.shared_root, f"unigram_entropy@{name}",
                             lambda d, task=task, split=split: {"entropy": data_pipeline.token_unigram_entropy(
                                 task, split, sequence_length=L)},
                             {"set": f"{task}:{split}", "L": L})["entropy"] for name, task, split in sets}

  zero_shot, zero_shot_note = _zero_shot(root, methods, model_dirs, setting.train_task, zero_shot_tasks,
                                         zero_shot_limit, zero_shot_data_dir, zero_shot_max_length, zero_shot_files)

  # --- the report ---
  target_cfg = ModelDir(model_dirs[methods[0]][-1][1]).read_model_config()
  target_step_flops = train_flops_per_token(target_cfg, L) * B * L
  pool_keys_path = next((runs[m].pool for m in methods if runs[m].pool), None)
  text_of = _example_text(composition, setting.pool_task, L)
  plain_curve = [(p["step"], p["loss"]) for p in curves.get("plain", [])]
  plain_flops_curve = [(s * target_step_flops, l) for s, l in plain_curve]
  own, shared = stage_users({m: runs[m].stages for m in methods}, root)
  shared = {_rel(p, top): {"seconds": stage_seconds(p), "methods": users} for p, users in sorted(shared.items())
            if stage_seconds(p) is not None}  # the stages that ran (no teacher stage for a given teacher_dir)
  rows = {}
  for m in methods:
    c = curves[m]
    fc = flops_curve(c, target_step_flops, aux[m])
    aux_total = sum(aux[m].breakdown().values())
    row = {"pipeline": runs[m].pipeline, "model_dir": _rel(model_dirs[m][-1][1], root),
           "final": {k: v for k, v in c[-1].items() if k in ("step", "loss", "accuracy") or "@" in k},
           "curve": [dict(p, target_flops=p["step"] * target_step_flops, total_flops=f)
                     for p, (f, _) in zip(c, fc)],
           "flops": {"target_training": N * target_step_flops, "auxiliary": aux[m].breakdown(),
                     "auxiliary_total": aux_total, "total": N * target_step_flops + aux_total},
           "wall_seconds": _seconds(own[m]),
           "eval_seconds": _seconds([os.path.join(root, f"curve_{m}" + (f"@{name}" if i else ""))
                                     for i, (name, _, _) in enumerate(sets)] + [os.path.join(root, f"zero_shot_{m}")]),
           "shared_stages": [p for p, s in shared.items() if m in s["methods"]],
           "zero_shot": zero_shot.get(m)}
    if plain_curve:
      plain_final = plain_curve[-1][1]
      reach = tables.steps_to_reach([(p["step"], p["loss"]) for p in c], plain_final)
      row.update(plain_final_loss=plain_final, steps_to_plain_final=reach,
                 flops_to_plain_final=None if reach is None else reach * target_step_flops + aux[m].at(reach),
                 speedup_steps=tables.speedup([(p["step"], p["loss"]) for p in c], plain_curve),
                 speedup_flops=tables.speedup(fc, plain_flops_curve))
    if labellers and runs[m].selections:
      row["selection"] = composition_lib.composition([k for p in runs[m].selections for k in _read_keys(p)], labellers)
    if labellers and runs[m].token_selection:
      counts = json.load(open(runs[m].token_selection))
      row["token_selection"] = dict(steps=counts["steps"], **{
          k: composition_lib.composition_of_token_counts(counts[k], labellers) for k in ("kept", "all")})
    if scored_documents and runs[m].scores:
      row["scored_documents"] = _scored_documents(runs[m].scores, scored_documents, labellers, text_of)
    rows[m] = row
  pool = None
  if labellers and pool_keys_path:
    pool = composition_lib.composition(_read_keys(pool_keys_path), labellers)
  report = {
      "scale": scale, "scope": scope, "methods": rows, "pool_composition": pool, "stream_composition": stream,
      "zero_shot_note": zero_shot_note, "shared_stages": shared,
      "config": {"seed": seed, "seeds": seeds, "target_seed": target.seed, "train_task": setting.train_task,
                 "pool": f"{setting.pool_task}:{setting.pool_split}", "reference_task": setting.reference_task,
                 "eval": f"{sets[0][1]}:{sets[0][2]}", "eval_max_batches": eval_max_batches,
                 # every held-out set, the primary first: its name, "task:split", estimator and tokens
                 "eval_sets": [{"name": name, "eval": f"{task}:{split}", "eval_sample": c[-1].get("eval_sample"),
                                "eval_tokens": c[-1]["num_tokens"], "unigram_entropy": entropy[name]}
                               for (name, task, split), c in zip(sets, set_curves[methods[0]])],
                 # a curve recorded before curves named their estimator was measured on the whole split
                 "eval_sample": curves[methods[0]][-1].get("eval_sample", "whole split"),
                 "eval_tokens": curves[methods[0]][-1]["num_tokens"], "target_steps": N, "batch_size": B,
                 "sequence_length": L, "target_params": count_params(target_cfg), "methods": list(methods),
                 "target_step_flops": target_step_flops, "curve_steps": curve_steps}}
  common.write_json(os.path.join(root, "report.json"), report)
  figures = _figures(root, {m: r["curve"] for m, r in rows.items()}, rows["plain"]["final"]["loss"] if "plain" in rows
                     else None, {m: r["selection"]["by_domain"] for m, r in rows.items() if r.get("selection")}, pool)
  _tensorboard(root, curves)
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write(format_report(report, figures))
  return report


def _example_text(composition: Optional[composition_lib.SelectionReporter], task: str, sequence_length: int):
  """key -> the text of that example of `task` (an LM task at `sequence_length`), where the corpus gives its
  documents' texts (`SelectionReporter.document_text`); else None."""
  if composition is None or composition.document_text is None:
    return None
  import seqio  # pylint: disable=g-import-not-at-top
  vocab = seqio.get_mixture_or_task(task).output_features["targets"].vocabulary

  def text_of(key):
    doc, _, chunk = key.rpartition("#")
    text = composition.document_text(doc)
    return None if text is None else seqio_tasks.chunk_text(text, int(chunk), vocab, sequence_length)
  return text_of


def _scored_documents(scores: method.Scores, k: int, labellers, text_of) -> dict:
  """The k highest- and lowest-scored candidates of a method's scores (`report.scored_documents`)."""
  table = score_store.read_scores(scores.store)
  keys, values = table.keys(), table.columns[scores.column]
  if scores.candidates:
    candidates = set(_read_keys(scores.candidates))
    rows = [i for i, key in enumerate(keys) if key in candidates]
    keys, values = [keys[i] for i in rows], values[rows]
  return dict(what=scores.what, column=scores.column, n=len(keys),
              **scored_documents_lib.scored_documents(keys, values, k, labellers=labellers, text_of=text_of))


def _zero_shot(root, methods, model_dirs, train_task, tasks, limit, data_dir, max_length, files):
  """{method: {task: {metric: value}}} of the harness on each final target, and a note when skipped."""
  if not tasks:
    return {}, None
  from bliss_jax.eval import generation, harness, loglikelihood, registry  # pylint: disable=g-import-not-at-top
  if data_dir is None:
    data_dir = os.path.join(data_dir_lib.default_data_dir(), "eval")
  missing = [p for p in harness.required_paths(tasks, data_dir, files) if not os.path.isfile(p)]
  if missing:
    return {}, f"zero-shot skipped: benchmark file(s) not found: {', '.join(missing)}"

  def do(d, m):
    import seqio  # pylint: disable=g-import-not-at-top
    from bliss_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
    model_dir = model_dirs[m][-1][1]
    step, params = checkpoints.load_params(model_dir)
    vocab = seqio.get_mixture_or_task(train_task).output_features["targets"].vocabulary
    model = Transformer(ModelDir(model_dir).read_model_config())
    score_fn = loglikelihood.make_score_fn(model, params, vocab, batch_size=32, max_length=max_length, progress=False)
    generate_fn = (generation.make_generate_fn(model, params, vocab, batch_size=32, max_length=max_length,
                                               progress=False)
                   if any(registry.task_spec(t).output_type == "generate_until" for t in tasks) else None)
    out = harness.run_eval(score_fn, tasks, data_dir, limit, files=files, generate_fn=generate_fn)
    common.write_json(os.path.join(d, "results.json"), out)
    return {t: harness.metric_values(r) for t, r in out["results"].items()}
  results = {m: run_stage(root, f"zero_shot_{m}", lambda d, m=m: do(d, m),
                          {"model_dir": _rel(model_dirs[m][-1][1], root), "tasks": list(tasks), "limit": limit,
                           "max_length": max_length, "start_id": loglikelihood.START_ID,
                           **({"files": {t: registry.task_paths(t, data_dir, files) for t in tasks}} if files else {})})
             for m in methods}
  return results, None


def _figures(root: str, curves: Mapping[str, Sequence[Mapping]], reference: Optional[float],
             compositions: Mapping[str, Mapping[str, float]], pool: Optional[dict],
             band: Optional[str] = None) -> Dict[str, str]:
  """loss_vs_flops.png, loss_vs_total_flops.png (curves: {method: [{"target_flops", "total_flops", "loss"}, with
  "low" and "high" drawn as a band labelled `band` when given]}, `reference`: plain's final loss) and composition.png
  (what each selecting method kept, by domain, next to the pool); returns {name: file}."""
  from bliss_jax.report import plots  # pylint: disable=g-import-not-at-top
  figures = {}
  ref = ("plain's final loss", reference) if reference is not None else None
  for name, x, title in (
      ("loss_vs_flops", "target_flops", "held-out loss vs target-training FLOPs"),
      ("loss_vs_total_flops", "total_flops", "held-out loss vs total FLOPs (with auxiliary models)")):
    figures[name] = f"{name}.png"
    bands = {m: [(p[x], p["low"], p["high"]) for p in c] for m, c in curves.items() if band} or None
    plots.loss_vs_flops({m: [(p[x], p["loss"]) for p in c] for m, c in curves.items()},
                        os.path.join(root, figures[name]), reference=ref, title=title, bands=bands, band_label=band)
  if compositions:
    comps = {"pool": pool["by_domain"], **compositions} if pool else dict(compositions)
    figures["composition"] = "composition.png"
    plots.composition_bars(comps, os.path.join(root, figures["composition"]),
                           title="selected examples by domain", ylabel="fraction of selected examples")
  return figures


def _tensorboard(root: str, curves: Mapping[str, Sequence[Mapping]]) -> None:
  """Each method's held-out curves as scalars under ROOT/tensorboard/<method> (`heldout/` the primary set,
  `heldout@<s>/` the others; rewritten, so reruns do not append)."""
  import shutil  # pylint: disable=g-import-not-at-top
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  tb = os.path.join(root, "tensorboard")
  shutil.rmtree(tb, ignore_errors=True)
  for m, points in curves.items():
    w = metric_writers.SummaryWriter(os.path.join(tb, m))
    for p in points:
      scalars = {}
      for k, v in p.items():
        metric, at, name = k.partition("@")  # "loss" -> heldout/loss, "loss@s" -> heldout@s/loss
        if metric in ("loss", "accuracy"):
          scalars[f"heldout{at}{name}/{metric}"] = v
      w.write_scalars(p["step"], scalars)
    w.close()


def format_report(report: Mapping, figures: Mapping[str, str]) -> str:
  """report.md: what the run shows (`scope`), the table of every method (a loss column per held-out set), the
  compositions of the stream, the candidate pool and the selections, the scoring methods' highest- and lowest-scored
  candidates, zero-shot results, the figures."""
  cfg = report["config"]
  order = cfg.get("methods") or sorted(report["methods"], key=lambda m: m != "plain")  # report.json's keys are sorted
  rows = {m: report["methods"][m] for m in order}
  further = [s["name"] for s in (cfg.get("eval_sets") or [])[1:]]
  heldout = across_seeds.heldout_sets_text(cfg)
  seed = f", seed {cfg['seed']} (target seed {cfg['target_seed']})" if "seed" in cfg else ""
  lines = [f"# Comparison{' (' + report['scale'] + ')' if report['scale'] else ''}{seed}", ""]
  lines += across_seeds.scope_lines(report.get("scope"), cfg["target_steps"], cfg.get("seeds", 1))
  lines += [
           f"Target: {cfg['target_params']:,} parameters, {cfg['target_steps']} steps of {cfg['batch_size']} × "
           f"{cfg['sequence_length']} tokens for every method ({cfg['target_step_flops'] * cfg['target_steps']:.3g} "
           f"target-training FLOPs each). Stream `{cfg['train_task']}`, candidates `{cfg['pool']}`, reference "
           f"`{cfg['reference_task']}`; held-out {heldout}.", ""]
  table = []
  for m, r in rows.items():
    sel = r.get("selection") or {}
    table.append({"method": m, "loss": r["final"]["loss"], "acc": r["final"]["accuracy"],
                  "delta": r["final"]["loss"] - rows["plain"]["final"]["loss"] if "plain" in rows else None,
                  "reach": r.get("steps_to_plain_final"), "speedup": r.get("speedup_steps"),
                  "speedup_flops": r.get("speedup_flops"), "aux": r["flops"]["auxiliary_total"],
                  "aux_ratio": r["flops"]["auxiliary_total"] / r["flops"]["target_training"],
                  "target_share": sel.get("target_fraction"), "minutes": r["wall_seconds"] / 60})
    for name in further:
      table[-1][f"loss@{name}"] = r["final"][f"loss@{name}"]
      table[-1][f"delta@{name}"] = (r["final"][f"loss@{name}"] - rows["plain"]["final"][f"loss@{name}"]
                                    if "plain" in rows else None)
  primary = f" ({cfg['eval_sets'][0]['name']})" if further else ""
  columns = [("method", "method", str), ("loss", f"held-out loss{primary}", tables.fmt(".4f")),
             ("acc", f"next-token acc{primary}", tables.fmt(".4f")), ("delta", f"vs plain{primary}",
                                                                       tables.fmt("+.4f"))]
  for name in further:
    columns += [(f"loss@{name}", f"loss ({name})", tables.fmt(".4f")),
                (f"delta@{name}", f"vs plain ({name})", tables.fmt("+.4f"))]
  columns += [("reach", "steps to plain's final loss", tables.fmt("g")),
             ("speedup", "speedup (steps)", tables.fmt(".2f")),
             ("speedup_flops", "speedup (FLOPs incl. aux)", tables.fmt(".2f")),
             ("aux", "auxiliary FLOPs", tables.fmt(".3g")), ("aux_ratio", "aux / target", tables.fmt(".2f"))]
  if any(t["target_share"] is not None for t in table):
    columns.append(("target_share", "target-like share selected", tables.fmt(".3f")))
  columns.append(("minutes", "wall min", tables.fmt(".1f")))
  lines += [tables.markdown_table(table, columns), "",
            "Held-out loss and accuracy at the last step; \"vs plain\" in nats. Steps to plain's final loss "
            f"({'on the primary set; ' if further else ''}the same for the speedups): the first curve point at or "
            "below it (curve every "
            f"{cfg['curve_steps'][0]} steps); speedup (steps) = {cfg['target_steps']} / that step; speedup (FLOPs) = "
            "plain's FLOPs / the method's FLOPs to that point, auxiliary models included. Auxiliary FLOPs: everything "
            "but the target's own training (below). Wall minutes: the method's own stages (those no other method or "
            "seed uses), every attempt of a resumed stage counted; shared stages are listed below, once.", ""]
  if report.get("shared_stages"):
    lines += ["Shared stages (wall time counted once, in no method's minutes):", ""]
    lines += across_seeds.shared_stage_lines(report["shared_stages"]) + [""]
  aux_lines = [f"- {m}: " + ", ".join(f"{k} {v:.3g}" for k, v in r["flops"]["auxiliary"].items())
               for m, r in rows.items() if r["flops"]["auxiliary"]]
  if aux_lines:
    lines += ["Auxiliary FLOPs by item:", ""] + aux_lines + [""]
  lines += composition_text.composition_lines(rows, report.get("pool_composition"), report.get("stream_composition"))
  lines += scored_documents_lib.scored_documents_section(
      {m: r["scored_documents"] for m, r in rows.items() if r.get("scored_documents")})
  zs = {m: r["zero_shot"] for m, r in rows.items() if r.get("zero_shot")}
  if zs:
    tasks_metrics = [(t, k) for t, vals in next(iter(zs.values())).items() for k in vals
                     if not k.endswith("_stderr")]
    zrows = [dict({"method": m}, **{f"{t}/{k}": z[t][k] for t, k in tasks_metrics}) for m, z in zs.items()]
    lines += ["Zero-shot (the harness):", "",
              tables.markdown_table(zrows, [("method", "method", str)] +
                                    [(f"{t}/{k}", f"{t} {k}", tables.fmt(".4f")) for t, k in tasks_metrics]), ""]
  if report.get("zero_shot_note"):
    lines += [report["zero_shot_note"], ""]
  lines += [f"![{name}]({path})" for name, path in figures.items()]
  return "\n".join(lines) + "\n"
