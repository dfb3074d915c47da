"""The BLISS bilevel loop: T jit-compiled bilevel steps (`bilevel.step`), resumable, with metrics and checkpoints
(`training.run_loop`, as the trainer's steps).

`run_bilevel` loads the warmed-up proxy (re-loaded every round, as the reference implementation does), the score
model (from the proxy's backbone with a new Linear(d, 1) head in round 1, or a previous round's score model) and the current
target checkpoint (constants of the KL term), lays them out on the mesh, and runs `num_steps` steps. Each step reads
K_in unpacked candidate batches (one example per row: the weights P are per example) and one reference batch.
Checkpoints hold the whole `BilevelState` and the two streams' positions, so a rerun continues exactly; the final
score model is written to MODEL_DIR/score (orbax) with MODEL_DIR/model_config.json (the backbone's shape) and
MODEL_DIR/score_model.json ({"sigmoid": ..., "pooling": ...}).
"""
import dataclasses
import json
import logging
import os
from typing import Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from bliss_jax import partitioning
from bliss_jax.bilevel.step import BilevelConfig, build_bilevel_functions
from bliss_jax.models.config import as_record
from bliss_jax.models.score_model import ScoreModel, from_lm_params, init_head
from bliss_jax.training import checkpoints, config_checks, metric_writers, run_config, run_lock, run_loop
from bliss_jax.training.model_dir import ModelDir
from bliss_jax.training.trainer import abstract_params


def _score_dir(model_dir):
  return os.path.join(os.path.abspath(model_dir), "score")


def save_score_model(model_dir: str, params, backbone_cfg, sigmoid: bool, pooling: str) -> None:
  ModelDir(model_dir).write_model_config(backbone_cfg)
  with open(os.path.join(model_dir, "score_model.json"), "w") as f:
    json.dump({"sigmoid": sigmoid, "pooling": pooling}, f)
  if not os.path.exists(_score_dir(model_dir)):
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(_score_dir(model_dir), params)
    ckptr.wait_until_finished()


def load_score_model(model_dir: str, abstract=None):
  """(ScoreModel, params) written by `run_bilevel`; `abstract` (ShapeDtypeStructs with shardings) lays them out."""
  path = _score_dir(model_dir)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no score model at {path}: has the bilevel stage in {model_dir} finished?")
  cfg = ModelDir(model_dir).read_model_config()
  with open(os.path.join(model_dir, "score_model.json")) as f:
    meta = json.load(f)
  return (ScoreModel(cfg, sigmoid=meta["sigmoid"], pooling=meta.get("pooling", "tokens")),
          ocp.StandardCheckpointer().restore(path, abstract))


def _stack_global(local_batches, sharding):
  keys = local_batches[0].keys()
  return {k: jax.make_array_from_process_local_data(sharding, np.stack([np.asarray(b[k]) for b in local_batches]))
          for k in keys}


def run_bilevel(*, model_dir: str, proxy_dir: str, target_dir: Optional[str], train_source, val_source,
                cfg: BilevelConfig, num_steps: int, target_step: Optional[int] = None,
                score_init_dir: Optional[str] = None, proxy_state_dir: Optional[str] = None,
                checkpoint_every: int = 100, log_every: int = 10,
                keep_checkpoints: Optional[int] = 1, devices=None, progress_bar: bool = True,
                stop_at_step: Optional[int] = None, allow_config_change: Sequence[str] = ()) -> dict:
  """Run (or resume) `num_steps` bilevel steps into `model_dir`; returns the last step's metrics.

  train_source / val_source: `trainer.BatchSource`s of unpacked candidate rows (split "train", repeating) and of
    reference rows (split "train", repeating), each yielding this process's rows of the global batch.
  target_dir / target_step: the current target checkpoint (needed when cfg.gamma > 0).
  score_init_dir: a previous `run_bilevel` MODEL_DIR whose score model starts this one (default: the proxy's
    backbone with a Linear(d, 1) head initialised as `cfg.score_head_init` says, seeded by `cfg.seed`).
  proxy_state_dir: a previous `run_bilevel` MODEL_DIR whose final proxy starts this one (default: `proxy_dir`'s
    latest checkpoint, the reference implementation's reset); it must have the same BilevelConfig.
  stop_at_step: leave after this step (checkpointed), as a pre-empted job would.
  allow_config_change: as `trainer.train`'s: the fields of the run's record (MODEL_DIR/run_config.json: the
    BilevelConfig, num_steps, the proxy's and target's shapes, the target step, where the score model and proxy
    start, the two data sources) that a resume may change; any other change is refused.
  """
  config_checks.check_loop(num_steps=num_steps, checkpoint_every=checkpoint_every,
                           keep_checkpoints=keep_checkpoints, log_every=log_every, stop_at_step=stop_at_step)
  model_dir = os.path.abspath(model_dir)
  mesh = partitioning.make_mesh(devices=devices)
  rules = partitioning.logical_rules()
  proxy_cfg = ModelDir(proxy_dir).read_model_config()
  target_cfg = ModelDir(target_dir).read_model_config() if cfg.gamma else None
  if target_cfg is not None:
    checkpoints.check_vocabulary("target", target_dir, proxy_cfg.vocab_size,
                                 vocabulary=ModelDir(proxy_dir).read_vocabulary())
  with run_lock.run_lock(model_dir, what="bilevel run"), partitioning.mesh_context(mesh, rules), \
       checkpoints.RunCheckpoints(model_dir, keep_checkpoints) as ckpts:
    target_abs = abstract_params(target_cfg, mesh, rules) if target_cfg is not None else None
    fns = build_bilevel_functions(proxy_cfg, target_cfg, cfg, num_steps, mesh, rules,
                                  target_shardings=jax.tree.map(lambda x: x.sharding, target_abs))
    target_params, t_step = None, None
    if target_cfg is not None:
      t_step, target_params = checkpoints.load_params(target_dir, target_abs, step=target_step)
      logging.info("bilevel: target %s at step %d", target_dir, t_step)
    record = {"bilevel": dataclasses.asdict(cfg), "num_steps": num_steps,
              "proxy": {"model_config": as_record(proxy_cfg)},
              "target": None if target_cfg is None else {"model_config": as_record(target_cfg),
                                                         "step": int(t_step)},
              "score_init": bool(score_init_dir), "proxy_state": bool(proxy_state_dir),
              "data": {"train": run_config.describe(train_source), "val": run_config.describe(val_source)}}
    run = ModelDir(model_dir)
    old_record, diff = run.read_run_config(), {}
    if ckpts.latest_step() is not None and old_record:  # (a run written before records existed compares nothing)
      diff = run_config.check_resume(old_record, record, ckpts.latest_step(), allow_config_change)
      for k, (a, b) in diff.items():
        logging.warning("resuming %s with a changed %s: %s -> %s (allowed)", model_dir, k, a, b)
    restored = ckpts.restore(fns.abstract_state)
    if restored is None:
      if proxy_state_dir is not None:
        prev = checkpoints.restore(checkpoints.make_manager(proxy_state_dir, max_to_keep=None), fns.abstract_state)
        if prev is None:
          raise FileNotFoundError(f"no bilevel checkpoint under {proxy_state_dir} to continue the proxy from")
        proxy_params = prev[0].proxy
      else:
        _, proxy_params = checkpoints.load_params(proxy_dir, fns.abstract_state.proxy)
      if score_init_dir is not None:
        _, score_params = load_score_model(score_init_dir, fns.abstract_state.score)
      else:
        score_params = from_lm_params(proxy_params, init_head(proxy_cfg.d_model, cfg.score_head_init, cfg.seed))
      state, start = fns.init(proxy_params, score_params), 0
    else:
      state, data = restored
      start = int(data["step"])
      logging.info("bilevel: resumed from step %d", start)
    if jax.process_index() == 0:
      run.write_run_config(run_config.updated(old_record, record, diff, start))
    k_in = cfg.inner_steps
    pi, pc = jax.process_index(), jax.process_count()
    train_it = train_source("train", start_position=start * k_in, process_index=pi, process_count=pc, repeat=True)
    val_it = val_source("train", start_position=start, process_index=pi, process_count=pc, repeat=True)
    writer = metric_writers.make_writer(model_dir, "bilevel", start_step=start)

    def step_fn(state, step):
      del step
      train = _stack_global([next(train_it) for _ in range(k_in)], fns.train_batch_sharding)
      val = partitioning.global_batch_from_local(next(val_it), mesh)
      return fns.step(state, train, val, target_params)

    def nonfinite(step, m):
      if all(np.isfinite(m[k]) for k in ("upper_F", "lower_G", "hypergrad_norm")):
        return None
      return (f"bilevel step {step}: non-finite F={m['upper_F']} / G={m['lower_G']} / hypergradient norm "
              f"{m['hypergrad_norm']}")

    last = run_loop.last_step(start, num_steps, stop_at_step)
    state, metrics = run_loop.run_loop(
        state, step_fn, first_step=start, last_step=last, num_steps=num_steps, checkpoints=ckpts,
        checkpoint_every=checkpoint_every, checkpoint_data=lambda step: {"step": step}, writer=writer,
        log_every=log_every, nonfinite=nonfinite, unsaved="the bilevel state after step {step} holds non-finite "
        "values; not saved", advice="Lower the learning rates or γ and rerun.", desc="bilevel",
        progress_bar=progress_bar, postfix=lambda m: {"F": f"{m['upper_F']:.3f}", "G": f"{m['lower_G']:.3f}"})
    writer.flush()
    if last == num_steps:
      save_score_model(model_dir, jax.device_get(state.score), proxy_cfg, cfg.sigmoid, cfg.score_pooling)
  return metrics


def _on_abstract_inputs(how, proxy_cfg, target_cfg, cfg: BilevelConfig, *, batch_size: int, sequence_length: int,
                        num_steps: int, mesh, fsdp: bool, prefix_lm_reference: bool):
  """`how(jitted bilevel step, *abstract arguments)` for one sharded bilevel step on `mesh`: the state, K_in candidate
  batches, the reference batch and the target's parameters as ShapeDtypeStructs carrying their shardings."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  mesh = mesh or partitioning.make_mesh()
  rules = partitioning.logical_rules(fsdp)
  with partitioning.mesh_context(mesh, rules):
    target_abs = abstract_params(target_cfg, mesh, rules) if target_cfg is not None and cfg.gamma else None
    fns = build_bilevel_functions(proxy_cfg, target_cfg, cfg, num_steps, mesh, rules,
                                  target_shardings=jax.tree.map(lambda x: x.sharding, target_abs))
    keys = ["decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids",
            "decoder_positions"]
    k, B, L = cfg.inner_steps, batch_size, sequence_length
    train = {n: jax.ShapeDtypeStruct((k, B, L), jnp.int32, sharding=fns.train_batch_sharding) for n in keys}
    val = {n: jax.ShapeDtypeStruct((B, L), jnp.int32, sharding=fns.val_batch_sharding)
           for n in keys + (["decoder_causal_attention"] if prefix_lm_reference else [])}
    return how(fns.step, fns.abstract_state, train, val, target_abs)


def abstract_bilevel_step(proxy_cfg, target_cfg, cfg: BilevelConfig, *, batch_size: int, sequence_length: int,
                          num_steps: int = 1000, mesh=None, fsdp: bool = True, prefix_lm_reference: bool = False):
  """Trace one sharded bilevel step of (possibly paper-sized) models with `jax.eval_shape`: nothing is allocated or
  run, but every shape, sharding rule and the target's use in the KL is checked. Returns (state, metrics)."""
  return _on_abstract_inputs(jax.eval_shape, proxy_cfg, target_cfg, cfg, batch_size=batch_size,
                             sequence_length=sequence_length, num_steps=num_steps, mesh=mesh, fsdp=fsdp,
                             prefix_lm_reference=prefix_lm_reference)


def compiled_bilevel_step(proxy_cfg, target_cfg, cfg: BilevelConfig, *, batch_size: int, sequence_length: int,
                          num_steps: int = 1000, mesh=None, fsdp: bool = True, prefix_lm_reference: bool = False):
  """`abstract_bilevel_step`'s step lowered and compiled for the current backend, still without allocating anything:
  its `memory_analysis()` gives the per-device buffer sizes XLA assigned (arguments, outputs, temporaries)."""
  return _on_abstract_inputs(lambda f, *args: f.lower(*args).compile(), proxy_cfg, target_cfg, cfg,
                             batch_size=batch_size, sequence_length=sequence_length, num_steps=num_steps, mesh=mesh,
                             fsdp=fsdp, prefix_lm_reference=prefix_lm_reference)
