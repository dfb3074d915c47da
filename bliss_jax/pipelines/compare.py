"""The comparison: every method on one corpus and one target shape, at equal target-training compute.

Each method's own pipeline runs under `root/<pipeline>/` (its stages resumable as always), given the same target
`TrainSpec` (shape, steps N, batch B, length L, optimizer, seed), so every target is trained for exactly N·B·L tokens
at the same FLOPs per token. What the small (and large) models cost is auxiliary and reported apart.

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

Stages of the comparison itself (under `root/`, resumable like the others):
  curve_<m>      held-out loss and next-token accuracy of m's target at every `target.checkpoint_every` steps on
                 `eval_task:eval_split` (the whole split, or `eval_max_batches` batches sampled uniformly over it with
                 a fixed seed; report.json's `config.eval_sample` says which): one estimator for every method
  zero_shot_<m>  the zero-shot harness (`eval.harness`) on m's final target, when `zero_shot_tasks` are given
Then, always rewritten from the stage results (so an interrupted and a clean run write the same report):
  report.json    per method: the curve (with target and total FLOPs at each point), final loss/accuracy, FLOPs
                 (target training, auxiliary by item), wall time of its stages, what it selected (composition by
                 domain), zero-shot results, and steps / FLOPs to reach plain's final held-out loss (speedups)
  report.md      the table, the zero-shot table, the figures
  loss_vs_flops.png, loss_vs_total_flops.png, composition.png
  tensorboard/<m>  the held-out curve of every method, so `tensorboard --logdir ROOT` overlays them next to every
                 stage's own training logs (which live under ROOT too)

FLOPs at a step t of a method's curve: t·(target step) + its per-step forwards up to t (teacher or reference) + the
one-off auxiliary costs incurred before step t (the small models' training at the start; BLISS's bilevel and scoring of
round r before round r's steps).
"""
import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from bliss_jax.data import composition as composition_lib
from bliss_jax.data import data_dir as data_dir_lib
from bliss_jax.data import seqio_tasks
from bliss_jax.models.config import count_params
from bliss_jax.models.flops import train_flops_per_token
from bliss_jax.pipelines import builtin, common, method
from bliss_jax.pipelines.stages import STAGE_FILE, run_stage
from bliss_jax.report import scored_documents as scored_documents_lib
from bliss_jax.report import tables
from bliss_jax.selection import score_store
from bliss_jax.training import checkpoints, trainer
from bliss_jax.training.model_dir import ModelDir


def flops_curve(curve: Sequence[Mapping], target_step_flops: float, aux: method.AuxCost) -> List[Tuple[float, float]]:
  """[(total FLOPs, loss)] of a curve of {"step", "loss"} points: target training plus auxiliary cost so far."""
  return [(p["step"] * target_step_flops + aux.at(p["step"]), p["loss"]) for p in curve]


def _rel(path: str, root: str) -> str:
  return os.path.relpath(os.path.abspath(path), os.path.abspath(root))


def _stage_seconds(stage_root: str, names: Sequence[str]) -> float:
  total = 0.0
  for n in names:
    p = os.path.join(stage_root, n, STAGE_FILE)
    if os.path.exists(p):
      total += json.load(open(p)).get("seconds", 0.0)
  return total


def _read_keys(path: Optional[str]) -> List[str]:
  return json.load(open(path)) if path else []


def run(*, root: str, target: trainer.TrainSpec, small: trainer.TrainSpec, train_task: str,
        large: Optional[trainer.TrainSpec] = None, pool_task: Optional[str] = None, pool_split: str = "train",
        pool_max_examples: Optional[int] = None,
        reference_task: Optional[str] = None, eval_task: Optional[str] = None, eval_split: str = "validation",
        eval_max_batches: Optional[int] = None, methods: Optional[Sequence[str]] = None,
        options: Optional[Mapping[str, Mapping]] = None,
        composition: Optional[composition_lib.SelectionReporter] = None,
        zero_shot_tasks: Sequence[str] = (), zero_shot_limit: Optional[float] = None,
        zero_shot_data_dir: Optional[str] = None, zero_shot_max_length: int = 2048, scale: str = "", scope: str = "",
        scored_documents: int = 3, pipelines: Sequence[method.Pipeline] = builtin.PIPELINES,
        progress_bar: bool = True) -> dict:
  """Run (or resume) every method in `methods` and write the comparison (`root/report.json`, `report.md`, figures).

  Args:
    target: the target model's TrainSpec, shared by every method (`checkpoint_every` is the curve's period; every
      checkpoint is kept). `num_steps` must split into BLISS's rounds + 1 when BLISS or random selection runs.
    small: the small model: RHO-1's reference LM, SALT's teacher and SALT_DS's scorer, MiniPLM's reference LM and
      BLISS's proxy (per-pipeline overrides in `options`, e.g. `{"salt": {"teacher": ...}}`).
    large: MiniPLM's (and Vanilla KD's) teacher, trained on `train_task`.
    train_task: the pretraining stream (its train split): plain, RHO-1, SALT, RKD and the teachers.
    pool_task / pool_split: the candidates of the selecting methods (random, BLISS, SALT_DS, MiniPLM; default:
      `train_task`'s train split, the stream itself; the benchmark mixture has a disjoint "pool" split).
      pool_max_examples: a seeded uniform sample of this many of the split's examples (`common.pool_keys`; for
      corpora as large as C4).
    reference_task: the high-quality reference set (its train split): RHO-1's reference LM and BLISS's upper level
      (default: `train_task`; a pipeline's options may name their own, e.g. BLISS's LAMBADA).
    eval_task / eval_split / eval_max_batches: the held-out set every curve is measured on (default: `train_task`'s
      validation split, whole; `eval_max_batches`: that many of its batches, sampled uniformly over it).
    methods: some of the registered pipelines' methods (`method.methods(options)`; default: all of them).
    options: {pipeline name: further arguments of its `run`} (ratio, n_kd, alpha, rounds, bilevel, scorers, ...).
    composition: how selected examples are labelled for the composition report (`data.composition`): its
      labellers (e.g. the benchmark catalog's: domain, quality and the target-like share; or the document id up to
      its first ":"); its per-document report, if any, also goes to the pipelines' selection stages. None:
      no composition. (gin: `compare.composition = 'benchmark'` or `'doc_prefix'`, `configurables.compare`.)
    zero_shot_tasks / zero_shot_limit / zero_shot_data_dir: harness tasks run on every final target (default data
      dir: the shared data's `eval/`; skipped with a note where it is absent). zero_shot_max_length: the longest
      scored row (contexts are left-truncated; as scripts/evaluate.py's --max_length).
    scale: a name for the report ("smoke", "small", ...).
    scope: one line for the top of the report: what this run does and does not show.
    scored_documents: how many of the highest- and of the lowest-scored candidates the report shows per scoring
      method (its `MethodRun.scores`; with their labels and texts where `composition` gives them); 0: none.
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
  setting = method.Setting(
      root=root, target=target, small=small, large=large, train_task=train_task, pool_task=pool_task or train_task,
      pool_split=pool_split, pool_max_examples=pool_max_examples, reference_task=reference_task or train_task,
      eval_task=eval_task or train_task, eval_split=eval_split, eval_max_batches=eval_max_batches,
      selection_report=composition if composition is not None and composition.document_report else None,
      progress_bar=progress_bar)
  runs: Dict[str, method.MethodRun] = {}
  for p in pipelines:
    wanted = [m for m in methods if provided[m] is p]
    if wanted:
      runs.update(p.run(setting, wanted, options.get(p.name) or {}))
  return _report(setting, methods, runs, composition=composition, zero_shot_tasks=zero_shot_tasks,
                 zero_shot_limit=zero_shot_limit, zero_shot_data_dir=zero_shot_data_dir,
                 zero_shot_max_length=zero_shot_max_length, scale=scale, scope=scope,
                 scored_documents=scored_documents)


def _report(setting: method.Setting, methods: Sequence[str], runs: Mapping[str, method.MethodRun], *,
            composition, zero_shot_tasks, zero_shot_limit, zero_shot_data_dir, zero_shot_max_length, scale,
            scope="", scored_documents=0) -> dict:
  """The comparison's own stages (held-out curves, zero-shot) and its report, from every method's run."""
  root, target = setting.root, setting.target
  N, B, L = target.num_steps, target.batch_size, target.sequence_length
  eval_task, eval_split, eval_max_batches = setting.eval_task, setting.eval_split, setting.eval_max_batches
  model_dirs = {m: r.model_dirs for m, r in runs.items()}
  aux = {m: r.aux for m, r in runs.items()}

  # --- the comparison's own stages: one held-out estimator for every curve; zero-shot ---
  curve_steps = sorted(set(range(target.checkpoint_every, N + 1, target.checkpoint_every)) | {N})
  eval_kw = dict(task=eval_task, split=eval_split, sequence_length=L, batch_size=B, max_batches=eval_max_batches)
  heldout = []  # [evaluation.HeldOut], read once for every curve

  def do_curve(d, m):
    if not heldout:
      held = common.heldout_batches(**eval_kw)
      heldout.append(held._replace(batches=list(held.batches)))
    points = []
    for step in curve_steps:
      model_dir = [md for first, md in model_dirs[m] if first <= step][-1]
      r = common.heldout_at_step(model_dir, step, heldout=heldout[0], **eval_kw)
      points.append({k: r[k] for k in ("step", "loss", "accuracy", "num_tokens", "eval_sample")})
    return points
  curves = {m: run_stage(root, f"curve_{m}", lambda d, m=m: do_curve(d, m),
                         {"model_dirs": [(f, _rel(md, root)) for f, md in model_dirs[m]], "steps": curve_steps,
                          "eval": f"{eval_task}:{eval_split}:{eval_max_batches}",
                          **common.heldout_sample_inputs(eval_max_batches)})
            for m in methods}

  zero_shot, zero_shot_note = _zero_shot(root, methods, model_dirs, setting.train_task, zero_shot_tasks,
                                         zero_shot_limit, zero_shot_data_dir, zero_shot_max_length)

  # --- the report ---
  target_cfg = ModelDir(model_dirs[methods[0]][-1][1]).read_model_config()
  target_step_flops = train_flops_per_token(target_cfg, L) * B * L
  labellers = composition.labellers() if composition is not None else {}
  pool_keys_path = next((runs[m].pool for m in methods if runs[m].pool), None)
  text_of = _example_text(composition, setting.pool_task, L)
  plain_curve = [(p["step"], p["loss"]) for p in curves.get("plain", [])]
  plain_flops_curve = [(s * target_step_flops, l) for s, l in plain_curve]
  rows = {}
  for m in methods:
    c = curves[m]
    fc = flops_curve(c, target_step_flops, aux[m])
    aux_total = sum(aux[m].breakdown().values())
    row = {"pipeline": runs[m].pipeline, "model_dir": _rel(model_dirs[m][-1][1], root),
           "final": {k: c[-1][k] for k in ("step", "loss", "accuracy")},
           "curve": [dict(p, target_flops=p["step"] * target_step_flops, total_flops=f)
                     for p, (f, _) in zip(c, fc)],
           "flops": {"target_training": N * target_step_flops, "auxiliary": aux[m].breakdown(),
                     "auxiliary_total": aux_total, "total": N * target_step_flops + aux_total},
           "wall_seconds": _stage_seconds(setting.subroot(runs[m].pipeline), runs[m].stages),
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
    if scored_documents and runs[m].scores:
      row["scored_documents"] = _scored_documents(runs[m].scores, scored_documents, labellers, text_of)
    rows[m] = row
  pool = None
  if labellers and pool_keys_path:
    pool = composition_lib.composition(_read_keys(pool_keys_path), labellers)
  report = {
      "scale": scale, "scope": scope, "methods": rows, "pool_composition": pool, "zero_shot_note": zero_shot_note,
      "config": {"train_task": setting.train_task, "pool": f"{setting.pool_task}:{setting.pool_split}",
                 "reference_task": setting.reference_task,
                 "eval": f"{eval_task}:{eval_split}", "eval_max_batches": eval_max_batches,
                 # a curve recorded before curves named their estimator was measured on the whole split
                 "eval_sample": curves[methods[0]][-1].get("eval_sample", "whole split"),
                 "eval_tokens": curves[methods[0]][-1]["num_tokens"], "target_steps": N, "batch_size": B,
                 "sequence_length": L, "target_params": count_params(target_cfg), "methods": list(methods),
                 "target_step_flops": target_step_flops, "curve_steps": curve_steps}}
  common.write_json(os.path.join(root, "report.json"), report)
  figures = _figures(root, rows, pool)
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


def _zero_shot(root, methods, model_dirs, train_task, tasks, limit, data_dir, max_length):
  """{method: {task: {metric: value}}} of the harness on each final target, and a note when skipped."""
  if not tasks:
    return {}, None
  from bliss_jax.eval import harness  # pylint: disable=g-import-not-at-top
  from bliss_jax.eval import loglikelihood  # pylint: disable=g-import-not-at-top
  if data_dir is None:
    data_dir = os.path.join(data_dir_lib.default_data_dir(), "eval")
  missing = [p for t in tasks for p in harness.task_paths(t, data_dir) if not os.path.isfile(p)]
  if missing:
    return {}, f"zero-shot skipped: benchmark file(s) not found: {', '.join(missing)}"

  def do(d, m):
    import seqio  # pylint: disable=g-import-not-at-top
    from bliss_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
    model_dir = model_dirs[m][-1][1]
    step, params = checkpoints.load_params(model_dir)
    vocab = seqio.get_mixture_or_task(train_task).output_features["targets"].vocabulary
    score_fn = loglikelihood.make_score_fn(Transformer(ModelDir(model_dir).read_model_config()), params, vocab,
                                           batch_size=32, max_length=max_length, progress=False)
    out = harness.run_eval(score_fn, tasks, data_dir, limit)
    common.write_json(os.path.join(d, "results.json"), out)
    return {t: {k.split(",")[0]: v for k, v in r.items() if k != "alias"} for t, r in out["results"].items()}
  results = {m: run_stage(root, f"zero_shot_{m}", lambda d, m=m: do(d, m),
                          {"model_dir": _rel(model_dirs[m][-1][1], root), "tasks": list(tasks), "limit": limit,
                           "max_length": max_length, "start_id": loglikelihood.START_ID})
             for m in methods}
  return results, None


def _figures(root: str, rows: Mapping[str, dict], pool: Optional[dict]) -> Dict[str, str]:
  from bliss_jax.report import plots  # pylint: disable=g-import-not-at-top
  figures = {}
  ref = ("plain's final loss", rows["plain"]["final"]["loss"]) if "plain" in rows else None
  figures["loss_vs_flops"] = "loss_vs_flops.png"
  plots.loss_vs_flops({m: [(p["target_flops"], p["loss"]) for p in r["curve"]] for m, r in rows.items()},
                      os.path.join(root, figures["loss_vs_flops"]), reference=ref,
                      title="held-out loss vs target-training FLOPs")
  figures["loss_vs_total_flops"] = "loss_vs_total_flops.png"
  plots.loss_vs_flops({m: [(p["total_flops"], p["loss"]) for p in r["curve"]] for m, r in rows.items()},
                      os.path.join(root, figures["loss_vs_total_flops"]), reference=ref,
                      title="held-out loss vs total FLOPs (with auxiliary models)")
  comps = {m: r["selection"]["by_domain"] for m, r in rows.items() if r.get("selection")}
  if comps:
    if pool:
      comps = {"pool": pool["by_domain"], **comps}
    figures["composition"] = "composition.png"
    plots.composition_bars(comps, os.path.join(root, figures["composition"]),
                           title="selected examples by domain", ylabel="fraction of selected examples")
  return figures


def _tensorboard(root: str, curves: Mapping[str, Sequence[Mapping]]) -> None:
  """Each method's held-out curve as scalars under ROOT/tensorboard/<method> (rewritten, so reruns do not append)."""
  import shutil  # pylint: disable=g-import-not-at-top
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  tb = os.path.join(root, "tensorboard")
  shutil.rmtree(tb, ignore_errors=True)
  for m, points in curves.items():
    w = metric_writers.SummaryWriter(os.path.join(tb, m))
    for p in points:
      w.write_scalars(p["step"], {"heldout/loss": p["loss"], "heldout/accuracy": p["accuracy"]})
    w.close()


def format_report(report: Mapping, figures: Mapping[str, str]) -> str:
  """report.md: the table of every method, zero-shot results, the figures."""
  cfg = report["config"]
  order = cfg.get("methods") or sorted(report["methods"], key=lambda m: m != "plain")  # report.json's keys are sorted
  rows = {m: report["methods"][m] for m in order}
  lines = [f"# Comparison{' (' + report['scale'] + ')' if report['scale'] else ''}", ""]
  if report.get("scope"):
    seeds = cfg.get("seeds", 1)
    lines += [f"**What this run shows** ({cfg['target_steps']} target steps per method, {seeds} seed"
              f"{'' if seeds == 1 else 's'}): {report['scope']}", ""]
  lines += [
           f"Target: {cfg['target_params']:,} parameters, {cfg['target_steps']} steps of {cfg['batch_size']} × "
           f"{cfg['sequence_length']} tokens for every method ({cfg['target_step_flops'] * cfg['target_steps']:.3g} "
           f"target-training FLOPs each). Stream `{cfg['train_task']}`, candidates `{cfg['pool']}`, reference "
           f"`{cfg['reference_task']}`; held-out `{cfg['eval']}` ({cfg.get('eval_sample', 'whole split')}, "
           f"{cfg['eval_tokens']:,.0f} tokens).", ""]
  table = []
  for m, r in rows.items():
    sel = r.get("selection") or {}
    table.append({"method": m, "loss": r["final"]["loss"], "acc": r["final"]["accuracy"],
                  "delta": r["final"]["loss"] - rows["plain"]["final"]["loss"] if "plain" in rows else None,
                  "reach": r.get("steps_to_plain_final"), "speedup": r.get("speedup_steps"),
                  "speedup_flops": r.get("speedup_flops"), "aux": r["flops"]["auxiliary_total"],
                  "aux_ratio": r["flops"]["auxiliary_total"] / r["flops"]["target_training"],
                  "target_share": sel.get("target_fraction"), "minutes": r["wall_seconds"] / 60})
  columns = [("method", "method", str), ("loss", "held-out loss", tables.fmt(".4f")),
             ("acc", "next-token acc", tables.fmt(".4f")), ("delta", "vs plain", tables.fmt("+.4f")),
             ("reach", "steps to plain's final loss", tables.fmt("g")),
             ("speedup", "speedup (steps)", tables.fmt(".2f")),
             ("speedup_flops", "speedup (FLOPs incl. aux)", tables.fmt(".2f")),
             ("aux", "auxiliary FLOPs", tables.fmt(".3g")), ("aux_ratio", "aux / target", tables.fmt(".2f"))]
  if any(t["target_share"] is not None for t in table):
    columns.append(("target_share", "target-like share selected", tables.fmt(".3f")))
  columns.append(("minutes", "wall min", tables.fmt(".1f")))
  lines += [tables.markdown_table(table, columns), "",
            "Held-out loss and accuracy at the last step; \"vs plain\" in nats. Steps to plain's final loss: the first "
            "curve point at or below it (curve every "
            f"{cfg['curve_steps'][0]} steps); speedup (steps) = {cfg['target_steps']} / that step; speedup (FLOPs) = "
            "plain's FLOPs / the method's FLOPs to that point, auxiliary models included. Auxiliary FLOPs: everything "
            "but the target's own training (below). Wall minutes: the method's stages as last run (a resumed stage "
            "counts its last attempt; shared stages, e.g. SALT's teacher, count for every method using them).", ""]
  aux_lines = [f"- {m}: " + ", ".join(f"{k} {v:.3g}" for k, v in r["flops"]["auxiliary"].items())
               for m, r in rows.items() if r["flops"]["auxiliary"]]
  if aux_lines:
    lines += ["Auxiliary FLOPs by item:", ""] + aux_lines + [""]
  pool = report.get("pool_composition")
  for kind in ("domain", "quality"):
    sel_lines = [f"- {m}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["selection"][f"by_{kind}"].items())
                 for m, r in rows.items() if r.get("selection") and f"by_{kind}" in r["selection"]]
    if sel_lines:
      lines += [f"What the selecting methods kept, by {kind} (fraction of selected examples; random and BLISS: "
                "rounds 1 onwards, round 0 being a shared random selection):", ""] + sel_lines
      if pool and f"by_{kind}" in pool:
        lines.append("- candidate pool: " + ", ".join(f"{k} {v:.3f}" for k, v in pool[f"by_{kind}"].items()))
      lines.append("")
  if report.get("pool_composition") and report["pool_composition"].get("target_fraction") is not None:
    lines += [f"Target-like share of the candidate pool: {report['pool_composition']['target_fraction']:.3f} (of "
              "examples; \"target-like share selected\" likewise).", ""]
  scored = {m: r["scored_documents"] for m, r in rows.items() if r.get("scored_documents")}
  if scored:
    lines += ["The candidates each scoring method scored highest and lowest (score, example key `doc_id#chunk`, "
              "labels, the example's start):", ""] + scored_documents_lib.format_scored_documents(scored) + [""]
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
