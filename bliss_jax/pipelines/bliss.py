"""BLISS (bilevel influence scoring) rounds against random selection, at equal target-training steps.

Stages (each resumable, under `root/`; R = `rounds`, S = target steps per round = target.num_steps / (R + 1)):
  pool_keys         every example key of `pool_task:pool_split` (chunks of the target's sequence length)
  pools             R + 1 disjoint candidate pools: a seeded permutation of the keys cut into equal parts (a fresh
                    pool each round, as the paper's fresh C4 shards)
  warmup_select     r = 0: a uniform `select_fraction` (20%) of pool 0
  target_r0         the target's first S steps on that selection (one LR schedule over all (R + 1)·S steps)
  proxy_warmup      the proxy LM trained on the same selection (`proxy` TrainSpec, its own schedule)
  for each method m and round r = 1..R:
    m_r<r>_bilevel  (BLISS methods) T = `bilevel_steps` bilevel steps (`training.bilevel_loop`): the proxy re-loaded
                    from proxy_warmup (`reset_proxy`, as the reference code; otherwise the previous round's proxy),
                    the score model from the warmed-up proxy (r = 1) or round r−1's, the target's step-r·S checkpoint
                    in the KL, candidates from pool r, F on `reference_task:reference_split`
    m_r<r>_score    the score model over all of pool r (`selection.offline_scoring`)
    m_r<r>_select   top `select_fraction` by score (deterministic; `random`: a seeded uniform sample instead), with
                    the selection report (domain / quality composition against pool r) when `selection_report`
    m_r<r>_target   the target continued for S steps on the selection (from round 0's checkpoint for r = 1),
                    evaluated every `target.eval_every` steps and at the round's end on `eval_task:eval_split`;
                    checkpointed every gcd(S, `target.checkpoint_every`) steps, all kept
Methods: "random", "bliss", and each name in `variants` ({name: BilevelConfig overrides}, e.g. the ablations
{"bliss_no_kl": {"gamma": 0.0}, "bliss_no_softmax": {"weighting": "normalized"}, "bliss_no_sigmoid":
{"sigmoid": False}}). `report.json` holds per method and round the held-out loss/accuracy, the selection's
composition, the steps at which the random baseline's final loss is reached, and the FLOP breakdown of the paper's
rebuttal Table 1 (target training / warm-up / bilevel / scoring).
"""
import dataclasses
import json
import math
import os
import shutil
from typing import Dict, Optional, Sequence

import numpy as np

from bliss_jax.bilevel.step import BilevelConfig, step_flops
from bliss_jax.data import pipeline as data_pipeline
from bliss_jax.data.keyed import example_keys
from bliss_jax.models.config import count_params
from bliss_jax.models.flops import score_forward_flops_per_token, train_flops_per_token
from bliss_jax.models.score_model import score_batch
from bliss_jax.pipelines import common
from bliss_jax.pipelines.stages import run_stage
from bliss_jax.report import tables
from bliss_jax.report.tables import steps_to_reach
from bliss_jax.selection import offline_scoring, rules, score_store
from bliss_jax.selection.selected_task import register_selected_task
from bliss_jax.training import bilevel_loop, checkpoints, trainer


def split_pools(keys: Sequence[str], num_pools: int, seed: int):
  """`num_pools` disjoint pools of (almost) equal size from a seeded permutation of `keys` (each pool in key order)."""
  order = np.random.default_rng(seed).permutation(len(keys))
  return [[keys[i] for i in sorted(part)] for part in np.array_split(order, num_pools)]


def random_selection(keys: Sequence[str], fraction: float, seed: int):
  """A uniform sample of floor(fraction·n) keys without replacement (in key order)."""
  idx = rules.uniform_subset(len(keys), rules.fraction_to_count(len(keys), fraction), seed)
  return [keys[i] for i in idx]


def validation_curve(model_dir: str):
  """[(step, loss)] of the trainer's periodic held-out evaluations in MODEL_DIR/metrics.jsonl."""
  path = os.path.join(model_dir, "metrics.jsonl")
  rows = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
  return sorted({r["step"]: r["loss"] for r in rows if r.get("split") == "validation"}.items())


def _offset_source(train_source, eval_source, offset: int):
  """A BatchSource whose "train" split is `train_source` read from position (p − offset), and whose other splits are
  `eval_source`'s: the trainer counts positions over all rounds, each round's selection starts at its own 0."""
  def source(split, *, start_position=0, **kw):
    if split == "train":
      return train_source(split, start_position=start_position - offset, **kw)
    return eval_source(split, start_position=start_position, **kw)
  return source


def _copy_model_dir(src: str, dst: str, step: int) -> None:
  """Start MODEL_DIR `dst` from `src`'s checkpoint at `step` (model config and metrics up to it), atomically."""
  if os.path.exists(dst):
    return
  tmp = dst + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(os.path.join(src, "checkpoints", str(step)), os.path.join(tmp, "checkpoints", str(step)))
  for name in ("model_config.json", "run_config.json", "metrics.jsonl"):
    if os.path.exists(os.path.join(src, name)):
      shutil.copy(os.path.join(src, name), os.path.join(tmp, name))
  os.replace(tmp, dst)


def run(*, root: str, pool_task: str, target: common.TrainSpec, proxy: common.TrainSpec, reference_task: str,
        bilevel: BilevelConfig = BilevelConfig(), bilevel_steps: int = 100, bilevel_batch_size: int = 16,
        reference_split: str = "train", reference_feature_converter: str = "decoder",
        pool_max_examples: Optional[int] = None, eval_task: Optional[str] = None, eval_split: str = "validation",
        rounds: int = 2, select_fraction: float = 0.2, methods: Sequence[str] = ("random", "bliss"),
        variants: Optional[Dict[str, dict]] = None, pool_split: str = "pool", seed: int = 0,
        score_batch_size: int = 64, eval_batches: int = 8, eval_max_batches: Optional[int] = None,
        selection_report: bool = False, reset_proxy: bool = True, variant_rounds: Optional[int] = None,
        variant_train_target: bool = True, target_lr_halving: bool = False, progress_bar: bool = True) -> dict:
  """Run (or resume) BLISS and random selection over `rounds` rounds; returns the report (also `root/report.json`).

  Args:
    target: the target LM; `num_steps` is the whole run ((rounds + 1) × S), `eval_every` the held-out curve's period.
    proxy: the proxy LM's shape and warm-up (its `num_steps`); the score model shares its backbone.
    bilevel / bilevel_steps / bilevel_batch_size: the bilevel step (`BilevelConfig`), T, and the candidate batch.
    reference_task / reference_split: the upper level's data (F), read with `reference_feature_converter`
      ("prefix_lm" for a context/continuation task such as `lambada_reference`: F on the continuation only).
    pool_max_examples: only the first examples of the pool split are candidates (for corpora as large as C4).
    eval_task / eval_split: the held-out set (default: the pool task's validation split).
    methods: "random", "bliss" and names of `variants` (BilevelConfig overrides, run like "bliss").
    variant_rounds / variant_train_target: the variants (ablations) run only their first `variant_rounds` rounds
      and, with `variant_train_target=False`, only bilevel → score → select in them (the selection's composition is
      compared; no target steps). Round 1 of every method starts from the same round-0 target and warmed-up proxy.
    target_lr_halving: the target's schedule times 0.5^r in round r (the paper's per-round halving), every method.
  """
  variants = dict(variants or {})
  configs = {"bliss": bilevel, **{k: dataclasses.replace(bilevel, **v) for k, v in variants.items()}}
  unknown = [m for m in methods if m != "random" and m not in configs]
  if unknown:
    raise ValueError(f"unknown BLISS methods {unknown}: expected 'random', 'bliss' or a name in variants "
                     f"{sorted(variants)}")
  if rounds < 1:
    raise ValueError(f"rounds={rounds} must be >= 1")
  if target.num_steps % (rounds + 1):
    raise ValueError(f"target.num_steps={target.num_steps} must divide into rounds + 1 = {rounds + 1} rounds")
  S, L, B = target.num_steps // (rounds + 1), target.sequence_length, target.batch_size
  if target_lr_halving:
    target = target.replace(optimizer=dataclasses.replace(target.optimizer, halve_every=S))
  if proxy.sequence_length != L:
    raise ValueError(f"proxy.sequence_length={proxy.sequence_length} != target's {L}: they score the same chunks")
  eval_task = eval_task or pool_task
  prefix = os.path.basename(root.rstrip("/"))
  vocab = data_pipeline.vocabulary_size(pool_task)
  eval_source = data_pipeline.seqio_batch_source(eval_task, batch_size=B, sequence_length=L, seed=target.seed)
  eval_kw = dict(task=eval_task, split=eval_split, sequence_length=L, batch_size=B, max_batches=eval_max_batches)

  keys_path = run_stage(root, "pool_keys", lambda d: common.write_json(os.path.join(d, "keys.json"),
                                                                       example_keys(pool_task, pool_split, L,
                                                                                    pool_max_examples)),
                        {"task": pool_task, "split": pool_split, "L": L, "max_examples": pool_max_examples})

  def do_pools(d):
    pools = split_pools(json.load(open(keys_path)), rounds + 1, seed)
    return [common.write_json(os.path.join(d, f"pool_{r}.json"), p) for r, p in enumerate(pools)]
  pool_paths = run_stage(root, "pools", do_pools, {"rounds": rounds, "seed": seed, "keys": keys_path})
  pool_sizes = [len(json.load(open(p))) for p in pool_paths]

  registered = set()

  def register(name, keys_path):
    """Register the selected task `name` (the keys in `keys_path`) on first use only: building it reads the pool
    split, so a rerun whose stages are done registers nothing."""
    if name not in registered:
      register_selected_task(name, pool_task, json.load(open(keys_path)), sequence_length=L, split=pool_split)
      registered.add(name)
    return name

  def composition(d, keys, r):
    """The selection against round r's pool, per example (`chunk_composition`: target-like clean English share of
    the kept chunks), and the per-document report (`selection_report.md`)."""
    if not selection_report:
      return {}
    from bliss_jax.data import benchmark_mixture  # pylint: disable=g-import-not-at-top
    catalog = benchmark_mixture.build_catalog()
    sel = benchmark_mixture.chunk_composition(keys, catalog)
    pool = benchmark_mixture.chunk_composition(json.load(open(pool_paths[r])), catalog)
    report = benchmark_mixture.selection_report(keys, catalog, base_split=pool_split)
    with open(os.path.join(d, "selection_report.md"), "w") as f:
      f.write(benchmark_mixture.format_selection_report(report) + "\n")
    common.write_json(os.path.join(d, "chunk_composition.json"), {"selected": sel, "pool": pool})
    return {"report": common.write_json(os.path.join(d, "selection_report.json"), report),
            "target_fraction": sel["target"], "pool_target_fraction": pool["target"],
            "target_lift": sel["target"] / pool["target"] if pool["target"] else None,
            "quality_fractions": sel["by_quality"], "pool_quality_fractions": pool["by_quality"]}

  # --- round 0: random warm-up selection; the target's first S steps; the proxy's warm-up ---
  def do_warmup_select(d):
    keys = random_selection(json.load(open(pool_paths[0])), select_fraction, seed)
    return dict(selected=common.write_json(os.path.join(d, "selected_keys.json"), keys), n_selected=len(keys),
                **composition(d, keys, 0))
  warm_sel = run_stage(root, "warmup_select", do_warmup_select, {"fraction": select_fraction, "seed": seed})
  warm_task = lambda: register(f"{prefix}_bliss_sel_0", warm_sel["selected"])

  def train_target_round(model_dir, task, r):
    train_src = data_pipeline.seqio_batch_source(task, batch_size=B, sequence_length=L, seed=target.seed + r)
    trainer.train(model_dir=model_dir, model_config=target.model_config,
                  batch_source=_offset_source(train_src, eval_source, r * S), vocab_size=vocab,
                  num_steps=target.num_steps, batch_size=B, sequence_length=L, optimizer=target.optimizer,
                  seed=target.seed, eval_every=target.eval_every, eval_batches=eval_batches,
                  checkpoint_every=math.gcd(S, target.checkpoint_every), keep_checkpoints=None, log_every=target.log_every, progress_bar=progress_bar,
                  stop_at_step=(r + 1) * S, allow_config_change=("data",))  # each round reads its own selection
    return dict(common.heldout_at_step(model_dir, (r + 1) * S, **eval_kw), model_dir=model_dir)

  spec_inputs = {"target": dataclasses.asdict(target), "rounds": rounds, "eval": f"{eval_task}:{eval_split}"}
  r0 = run_stage(root, "target_r0", lambda d: train_target_round(os.path.join(d, "model"), warm_task(), 0),
                 dict(spec_inputs, selection=warm_sel["selected"]))
  proxy_res = run_stage(root, "proxy_warmup", lambda d: common.train_on_task(os.path.join(d, "model"), proxy,
                                                                             warm_task(), progress_bar=progress_bar),
                        {"proxy": dataclasses.asdict(proxy), "selection": warm_sel["selected"]})
  proxy_dir = proxy_res["model_dir"]
  target_cfg = checkpoints.read_model_config(r0["model_dir"])
  proxy_cfg = checkpoints.read_model_config(proxy_dir)
  target_step_flops = train_flops_per_token(target_cfg, L) * B * L
  ref_source = data_pipeline.seqio_batch_source(reference_task, batch_size=bilevel_batch_size, sequence_length=L,
                                                seed=seed, pack=False, feature_converter=reference_feature_converter)
  ref_split_source = lambda split, **kw: ref_source(reference_split, **kw)  # run_bilevel reads "train"

  # --- rounds 1..R per method ---
  results: Dict[str, dict] = {}
  for m in methods:
    cfg = configs.get(m)
    target_dir = os.path.join(root, f"{m}_target")
    prev_bilevel, per_round = None, []
    is_variant = m not in ("random", "bliss")
    train_target = variant_train_target or not is_variant
    for r in range(1, (variant_rounds or rounds) + 1 if is_variant else rounds + 1):
      pool_keys = json.load(open(pool_paths[r]))
      pool_name = lambda r=r: register(f"{prefix}_pool_{r}", pool_paths[r])
      stage_target = r0["model_dir"] if r == 1 else target_dir
      bilevel_res = scored = None
      if cfg is not None:
        def do_bilevel(d, cfg=cfg, r=r, prev=prev_bilevel, stage_target=stage_target, pool_name=pool_name):
          cand = data_pipeline.seqio_batch_source(pool_name(), batch_size=bilevel_batch_size, sequence_length=L,
                                                  seed=seed + r, pack=False)
          proxy_init = proxy_dir if (reset_proxy or prev is None) else prev
          last = bilevel_loop.run_bilevel(
              model_dir=os.path.join(d, "model"), proxy_dir=proxy_dir,
              proxy_state_dir=None if proxy_init == proxy_dir else proxy_init, target_dir=stage_target,
              target_step=r * S, train_source=cand,
              val_source=ref_split_source, cfg=cfg, num_steps=bilevel_steps, score_init_dir=prev,
              checkpoint_every=max(1, bilevel_steps // 4), progress_bar=progress_bar)
          flops = step_flops(proxy_cfg, target_cfg if cfg.gamma else None, cfg, bilevel_batch_size, L)
          return {"model_dir": os.path.join(d, "model"), "last_metrics": last, "flops": flops * bilevel_steps}
        bilevel_res = run_stage(root, f"{m}_r{r}_bilevel", do_bilevel,
                                {"config": dataclasses.asdict(cfg), "steps": bilevel_steps, "pool": pool_paths[r],
                                 "B": bilevel_batch_size,
                                 "reference": f"{reference_task}:{reference_split}:{reference_feature_converter}",
                                 "score_init": prev_bilevel, "reset_proxy": reset_proxy})
        prev_bilevel = bilevel_res["model_dir"]

        def do_score(d, model_dir=bilevel_res["model_dir"], pool_name=pool_name):
          model, params = bilevel_loop.load_score_model(model_dir)
          table = offline_scoring.score_split(lambda p, b: {"bliss": score_batch(model, p, b)}, params,
                                              task=pool_name(), split="train", store_dir=os.path.join(d, "store"),
                                              sequence_length=L, batch_size=score_batch_size,
                                              progress=progress_bar)
          tokens = int(table.num_tokens.sum())
          return {"store": os.path.join(d, "store"), "scored_examples": len(table), "scored_tokens": tokens,
                  "flops": score_forward_flops_per_token(proxy_cfg, L) * tokens}
        scored = run_stage(root, f"{m}_r{r}_score", do_score, {"score_model": bilevel_res["model_dir"]})

      def do_select(d, r=r, pool_keys=pool_keys, scored=scored):
        if scored is None:
          keys, stats = random_selection(pool_keys, select_fraction, seed + 1000 * r), {}
        else:
          table = score_store.read_scores(scored["store"])
          s = table.columns["bliss"]
          chosen = rules.top_fraction(s, select_fraction)
          keys = score_store.select_keys(table, chosen, "original")
          stats = {"score_mean_selected": float(s[chosen].mean()), "score_mean_pool": float(s.mean()),
                   "score_std_pool": float(s.std()), "score_threshold": float(s[chosen].min())}
        return dict(selected=common.write_json(os.path.join(d, "selected_keys.json"), keys), n_selected=len(keys),
                    n_pool=len(pool_keys), **stats, **composition(d, keys, r))
      selection = run_stage(root, f"{m}_r{r}_select", do_select,
                            {"fraction": select_fraction, "scores": scored and scored["store"],
                             "pool": pool_paths[r], "seed": seed})
      if not train_target:
        per_round.append({"round": r, "step": None, "loss": None, "accuracy": None, "selection": selection,
                          "bilevel": bilevel_res, "scoring": scored})
        continue
      def do_target(d, r=r, m=m, selected=selection["selected"]):
        _copy_model_dir(r0["model_dir"], target_dir, S)
        return train_target_round(target_dir, register(f"{prefix}_{m}_sel_{r}", selected), r)
      heldout = run_stage(root, f"{m}_r{r}_target", do_target, dict(spec_inputs, selection=selection["selected"]))
      per_round.append({"round": r, "step": (r + 1) * S, "loss": heldout["loss"], "accuracy": heldout["accuracy"],
                        "selection": selection, "bilevel": bilevel_res, "scoring": scored})
    curve = validation_curve(target_dir) if train_target else []
    results[m] = {
        "rounds": per_round, "curve": curve, "model_dir": target_dir,
        "flops": {"target_training": target_step_flops * target.num_steps if train_target else 0.0,
                  "bilevel": sum((x["bilevel"] or {}).get("flops", 0.0) for x in per_round),
                  "scoring": sum((x["scoring"] or {}).get("flops", 0.0) for x in per_round)}}

  # --- summary: per-round losses, steps to reach random's final loss, FLOP shares ---
  warm_flops = proxy_res["train_flops"]
  summary = {"round0": {"loss": r0["loss"], "accuracy": r0["accuracy"], "step": S}}
  # steps-to-reach compares the trainer's periodic held-out curves only (one estimator: `eval_batches` batches)
  random_curve = results["random"]["curve"] if "random" in results else []
  random_final = random_curve[-1][1] if random_curve else None
  for m, res in results.items():
    f = dict(res["flops"], warmup=warm_flops if m != "random" else 0.0)
    total = sum(f.values())
    row = {"final_loss": res["rounds"][-1]["loss"], "final_accuracy": res["rounds"][-1]["accuracy"],
           "loss_per_round": [x["loss"] for x in res["rounds"]],
           "target_fraction_per_round": [x["selection"].get("target_fraction") for x in res["rounds"]],
           "target_lift_per_round": [x["selection"].get("target_lift") for x in res["rounds"]],
           "flops": f, "flop_shares": {k: v / total for k, v in f.items()} if total else {}}
    if random_final is not None:
      reach = steps_to_reach(res["curve"], random_final)
      row["random_final_curve_loss"] = random_final
      row["steps_to_random_final"] = reach
      row["speedup_vs_random"] = (random_curve[-1][0] / reach) if reach else None
    summary[m] = row
  report = {"summary": summary, "methods": results, "round0": r0, "proxy": dict(proxy_res, num_params=count_params(
      proxy_cfg)), "warmup_selection": warm_sel, "pool_sizes": pool_sizes, "steps_per_round": S,
            "config": {"rounds": rounds, "select_fraction": select_fraction, "bilevel_steps": bilevel_steps,
                       "bilevel": {k: dataclasses.asdict(v) for k, v in configs.items() if k in methods},
                       "reference": f"{reference_task}:{reference_split}", "eval": f"{eval_task}:{eval_split}"}}
  common.write_json(os.path.join(root, "report.json"), report)
  rows = [dict(row, method=m, target_fraction=(row["target_fraction_per_round"] or [None])[-1],
               aux_share=1.0 - row["flop_shares"].get("target_training", 1.0) if row["flop_shares"] else None)
          for m, row in summary.items() if m != "round0"]
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write(f"BLISS rounds vs random selection ({rounds} rounds of {S} target steps after a shared round 0; held-out "
            f"{eval_task}:{eval_split})\n\n")
    f.write(tables.markdown_table(rows, [
        ("method", "method", str), ("final_loss", "held-out loss", tables.fmt(".4f")),
        ("final_accuracy", "next-token acc", tables.fmt(".4f")),
        ("target_fraction", "target-like share of the last selection", tables.fmt(".3f")),
        ("steps_to_random_final", "steps to random's final loss", tables.fmt("g")),
        ("speedup_vs_random", "speedup", tables.fmt(".2f")),
        ("aux_share", "auxiliary share of FLOPs", tables.fmt(".3f"))]) + "\n")
  return report
