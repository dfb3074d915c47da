"""MiniPLM (Gu et al.): offline Difference Sampling with a large teacher and a small reference LM, and its baselines.

Stages (each resumable, under `root/`; those before the students do not depend on them and go under `shared_root/`,
default `root/`):
  pool_keys       every example key of the candidate pool (`pool_task:pool_split`, chunked at the sequence length)
  split_reference D_ref = a uniform `reference_fraction` of the pool, removed from it (seeded); not with a
                  `reference_task`
  teacher         the teacher LM (given as a MODEL_DIR, or trained here on the pool task's train split)
  reference       the reference LM, trained from scratch with plain CE on D_ref (the paper's setting), or on the
                  train split of `reference_task` when one is given (then every pool example is a candidate)
  score           teacher and reference log-probs of every remaining pool example -> score store
  select          top α by the difference score (MiniPLM eq. 4, per-token mean): K = α·|D − D_ref| (deterministic)
  prx_*           (only with student `miniplm_prx`) MiniPLM_prx: fit the reference LM + a linear head on mean-pooled
                  states to the exact scores of a `prx_sample_fraction` sample (MSE), predict the pool, top α
  student_<name>  students at equal training compute: `miniplm` (CE on the selection, repeated to the step budget),
                  `miniplm_prx` (CE on the proxy's selection),
                  `plain` (CE on the whole remaining pool), `vanilla_kd` (forward KL to the teacher on the pool, with
                  the step count cut to match FLOPs: steps·C_s / (C_s + C_t), `vanilla_kd_steps`)
  eval            held-out loss / accuracy of every student on the same split
D_ref, the selections and the pool are trained from a chunk store of `pool_task:pool_split` (`shared_root/
chunk_stores/`, written on first use: `common.pool_store`), by index.
"""
import dataclasses
import json
import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from bliss_jax.choices import check_choice
from bliss_jax.counting import fraction_to_count
from bliss_jax.data.pipeline import vocabulary_size
from bliss_jax.losses.kd import make_kd_loss
from bliss_jax.models import flops
from bliss_jax.pipelines import common, method
from bliss_jax.pipelines.stages import run_stage
from bliss_jax.selection import offline_scoring, rules, score_store, scorers
from bliss_jax.training import checkpoints, trainer
from bliss_jax.training.model_dir import ModelDir
from bliss_jax.training.trainer import round_up_vocab


STUDENTS = ("miniplm", "miniplm_prx", "plain", "vanilla_kd")


def split_reference(keys: Sequence[str], fraction: float, seed: int):
  """(D_ref, D − D_ref): a uniform sample of floor(fraction·|D|) keys without replacement, and the rest (in order)."""
  ref_idx = rules.uniform_subset(len(keys), fraction_to_count(len(keys), fraction), seed)
  in_ref = np.zeros(len(keys), bool)
  in_ref[ref_idx] = True
  return [k for k, r in zip(keys, in_ref) if r], [k for k, r in zip(keys, in_ref) if not r]


def vanilla_kd_steps(steps: int, student_train_flops: float, teacher_forward_flops: float) -> int:
  """FLOP-matched Vanilla KD steps (MiniPLM §3.1): T · C_s / (C_s + C_t), C_s the student's train-step FLOPs and C_t
  the teacher's forward FLOPs per token (`models.flops`; with C = 6N and 2N, the paper's T · 3N_s / (3N_s + N_t))."""
  return int(steps * student_train_flops / (student_train_flops + teacher_forward_flops))


def run(*, root: str, pool_task: str, student: trainer.TrainSpec, reference: trainer.TrainSpec,
        teacher: Optional[trainer.TrainSpec] = None, teacher_dir: Optional[str] = None, pool_split: str = "pool",
        teacher_task: Optional[str] = None, eval_task: Optional[str] = None, eval_split: str = "validation",
        reference_fraction: float = 0.1, alpha: float = 0.5, seed: int = 0, score_batch_size: int = 32,
        students: Sequence[str] = ("miniplm", "plain", "vanilla_kd"), kd_omega: float = 1.0, kd_rho: float = 1.0,
        eval_max_batches: Optional[int] = None, prx_sample_fraction: float = 0.1, prx_steps: int = 200,
        prx_learning_rate: float = 1e-3, vanilla_kd_match_flops: bool = True, keep_checkpoints: Optional[int] = 3,
        pool_max_examples: Optional[int] = None, shared_root: Optional[str] = None,
        reference_task: Optional[str] = None, progress_bar: bool = True) -> dict:
  """Run (or resume) the MiniPLM pipeline; returns the per-student results written to `root/report.json`.

  `reference_task`: the reference LM's data. None: D_ref, a uniform `reference_fraction` of the pool, which is then
  no candidate (MiniPLM §3.1). A task name: that task's train split (e.g. a curated high-quality set, as RHO-1's
  reference and BLISS's upper level take theirs); every pool example is then a candidate and `reference_fraction`
  is unused.

  `vanilla_kd_match_flops`: Vanilla KD runs fewer steps so that its FLOPs with the teacher's forwards equal the other
  students' (MiniPLM §3.1); False: the same steps as the others, the teacher's forwards counted as auxiliary cost
  (the comparison pipeline's equal target-training compute). `keep_checkpoints`: of each student (None: all).
  `pool_max_examples`: the pool is a seeded uniform sample of this many of the pool split's examples
  (`common.pool_keys`; for corpora as large as C4). `shared_root`: where the stages before the students go (default
  `root`).
  """
  shared_root = shared_root or root
  for name in students:
    check_choice("MiniPLM student", name, STUDENTS)
  L = student.sequence_length
  eval_task = eval_task or pool_task
  pool = _candidates(shared_root, pool_task, pool_split, L, pool_max_examples, reference_task, reference_fraction,
                     seed)
  if teacher_dir is None:
    if teacher is None:
      raise ValueError("MiniPLM needs a teacher: give teacher_dir (a trained MODEL_DIR) or a teacher TrainSpec")
    t_task = teacher_task or pool_task
    teacher_res = run_stage(shared_root, "teacher",
                            lambda d: common.train_on_task(d, teacher, t_task, progress_bar=progress_bar),
                            {"spec": teacher.record(), "task": t_task})
    teacher_dir = teacher_res["model_dir"]
  else:
    teacher_res = {"model_dir": teacher_dir, "train_flops": 0.0}
  stores = []

  def source(keys, spec):  # `spec` on the pool chunks `keys`, from the pool split's chunk store
    if not stores:
      stores.append(common.pool_store(shared_root, pool_task, pool_split, L))
    return common.selection_source(stores[0], keys, spec)

  if reference_task is None:
    reference_inputs = {"spec": reference.record(), "n_reference": len(pool.reference)}
    train_reference = lambda d: common.train_on_task(d, reference, pool_task, progress_bar=progress_bar,
                                                     batch_source=source(pool.reference, reference))
  else:
    reference_inputs = {"spec": reference.record(), "task": reference_task}
    train_reference = lambda d: common.train_on_task(d, reference, reference_task, progress_bar=progress_bar)
  reference_res = run_stage(shared_root, "reference", train_reference, reference_inputs)
  scored, selection = _difference_sampling(shared_root, pool, teacher_dir, reference_res["model_dir"], alpha=alpha,
                                           whole_pool=reference_task is not None,
                                           score_batch_size=score_batch_size, progress_bar=progress_bar)

  prx = None
  if "miniplm_prx" in students:
    prx = _run_prx(shared_root, pool_task, pool_split, L, pool.candidates, pool.scored_keys, scored,
                   reference_res["model_dir"], alpha, seed, prx_sample_fraction, prx_steps, prx_learning_rate,
                   score_batch_size, progress_bar)
  data = {"miniplm": lambda: json.load(open(selection["selected"])),
          "miniplm_prx": lambda: json.load(open(prx["selected"])),
          "plain": lambda: pool.candidates, "vanilla_kd": lambda: pool.candidates}
  train_kw = dict(progress_bar=progress_bar, keep_checkpoints=keep_checkpoints)
  results: Dict[str, dict] = {}
  for name in students:
    inputs = {"spec": student.record(), "name": name}
    if name == "vanilla_kd":
      if not vanilla_kd_match_flops:
        inputs["match_flops"] = False
      fn = lambda d: _train_vanilla_kd(d, student, source(data["vanilla_kd"](), student), pool_task, teacher_dir,
                                       kd_omega, kd_rho, vanilla_kd_match_flops, **train_kw)
    else:
      fn = lambda d, keys=data[name]: common.train_on_task(d, student, pool_task,
                                                           batch_source=source(keys(), student), **train_kw)
    results[name] = run_stage(root, f"student_{name}", fn, inputs)
    results[name]["heldout"] = common.heldout_eval(results[name]["model_dir"], eval_task, eval_split,
                                                   sequence_length=L, batch_size=student.batch_size,
                                                   max_batches=eval_max_batches)
  report = {"students": results, "selection": selection, "scoring": scored, "teacher": teacher_res,
            "reference": reference_res, "split": pool.split_result, "prx": prx, "pool_keys": pool.keys_path}
  common.write_json(os.path.join(root, "report.json"), report)
  return report


@dataclasses.dataclass(frozen=True)
class _Pool:
  """The candidate pool: its keys, D_ref and the candidates (D − D_ref, or every key with a reference task)."""
  task: str
  split: str
  sequence_length: int
  keys_path: str
  scored_keys: Optional[Sequence[str]]  # what offline scoring reads of the pool split (None: all of it)
  split_result: Optional[dict]  # the `split_reference` stage's result (None with a reference task)
  reference: Optional[Sequence[str]]
  candidates: Sequence[str]


def _candidates(shared_root: str, pool_task: str, pool_split: str, L: int, pool_max_examples: Optional[int],
                reference_task: Optional[str], reference_fraction: float, seed: int) -> "_Pool":
  """Stages `pool_keys` and (without a reference task) `split_reference`."""
  keys_inputs = dict({"task": pool_task, "split": pool_split, "L": L}, **common.pool_sample_inputs(pool_max_examples))
  keys_path = run_stage(shared_root, "pool_keys", lambda d: common.write_json(
      os.path.join(d, "keys.json"), common.pool_keys(pool_task, pool_split, L, pool_max_examples)), keys_inputs)
  keys = json.load(open(keys_path))
  scored_keys = None if pool_max_examples is None else keys
  if reference_task is not None:
    return _Pool(pool_task, pool_split, L, keys_path, scored_keys, None, None, keys)

  def do_split(d):
    ref, rest = split_reference(keys, reference_fraction, seed)
    return {"reference": common.write_json(os.path.join(d, "reference_keys.json"), ref),
            "candidates": common.write_json(os.path.join(d, "candidate_keys.json"), rest),
            "n_reference": len(ref), "n_candidates": len(rest)}
  split = run_stage(shared_root, "split_reference", do_split, {"fraction": reference_fraction, "seed": seed})
  return _Pool(pool_task, pool_split, L, keys_path, scored_keys, split, json.load(open(split["reference"])),
               json.load(open(split["candidates"])))


def _difference_sampling(shared_root: str, pool: "_Pool", teacher_dir: str, reference_dir: str, *, alpha: float,
                         whole_pool: bool, score_batch_size: int, progress_bar: bool):
  """Stages `score` (teacher and reference log-probs of the pool, MiniPLM eq. 4) and `select` (top α of the
  candidates); returns their results."""
  def do_score(d):
    checkpoints.check_vocabulary("reference", reference_dir, ModelDir(teacher_dir).read_model_config().vocab_size)
    t_model, t_params = common.load_frozen(teacher_dir)
    r_model, r_params = common.load_frozen(reference_dir)
    table = offline_scoring.score_split(scorers.make_difference_scorer(t_model, r_model), (t_params, r_params),
                                        task=pool.task, split=pool.split, store_dir=os.path.join(d, "store"),
                                        sequence_length=pool.sequence_length, batch_size=score_batch_size,
                                        keys=pool.scored_keys, model_dirs=(teacher_dir, reference_dir),
                                        progress=progress_bar)
    tokens = int(table.num_tokens.sum())
    return {"store": os.path.join(d, "store"), "scored_tokens": tokens,
            "flops": common.forward_flops(teacher_dir, pool.sequence_length, tokens) +
                     common.forward_flops(reference_dir, pool.sequence_length, tokens)}
  scored = run_stage(shared_root, "score", do_score, {"teacher": teacher_dir, "reference": reference_dir})

  def do_select(d):
    table = score_store.read_scores(scored["store"])
    cand = set(pool.candidates)
    idx = np.array([i for i, k in enumerate(table.keys()) if k in cand])  # D − D_ref only
    chosen = idx[rules.top_fraction(table.columns["difference"][idx], alpha)]
    selected = score_store.select_keys(table, chosen, "original")
    s = table.columns["difference"]
    return {"selected": common.write_json(os.path.join(d, "selected_keys.json"), selected),
            "n_selected": len(selected), "n_candidates": int(idx.size),
            "score_mean_selected": float(s[chosen].mean()), "score_mean_candidates": float(s[idx].mean())}
  select_inputs = {"alpha": alpha, "candidates": "the whole pool"} if whole_pool else {"alpha": alpha}
  return scored, run_stage(shared_root, "select", do_select, select_inputs)


def _train_vanilla_kd(model_dir: str, student: trainer.TrainSpec, batch_source, pool_task: str, teacher_dir: str,
                      omega: float, rho: float, match_flops: bool, **train_kw) -> dict:
  """Vanilla KD (forward KL to the teacher) on `batch_source` (drawn from `pool_task`), FLOP-matched
  (`vanilla_kd_steps`) when `match_flops`."""
  L = student.sequence_length
  student_cfg = student.model_config
  if student_cfg.vocab_size is None:
    student_cfg = dataclasses.replace(student_cfg, vocab_size=round_up_vocab(vocabulary_size(pool_task)))
  c_s = flops.train_flops_per_token(student_cfg, L)
  c_t = flops.forward_flops_per_token(ModelDir(teacher_dir).read_model_config(), L)
  steps = vanilla_kd_steps(student.num_steps, c_s, c_t) if match_flops else student.num_steps
  res = common.train_on_task(model_dir, student.replace(num_steps=steps), pool_task, batch_source=batch_source,
                             frozen_model_dirs={"teacher": teacher_dir},
                             loss_factory=lambda m, fm: make_kd_loss(m, fm, omega=omega, rho=rho), **train_kw)
  res["teacher_forward_flops"] = common.forward_flops(teacher_dir, L, res["tokens"])
  return res


def _run_prx(root, pool_task, pool_split, L, cand_keys, scored_keys, scored, reference_dir, alpha, seed,
             sample_fraction, steps, learning_rate, score_batch_size, progress_bar):
  """MiniPLM_prx stages: fit the regressor on a sample's exact scores, predict the pool, select top α."""
  import flax.serialization  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.score_model import ScoreModel  # pylint: disable=g-import-not-at-top
  from bliss_jax.selection import proxy_regression  # pylint: disable=g-import-not-at-top

  model = ScoreModel(ModelDir(reference_dir).read_model_config())
  params_path = os.path.join(root, "prx_fit", "params.msgpack")

  def do_fit(d):
    table = score_store.read_scores(scored["store"])
    exact = dict(zip(table.keys(), table.columns["difference"].tolist()))
    sample = proxy_regression.sample_keys(cand_keys, sample_fraction, seed)
    rows = proxy_regression.collect_rows(pool_task, pool_split, L, {k: exact[k] for k in sample})
    _, lm_params = checkpoints.load_params(reference_dir)
    fit_batch = min(32, len(sample))
    params, losses = proxy_regression.fit(model, lm_params, rows, steps=steps, batch_size=fit_batch,
                                          learning_rate=learning_rate, seed=seed)
    with open(params_path, "wb") as f:
      f.write(flax.serialization.to_bytes(params))
    return {"n_sample": len(sample), "mse_first": losses[0], "mse_last": losses[-1],
            "target_variance": float(np.var(rows["target"])),
            "fit_flops": flops.score_train_flops_per_token(model.cfg, L) * steps * fit_batch * L}
  fit = run_stage(root, "prx_fit", do_fit, {"fraction": sample_fraction, "steps": steps, "lr": learning_rate})

  def do_predict(d):
    _, lm_params = checkpoints.load_params(reference_dir)
    template = {"backbone": {k: v for k, v in lm_params.items() if k != "lm_head"},
                "head": {"kernel": np.zeros((model.cfg.d_model, 1), np.float32), "bias": np.zeros(1, np.float32)}}
    with open(params_path, "rb") as f:
      params = flax.serialization.from_bytes(template, f.read())
    table = offline_scoring.score_split(proxy_regression.make_prediction_scorer(model), params, task=pool_task,
                                        split=pool_split, store_dir=os.path.join(d, "store"), sequence_length=L,
                                        batch_size=score_batch_size, keys=scored_keys, model_dirs=(reference_dir,),
                                        progress=progress_bar)
    exact = score_store.read_scores(scored["store"])
    assert table.keys() == exact.keys()
    cand = set(cand_keys)
    idx = np.array([i for i, k in enumerate(table.keys()) if k in cand])
    chosen = idx[rules.top_fraction(table.columns["predicted"][idx], alpha)]
    exact_chosen = idx[rules.top_fraction(exact.columns["difference"][idx], alpha)]
    pred, true = table.columns["predicted"][idx], exact.columns["difference"][idx]
    rank = lambda v: np.argsort(np.argsort(v))
    return {"selected": common.write_json(os.path.join(d, "selected_keys.json"),
                                          score_store.select_keys(table, chosen, "original")),
            "spearman_vs_exact": float(np.corrcoef(rank(pred), rank(true))[0, 1]),
            "selection_overlap_with_exact": float(len(set(chosen) & set(exact_chosen)) / max(len(chosen), 1)),
            "predicted_tokens": int(table.num_tokens.sum()),
            "predict_flops": flops.score_forward_flops_per_token(model.cfg, L) * int(table.num_tokens.sum()), **fit}
  return run_stage(root, "prx_select", do_predict, {"alpha": alpha, "fit": fit})


def _compare(setting: method.Setting, methods: Sequence[str], options: Mapping) -> Dict[str, method.MethodRun]:
  kw = dict(options)
  if setting.large is None and "teacher_dir" not in kw:
    raise ValueError(f"{list(methods)} need the large teacher: give compare's `large` TrainSpec")
  kw.setdefault("teacher", setting.large)
  kw.setdefault("reference", setting.small)
  root, shared = setting.subroot("miniplm"), setting.shared_subroot("miniplm")  # `reference_task` from the options
  kw.update(root=root, shared_root=shared, pool_task=setting.pool_task, pool_split=setting.pool_split,
            pool_max_examples=setting.pool_max_examples, teacher_task=setting.train_task, student=setting.target,
            students=tuple(methods), eval_task=setting.eval_task, eval_split=setting.eval_split,
            eval_max_batches=setting.eval_max_batches, vanilla_kd_match_flops=False,
            progress_bar=setting.progress_bar, keep_checkpoints=None)
  rep = run(**kw)
  teacher_flops = rep["teacher"]["train_flops"]
  in_shared = lambda *names: tuple(os.path.join(shared, name) for name in names)
  d_ref = rep["split"] is not None  # the reference LM trained on D_ref (else on the options' reference_task)
  split_stage = ("split_reference",) if d_ref else ()
  candidates = (rep["split"]["candidates"], "the pool less D_ref") if d_ref else (None, "the pool")
  out = {}
  for m in methods:
    s = rep["students"][m]
    if m == "miniplm":
      out[m] = method.MethodRun(
          "miniplm", ((0, s["model_dir"]),),
          method.AuxCost({"teacher_training": (0, teacher_flops),
                            "reference_training": (0, rep["reference"]["train_flops"]),
                            "scoring": (0, rep["scoring"]["flops"])}),
          in_shared("pool_keys", *split_stage, "teacher", "reference", "score", "select") +
          (os.path.join(root, "student_miniplm"),),
          (rep["selection"]["selected"],), rep["pool_keys"],
          scores=method.Scores(rep["scoring"]["store"], "difference", *candidates))
    else:
      n = setting.target.num_steps
      out[m] = method.MethodRun(
          "miniplm", ((0, s["model_dir"]),),
          method.AuxCost({"teacher_training": (0, teacher_flops)}, s["teacher_forward_flops"] / n, n,
                           "teacher_forwards"),
          in_shared("pool_keys", *split_stage, "teacher") + (os.path.join(root, "student_vanilla_kd"),))
  return out


PIPELINE = method.Pipeline("miniplm", lambda options: ("miniplm", "vanilla_kd"), _compare)
