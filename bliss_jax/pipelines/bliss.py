"""BLISS (bilevel influence scoring) in the selection rounds (`pipelines.rounds`), against random selection.

Each round r, the BLISS scorer runs two stages before the rounds' select (top `select_fraction` by score):
  m_r<r>_bilevel  T = `bilevel_steps` bilevel steps (`bilevel.loop`): the proxy re-loaded from proxy_warmup
                  (`reset_proxy`, as the reference code; otherwise the previous round's proxy), the score model from
                  the warmed-up proxy (r = 1) or round r−1's, the target's step-r·S checkpoint in the KL, candidates
                  from pool r, F on `reference_task:reference_split`
  m_r<r>_score    the score model over all of pool r (`selection.offline_scoring`)
Methods: "random", "bliss", each name in `variants` ({name: BilevelConfig overrides}, e.g. the ablations
{"bliss_no_kl": {"gamma": 0.0}, "bliss_no_softmax": {"weighting": "normalized"}, "bliss_no_sigmoid":
{"sigmoid": False}}), and any other `RoundScorer` given in `scorers` (e.g. MATES). `report.json` holds per method and
round the held-out loss/accuracy, the selection's composition, the steps at which the random baseline's final loss is
reached, and the FLOP breakdown of the paper's rebuttal Table 1 (target training / warm-up / bilevel / scoring).
"""
import dataclasses
import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from bliss_jax.bilevel import loop as bilevel_loop
from bliss_jax.bilevel.step import BilevelConfig, step_flops
from bliss_jax.data.composition import SelectionReporter, composition
from bliss_jax.models.flops import score_forward_flops_per_token
from bliss_jax.models.score_model import score_batch
from bliss_jax.pipelines import common, method, rounds as rounds_lib
from bliss_jax.report import tables
from bliss_jax.selection import offline_scoring, rules
from bliss_jax.selection.selected_task import selected_store_source
from bliss_jax.training import trainer
from bliss_jax.training.model_dir import ModelDir


@dataclasses.dataclass(frozen=True)
class BlissScorer:
  """A round of BLISS: T bilevel steps train the score model, which then scores the whole pool (top fraction)."""
  bilevel: BilevelConfig = BilevelConfig()
  steps: int = 100
  batch_size: int = 16
  score_batch_size: int = 64
  reset_proxy: bool = True
  stage_keys = ("bilevel", "scoring")

  def score(self, ctx: rounds_lib.RoundContext) -> dict:
    L, prev = ctx.sequence_length, ctx.previous
    proxy_cfg = ModelDir(ctx.proxy_dir).read_model_config()

    def do_bilevel(d):
      chunks = ctx.pool_chunks()
      cand = selected_store_source(chunks.store_dir, ctx.pool_keys, batch_size=self.batch_size,
                                   seed=ctx.seed + ctx.round, pack=False, store=chunks)
      proxy_init = ctx.proxy_dir if (self.reset_proxy or prev is None) else prev
      last = bilevel_loop.run_bilevel(
          model_dir=os.path.join(d, "model"), proxy_dir=ctx.proxy_dir,
          proxy_state_dir=None if proxy_init == ctx.proxy_dir else proxy_init, target_dir=ctx.target_dir,
          target_step=ctx.target_step, train_source=cand, val_source=ctx.reference, cfg=self.bilevel,
          num_steps=self.steps, score_init_dir=prev, checkpoint_every=max(1, self.steps // 4),
          progress_bar=ctx.progress_bar)
      target_cfg = ModelDir(ctx.target_dir).read_model_config()
      flops = step_flops(proxy_cfg, target_cfg if self.bilevel.gamma else None, self.bilevel, self.batch_size, L)
      return {"model_dir": os.path.join(d, "model"), "last_metrics": last, "flops": flops * self.steps}
    bilevel = ctx.stage("bilevel", do_bilevel,
                        {"config": dataclasses.asdict(self.bilevel), "steps": self.steps, "pool": ctx.pool_path,
                         "B": self.batch_size, "reference": ctx.reference_name, "score_init": prev,
                         "reset_proxy": self.reset_proxy})

    def do_score(d):
      model, params = bilevel_loop.load_score_model(bilevel["model_dir"])
      table = offline_scoring.score_split(lambda p, b: {"bliss": score_batch(model, p, b)}, params,
                                          store_dir=os.path.join(d, "store"), batch_size=self.score_batch_size,
                                          model_dirs=(ctx.proxy_dir,), progress=ctx.progress_bar,
                                          **ctx.pool_scoring())
      tokens = int(table.num_tokens.sum())
      return {"store": os.path.join(d, "store"), "scored_examples": len(table), "scored_tokens": tokens,
              "flops": score_forward_flops_per_token(proxy_cfg, L) * tokens}
    scored = ctx.stage("score", do_score, {"score_model": bilevel["model_dir"]})
    return {"store": scored["store"], "column": "bliss", "state": bilevel["model_dir"],
            "aux_flops": {"bilevel": bilevel["flops"], "scoring": scored["flops"]},
            "stages": {"bilevel": bilevel, "scoring": scored}}

  def select(self, scores: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    del seed
    return rules.top_fraction(scores, fraction)


def _selection_report(reporter: Optional[SelectionReporter], pool_split: str):
  """The rounds' `selection_report`: the selection against its round's pool, per example (`data.composition` under
  the reporter's labellers: the target-like share of the kept chunks, by domain and quality), and its per-document
  report (`selection_report.md`)."""
  if reporter is None:
    return None

  def report(d, keys, pool_keys):
    labellers = reporter.labellers()

    def per_example(keys):
      c = composition(keys, labellers)
      return {"n": c["n"], "target": c["target_fraction"], "by_domain": c["by_domain"],
              "by_quality": c.get("by_quality")}  # None where the corpus has no quality labels
    sel, pool = per_example(keys), per_example(pool_keys)
    rep, markdown = reporter.document_report(keys, pool_split)
    with open(os.path.join(d, "selection_report.md"), "w") as f:
      f.write(markdown + "\n")
    common.write_json(os.path.join(d, "chunk_composition.json"), {"selected": sel, "pool": pool})
    return {"report": common.write_json(os.path.join(d, "selection_report.json"), rep),
            "target_fraction": sel["target"], "pool_target_fraction": pool["target"],
            "target_lift": sel["target"] / pool["target"] if pool["target"] else None,
            "quality_fractions": sel["by_quality"], "pool_quality_fractions": pool["by_quality"]}
  return report


def run(*, root: str, pool_task: str, target: trainer.TrainSpec, proxy: trainer.TrainSpec, reference_task: str,
        bilevel: BilevelConfig = BilevelConfig(), bilevel_steps: int = 100, bilevel_batch_size: int = 16,
        reference_split: str = "train", reference_feature_converter: str = "decoder",
        pool_max_examples: Optional[int] = None, eval_task: Optional[str] = None, eval_split: str = "validation",
        rounds: int = 2, select_fraction: float = 0.2, methods: Sequence[str] = ("random", "bliss"),
        variants: Optional[Dict[str, dict]] = None, scorers: Optional[Mapping[str, rounds_lib.RoundScorer]] = None,
        pool_split: str = "pool", seed: int = 0, score_batch_size: int = 64, eval_batches: int = 8,
        eval_max_batches: Optional[int] = None, selection_report: Optional[SelectionReporter] = None,
        reset_proxy: bool = True,
        variant_rounds: Optional[int] = None, variant_train_target: bool = True, target_lr_halving: bool = False,
        shared_root: Optional[str] = None, progress_bar: bool = True) -> dict:
  """Run (or resume) BLISS and random selection over `rounds` rounds; returns the report (also `root/report.json`).

  Args:
    target / proxy / rounds / select_fraction / pool_* / eval_* / target_lr_halving / shared_root: as `rounds.run`.
    bilevel / bilevel_steps / bilevel_batch_size: the bilevel step (`BilevelConfig`), T, and the candidate batch.
    reference_task / reference_split: the upper level's data (F), read with `reference_feature_converter`
      ("prefix_lm" for a context/continuation task such as `lambada_reference`: F on the continuation only).
    methods: "random", "bliss", names of `variants` (BilevelConfig overrides, run like "bliss") and of `scorers`.
    variant_rounds / variant_train_target: the variants (ablations) run only their first `variant_rounds` rounds
      and, with `variant_train_target=False`, only bilevel → score → select in them (no target steps).
    selection_report: each selection's composition against its pool and per-document report (`data.composition`),
      or None.
  """
  variants = dict(variants or {})
  configs = {"bliss": bilevel, **{k: dataclasses.replace(bilevel, **v) for k, v in variants.items()}}
  table = {k: BlissScorer(c, bilevel_steps, bilevel_batch_size, score_batch_size, reset_proxy)
           for k, c in configs.items()}
  table.update(scorers or {})
  report = rounds_lib.run(
      root=root, pool_task=pool_task, target=target, proxy=proxy, reference_task=reference_task, scorers=table,
      methods=methods, reference_split=reference_split, reference_feature_converter=reference_feature_converter,
      reference_batch_size=bilevel_batch_size, pool_max_examples=pool_max_examples, eval_task=eval_task,
      eval_split=eval_split, rounds=rounds, select_fraction=select_fraction, pool_split=pool_split, seed=seed,
      eval_batches=eval_batches, eval_max_batches=eval_max_batches,
      selection_report=_selection_report(selection_report, pool_split),
      ablations=tuple(variants), ablation_rounds=variant_rounds, ablation_train_target=variant_train_target,
      target_lr_halving=target_lr_halving, shared_root=shared_root, progress_bar=progress_bar)
  eval_name = f"{eval_task or pool_task}:{eval_split}"
  report["config"] = {"rounds": rounds, "select_fraction": select_fraction, "bilevel_steps": bilevel_steps,
                      "bilevel": {k: dataclasses.asdict(v) for k, v in configs.items() if k in methods},
                      "reference": f"{reference_task}:{reference_split}", "eval": eval_name}
  common.write_json(os.path.join(root, "report.json"), report)
  rows = [dict(row, method=m, target_fraction=(row["target_fraction_per_round"] or [None])[-1],
               aux_share=1.0 - row["flop_shares"].get("target_training", 1.0) if row["flop_shares"] else None)
          for m, row in report["summary"].items() if m != "round0"]
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write(f"BLISS rounds vs random selection ({rounds} rounds of {report['steps_per_round']} target steps after a "
            f"shared round 0; held-out {eval_name})\n\n")
    f.write(tables.markdown_table(rows, [
        ("method", "method", str), ("final_loss", "held-out loss", tables.fmt(".4f")),
        ("final_accuracy", "next-token acc", tables.fmt(".4f")),
        ("target_fraction", "target-like share of the last selection", tables.fmt(".3f")),
        ("steps_to_random_final", "steps to random's final loss", tables.fmt("g")),
        ("speedup_vs_random", "speedup", tables.fmt(".2f")),
        ("aux_share", "auxiliary share of FLOPs", tables.fmt(".3f"))]) + "\n")
  return report


def _provides(options: Mapping) -> tuple:
  return ("random", "bliss", *(options.get("scorers") or {}))


def _compare(setting: method.Setting, methods: Sequence[str], options: Mapping) -> Dict[str, method.MethodRun]:
  kw = dict(dict(proxy=setting.small, reference_task=setting.reference_task, reference_split="train"), **options)
  root, shared = setting.subroot("bliss"), setting.shared_subroot("bliss")
  kw.update(root=root, shared_root=shared, pool_task=setting.pool_task, pool_split=setting.pool_split,
            pool_max_examples=setting.pool_max_examples, target=setting.target, eval_task=setting.eval_task,
            eval_split=setting.eval_split, eval_max_batches=setting.eval_max_batches, methods=tuple(methods),
            selection_report=setting.selection_report, progress_bar=setting.progress_bar)
  return rounds_lib.method_runs(run(**kw), methods, "bliss", root, shared)


PIPELINE = method.Pipeline("bliss", _provides, _compare)
