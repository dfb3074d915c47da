"""Selection rounds: the target trained in R + 1 rounds, each method choosing the next round's data from a fresh pool.

Stages (each resumable, under `root/`; S = target.num_steps / (R + 1)):
  pool_keys         every example key of `pool_task:pool_split` (chunks of the target's sequence length)
  pools             R + 1 disjoint candidate pools: a seeded permutation of the keys cut into equal parts
  warmup_select     r = 0: a uniform `select_fraction` of pool 0, shared by every method
  target_r0         the target's first S steps on it (one LR schedule over all (R + 1)·S steps)
  proxy_warmup      the proxy LM trained on the same selection (methods with a scorer start from it)
  for each method m and round r = 1..R:
    m_r<r>_*        the method's scorer's own stages (`RoundScorer.score`), scoring all of pool r
    m_r<r>_select   the scorer's rule over those scores (`random`: a seeded uniform sample, no scorer)
    m_r<r>_target   the target continued for S steps on the selection (from round 0's checkpoint for r = 1),
                    checkpointed every gcd(S, `target.checkpoint_every`) steps, all kept
A method is "random" or a `RoundScorer` (`score(ctx)`: its stages, returning a score store and its FLOPs;
`select(scores, fraction, seed)`: its rule).
Every selection (round 0's and each method's) is trained from a chunk store of `pool_task:pool_split`
(`shared_root/chunk_stores/`, written on first use: `common.pool_store`), by index, and the scorers read their pool
from it too (`RoundContext.pool_chunks`).

Round 0 before the target (pool_keys, pools, warmup_select, proxy_warmup) does not depend on the target and goes under
`shared_root/` (default `root/`), drawn with `seed`. Every draw from round 1 on (random's samples, a scorer's rule,
`RoundContext.seed`: BLISS's candidate order, MATES's probes; the reference batches' order) uses `seed + target.seed`,
so targets of another seed also redraw what depends on chance alone, as the target's own data order does.
"""
import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from bliss_jax.counting import fraction_to_count
from bliss_jax.data import pipeline as data_pipeline
from bliss_jax.data.chunk_store import ChunkStore
from bliss_jax.models.config import count_params
from bliss_jax.models.flops import train_flops_per_token
from bliss_jax.pipelines import common, method
from bliss_jax.pipelines.stages import run_stage
from bliss_jax.report import tables
from bliss_jax.selection import rules, score_store
from bliss_jax.training import trainer
from bliss_jax.training.model_dir import ModelDir

RANDOM = "random"


@dataclasses.dataclass(frozen=True)
class RoundContext:
  """What a scorer is given in round r: round r's pool, the target at the round's start, the proxy, the reference."""
  method: str
  round: int
  pool_chunks: Callable[[], ChunkStore]  # the pool split's chunk store (written on first use); pool r: pool_keys
  pool_path: str  # JSON list of round r's pool keys
  pool_keys: Sequence[str]
  target_dir: str  # holds the target's checkpoint (parameters and optimizer state) at target_step
  target_step: int
  target_spec: trainer.TrainSpec
  proxy_dir: str  # the warmed-up proxy LM
  reference: Callable  # BatchSource of the reference set (unpacked, `reference_batch_size` rows); read its "train"
  reference_name: str  # "task:split:feature_converter"
  previous: Optional[Any]  # this method's previous round's `state` (None in round 1)
  sequence_length: int
  seed: int
  progress_bar: bool
  stage: Callable[[str, Callable[[str], Any], dict], Any]  # stage(suffix, fn, inputs): the stage m_r<r>_<suffix>

  def pool_scoring(self) -> dict:
    """`offline_scoring.score_split`'s arguments that score pool r, read by index from the pool split's chunk
    store."""
    chunks = self.pool_chunks()
    return dict(task=chunks.manifest["task"], split=chunks.manifest["split"], sequence_length=self.sequence_length,
                keys=list(self.pool_keys), chunks=chunks)


class RoundScorer(Protocol):
  stage_keys: Tuple[str, ...]  # the keys of `score(ctx)["stages"]` (None in the rounds of methods without them)

  def score(self, ctx: RoundContext) -> dict:
    """Run this round's stages (via `ctx.stage`); return {"store": score store over all of pool r, "column": its
    score column, "aux_flops": {label: FLOPs}, "state": given back as ctx.previous next round, and optionally
    "stages": {name: stage result} for the round's report}."""

  def select(self, scores: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of the selected pool items."""


def split_pools(keys: Sequence[str], num_pools: int, seed: int):
  """`num_pools` disjoint pools of (almost) equal size from a seeded permutation of `keys` (each pool in key order)."""
  order = np.random.default_rng(seed).permutation(len(keys))
  return [[keys[i] for i in sorted(part)] for part in np.array_split(order, num_pools)]


def random_selection(keys: Sequence[str], fraction: float, seed: int):
  """A uniform sample of floor(fraction·n) keys without replacement (in key order)."""
  idx = rules.uniform_subset(len(keys), fraction_to_count(len(keys), fraction), seed)
  return [keys[i] for i in idx]


def _offset_source(train_source, eval_source, offset: int):
  """A BatchSource whose "train" split is `train_source` read from position (p − offset), and whose other splits are
  `eval_source`'s: the trainer counts positions over all rounds, each round's selection starts at its own 0."""
  def source(split, *, start_position=0, **kw):
    if split == "train":
      return train_source(split, start_position=start_position - offset, **kw)
    return eval_source(split, start_position=start_position, **kw)
  return source


def run(*, root: str, pool_task: str, target: trainer.TrainSpec, proxy: trainer.TrainSpec, reference_task: str,
        scorers: Mapping[str, RoundScorer], methods: Sequence[str], reference_split: str = "train",
        reference_feature_converter: str = "decoder", reference_batch_size: int = 16,
        pool_max_examples: Optional[int] = None, eval_task: Optional[str] = None, eval_split: str = "validation",
        rounds: int = 2, select_fraction: float = 0.2, pool_split: str = "pool", seed: int = 0,
        eval_batches: int = 8, eval_max_batches: Optional[int] = None,
        selection_report: Optional[Callable[[str, Sequence[str], Sequence[str]], dict]] = None,
        ablations: Sequence[str] = (), ablation_rounds: Optional[int] = None, ablation_train_target: bool = True,
        target_lr_halving: bool = False, shared_root: Optional[str] = None, progress_bar: bool = True) -> dict:
  """Run (or resume) the rounds of every method in `methods` ("random" or a name in `scorers`); returns the report
  (summary, per-method rounds and curves, round 0, proxy, pools), which the caller writes.

  Args:
    target: the target LM; `num_steps` is the whole run ((rounds + 1) × S), `eval_every` the held-out curve's period.
    proxy: the proxy LM's shape and warm-up (its `num_steps`).
    reference_*: the reference set given to the scorers (`RoundContext.reference`).
    selection_report: (stage dir, selected keys, pool keys) -> fields added to the selection's record (e.g. its
      composition), or None.
    ablations / ablation_rounds / ablation_train_target: methods that run only their first `ablation_rounds` rounds
      and, with `ablation_train_target=False`, only score → select in them (no target steps).
    target_lr_halving: the target's schedule times 0.5^r in round r, every method.
    shared_root: where round 0's stages that do not depend on the target go (default `root`).
  """
  shared_root = shared_root or root
  unknown = [m for m in methods if m != RANDOM and m not in scorers]
  if unknown:
    raise ValueError(f"unknown methods {unknown}: expected {RANDOM!r} or one of {sorted(scorers)}")
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
  run_ = _Rounds(root=root, shared_root=shared_root, pool_task=pool_task, pool_split=pool_split, target=target,
                 steps_per_round=S, eval_batches=eval_batches, progress_bar=progress_bar,
                 selection_report=selection_report,
                 eval_source=data_pipeline.seqio_batch_source(eval_task, batch_size=B, sequence_length=L,
                                                              seed=target.seed),
                 eval_kw=dict(task=eval_task, split=eval_split, sequence_length=L, batch_size=B,
                              max_batches=eval_max_batches),
                 spec_inputs={"target": target.record(), "rounds": rounds, "eval": f"{eval_task}:{eval_split}"})
  keys_path = run_stage(
      shared_root, "pool_keys",
      lambda d: common.write_json(os.path.join(d, "keys.json"),
                                  common.pool_keys(pool_task, pool_split, L, pool_max_examples)),
      {"task": pool_task, "split": pool_split, "L": L, "max_examples": pool_max_examples,
       **common.pool_sample_inputs(pool_max_examples)})

  def do_pools(d):
    pools = split_pools(json.load(open(keys_path)), rounds + 1, seed)
    return [common.write_json(os.path.join(d, f"pool_{r}.json"), p) for r, p in enumerate(pools)]
  run_.pool_paths.extend(run_stage(shared_root, "pools", do_pools, {"rounds": rounds, "seed": seed,
                                                                     "keys": keys_path}))

  # --- round 0: random warm-up selection; the target's first S steps; the proxy's warm-up ---
  def do_warmup_select(d):
    keys = random_selection(json.load(open(run_.pool_paths[0])), select_fraction, seed)
    return dict(selected=common.write_json(os.path.join(d, "selected_keys.json"), keys), n_selected=len(keys),
                **run_.composition(d, keys, 0))
  warm_sel = run_stage(shared_root, "warmup_select", do_warmup_select, {"fraction": select_fraction, "seed": seed})
  r0 = run_stage(root, "target_r0",
                 lambda d: run_.train_target_round(os.path.join(d, "model"), warm_sel["selected"], 0),
                 dict(run_.spec_inputs, selection=warm_sel["selected"]))
  proxy_res = run_stage(
      shared_root, "proxy_warmup",
      lambda d: common.train_on_task(os.path.join(d, "model"), proxy, pool_task, progress_bar=progress_bar,
                                     batch_source=run_.selection_source(warm_sel["selected"], proxy)),
      {"proxy": proxy.record(), "selection": warm_sel["selected"]})

  # --- rounds 1..R per method ---
  draw_seed = seed + target.seed  # rounds 1..R
  ref_source = data_pipeline.seqio_batch_source(reference_task, batch_size=reference_batch_size, sequence_length=L,
                                                seed=draw_seed, pack=False,
                                                feature_converter=reference_feature_converter)
  context = functools.partial(
      RoundContext, target_spec=target, proxy_dir=proxy_res["model_dir"],
      reference=lambda split, **kw: ref_source(reference_split, **kw),
      reference_name=f"{reference_task}:{reference_split}:{reference_feature_converter}", sequence_length=L,
      seed=draw_seed, progress_bar=progress_bar)
  results: Dict[str, dict] = {}
  for m in methods:
    is_ablation = m in ablations
    results[m] = _method_rounds(run_, m, scorers.get(m), context, r0["model_dir"],
                                (ablation_rounds or rounds) if is_ablation else rounds,
                                train_target=ablation_train_target or not is_ablation,
                                select_fraction=select_fraction, draw_seed=draw_seed)
  return {"summary": _summary(results, scorers, r0, proxy_res, S), "methods": results, "round0": r0,
          "proxy": dict(proxy_res, num_params=count_params(ModelDir(proxy_res["model_dir"]).read_model_config())),
          "warmup_selection": warm_sel, "pool_keys": keys_path,
          "pool_sizes": [len(json.load(open(p))) for p in run_.pool_paths], "steps_per_round": S}


@dataclasses.dataclass
class _Rounds:
  """What every stage of one rounds run shares: the pools, the target's schedule and evaluation and the pool split's
  chunk store (the scorers read the pools from it, the target its selections)."""
  root: str
  shared_root: str
  pool_task: str
  pool_split: str
  target: trainer.TrainSpec
  steps_per_round: int
  eval_batches: int
  progress_bar: bool
  selection_report: Optional[Callable[[str, Sequence[str], Sequence[str]], dict]]
  eval_source: Callable
  eval_kw: dict
  spec_inputs: dict
  pool_paths: list = dataclasses.field(default_factory=list)
  store: Optional[ChunkStore] = None

  def pool_chunks(self) -> ChunkStore:
    """The pool split's chunk store, written on first use (a rerun whose stages are done reads nothing)."""
    if self.store is None:
      self.store = common.pool_store(self.shared_root, self.pool_task, self.pool_split, self.target.sequence_length)
    return self.store

  def selection_source(self, keys_path: str, spec: trainer.TrainSpec, seed: Optional[int] = None):
    """`spec` trained on the keys in `keys_path`, read from the pool split's chunk store."""
    return common.selection_source(self.pool_chunks(), json.load(open(keys_path)), spec, seed)

  def composition(self, d: str, keys: Sequence[str], r: int) -> dict:
    return self.selection_report(d, keys, json.load(open(self.pool_paths[r]))) if self.selection_report else {}

  def train_target_round(self, model_dir: str, keys_path: str, r: int) -> dict:
    """The target's steps r·S + 1 .. (r + 1)·S on the selection in `keys_path` (read with seed target.seed + r); its
    held-out evaluation at (r + 1)·S."""
    S, t = self.steps_per_round, self.target
    train_src = self.selection_source(keys_path, t, t.seed + r)
    trainer.train(model_dir=model_dir, spec=t.replace(checkpoint_every=math.gcd(S, t.checkpoint_every)),
                  batch_source=_offset_source(train_src, self.eval_source, r * S),
                  vocab_size=data_pipeline.vocabulary_size(self.pool_task), eval_batches=self.eval_batches,
                  keep_checkpoints=None, progress_bar=self.progress_bar, stop_at_step=(r + 1) * S,
                  allow_config_change=("data",))  # each round reads its own selection
    return dict(common.heldout_at_step(model_dir, (r + 1) * S, **self.eval_kw), model_dir=model_dir)


def _method_rounds(run_: _Rounds, m: str, scorer: Optional[RoundScorer], context: Callable[..., RoundContext],
                   r0_dir: str, num_rounds: int, *, train_target: bool, select_fraction: float,
                   draw_seed: int) -> dict:
  """Method m's rounds 1..num_rounds: its scorer's stages, `m_r<r>_select` and (when `train_target`)
  `m_r<r>_target`."""
  S, target = run_.steps_per_round, run_.target
  target_dir = os.path.join(run_.root, f"{m}_target")
  state, per_round, stage_names = None, [], []

  def stage(name, fn, inputs):
    stage_names.append(name)
    return run_stage(run_.root, name, fn, inputs)

  for r in range(1, num_rounds + 1):
    pool_keys = json.load(open(run_.pool_paths[r]))
    scored = None
    if scorer is not None:
      ctx = context(method=m, round=r, previous=state, pool_path=run_.pool_paths[r], pool_keys=pool_keys,
                    pool_chunks=run_.pool_chunks,
                    target_dir=r0_dir if r == 1 else target_dir, target_step=r * S,
                    stage=lambda suffix, fn, inputs, r=r: stage(f"{m}_r{r}_{suffix}", fn, inputs))
      scored = scorer.score(ctx)
      state = scored.get("state")

    def do_select(d, r=r, pool_keys=pool_keys, scored=scored):
      if scored is None:
        keys, stats = random_selection(pool_keys, select_fraction, draw_seed + 1000 * r), {}
      else:
        table = score_store.read_scores(scored["store"])
        s = table.columns[scored["column"]]
        chosen = scorer.select(s, select_fraction, draw_seed + 1000 * r)
        keys = score_store.select_keys(table, chosen, "original")
        stats = {"score_mean_selected": float(s[chosen].mean()), "score_mean_pool": float(s.mean()),
                 "score_std_pool": float(s.std()), "score_threshold": float(s[chosen].min())}
      return dict(selected=common.write_json(os.path.join(d, "selected_keys.json"), keys), n_selected=len(keys),
                  n_pool=len(pool_keys), **stats, **run_.composition(d, keys, r))
    selection = stage(f"{m}_r{r}_select", do_select,
                      {"fraction": select_fraction, "scores": scored and scored["store"], "pool": run_.pool_paths[r],
                       "seed": draw_seed})
    x = {"round": r, "step": None, "loss": None, "accuracy": None, "selection": selection,
         "scores": {"store": scored["store"], "column": scored["column"]} if scored else None,
         "aux_flops": dict(scored["aux_flops"]) if scored else {}, **((scored or {}).get("stages") or {})}
    if train_target:
      def do_target(d, r=r, selected=selection["selected"]):
        ModelDir(r0_dir).copy_at_step(target_dir, S)
        return run_.train_target_round(target_dir, selected, r)
      heldout = stage(f"{m}_r{r}_target", do_target, dict(run_.spec_inputs, selection=selection["selected"]))
      x.update(step=(r + 1) * S, loss=heldout["loss"], accuracy=heldout["accuracy"])
    per_round.append(x)
  L = target.sequence_length
  step_flops = train_flops_per_token(ModelDir(r0_dir).read_model_config(), L) * target.batch_size * L
  return {"rounds": per_round, "curve": validation_curve(target_dir) if train_target else [],
          "model_dir": target_dir, "stages": stage_names,
          "target_training": step_flops * target.num_steps if train_target else 0.0}


def _summary(results: Dict[str, dict], scorers: Mapping[str, RoundScorer], r0: dict, proxy_res: dict, S: int) -> dict:
  """Per method: per-round losses, steps to reach random's final loss, FLOP shares (fills `results`' `flops`)."""
  labels = sorted({k for res in results.values() for x in res["rounds"] for k in x["aux_flops"]})
  stage_keys = sorted({k for m in results for k in getattr(scorers.get(m), "stage_keys", ())})
  for res in results.values():
    res["flops"] = {"target_training": res.pop("target_training"),
                    **{k: sum(x["aux_flops"].get(k, 0.0) for x in res["rounds"]) for k in labels}}
    for x in res["rounds"]:
      for k in stage_keys:
        x.setdefault(k, None)
  summary = {"round0": {"loss": r0["loss"], "accuracy": r0["accuracy"], "step": S}}
  # steps-to-reach compares the trainer's periodic held-out curves only (one estimator: the same `eval_batches`
  # batches sampled over the split in every round)
  random_curve = results[RANDOM]["curve"] if RANDOM in results else []
  random_final = random_curve[-1][1] if random_curve else None
  for m, res in results.items():
    f = dict(res["flops"], warmup=proxy_res["train_flops"] if m != RANDOM else 0.0)
    total = sum(f.values())
    row = {"final_loss": res["rounds"][-1]["loss"], "final_accuracy": res["rounds"][-1]["accuracy"],
           "loss_per_round": [x["loss"] for x in res["rounds"]],
           "target_fraction_per_round": [x["selection"].get("target_fraction") for x in res["rounds"]],
           "target_lift_per_round": [x["selection"].get("target_lift") for x in res["rounds"]],
           "flops": f, "flop_shares": {k: v / total for k, v in f.items()} if total else {}}
    if random_final is not None:
      reach = tables.steps_to_reach(res["curve"], random_final)
      row["random_final_curve_loss"] = random_final
      row["steps_to_random_final"] = reach
      row["speedup_vs_random"] = (random_curve[-1][0] / reach) if reach else None
    summary[m] = row
  return summary


def validation_curve(model_dir: str):
  """[(step, loss)] of the trainer's periodic held-out evaluations in MODEL_DIR/metrics.jsonl."""
  return sorted({r["step"]: r["loss"] for r in ModelDir(model_dir).metrics("validation")}.items())


def method_runs(report: Mapping, methods: Sequence[str], pipeline: str, root: str,
                shared_root: str) -> Dict[str, method.MethodRun]:
  """The comparison's view of `report` (`run`'s, with its `root` and `shared_root`): each method's target checkpoints
  by step, its auxiliary FLOPs, each incurred before the round that uses it, and the stages it depends on."""
  S = report["steps_per_round"]
  shared = [os.path.join(shared_root, n) for n in ("pool_keys", "pools", "warmup_select")]
  shared.append(os.path.join(root, "target_r0"))
  out = {}
  for m in methods:
    res = report["methods"][m]
    one_off = {}
    if m != RANDOM:
      one_off["proxy_warmup"] = (S, report["proxy"]["train_flops"])
    for x in res["rounds"]:
      for label, f in x["aux_flops"].items():
        one_off[f"{label}_r{x['round']}"] = (x["round"] * S, f)
    last = res["rounds"][-1]
    scores = last.get("scores")
    out[m] = method.MethodRun(
        pipeline=pipeline, model_dirs=((0, report["round0"]["model_dir"]), (S + 1, res["model_dir"])),
        aux=method.AuxCost(one_off), selections=tuple(x["selection"]["selected"] for x in res["rounds"]),
        stages=tuple(shared + ([os.path.join(shared_root, "proxy_warmup")] if m != RANDOM else []) +
                     [os.path.join(root, n) for n in res["stages"]]), pool=report["pool_keys"],
        scores=method.Scores(scores["store"], scores["column"], what=f"round {last['round']}'s pool")
        if scores else None)
  return out
