"""The training loop, top to bottom: mesh → model → sharded state → (resume) → steps → eval → checkpoints.

`train(model_dir=..., spec=TrainSpec(...), batch_source=...)` is a plain function (gin binds its arguments from
`scripts/train.py`). Every method plugs in through `loss_factory(model) -> loss_fn`; everything else (sharding,
accumulation, checkpoints, NaN guard, metrics; the steps themselves run in `run_loop`) is shared.
"""
import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bliss_jax import partitioning
from bliss_jax.losses.lm import make_lm_loss
from bliss_jax.models.config import COMPUTE_ONLY_FIELDS, ModelConfig, as_record
from bliss_jax.models.transformer import Transformer
from bliss_jax.training import (batch_prefetch, checkpoints, config_checks, evaluation, metric_writers,
                                model_vocabulary, optimizers, run_config, run_lock, run_loop)
from bliss_jax.training.model_dir import ModelDir
from bliss_jax.training.train_state import create_train_state
from bliss_jax.training.train_step import make_train_step


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer and schedule (see `optimizers.make_schedule` / `make_optimizer`)."""
  name: str = "adamw"
  peak_lr: float = 1e-3
  schedule: str = "cosine"
  warmup_steps: int = 100
  final_fraction: float = 0.1
  decay_fraction: float = 0.2
  decay_shape: str = "linear"
  halve_every: int = 0  # > 0: the schedule times 0.5^⌊step / halve_every⌋
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  clip_norm: Optional[float] = 1.0


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """One model's training recipe: shape, steps, global batch, sequence length, optimizer, seed and cadence.

  `eval_every`: held-out loss, perplexity and next-token accuracy every N steps and at the end (0: never);
  `checkpoint_every`: periodic checkpoints (the last step is always saved); `log_every`: metric rows and the
  progress bar. `batch_size` is the GLOBAL batch (split over processes, then over the "data" mesh axis); `seed`
  drives parameter initialisation and the per-step RNG (`fold_in(seed, step)`). `init_from`: a MODEL_DIR (e.g. a
  Hugging Face checkpoint imported with `scripts/import_hf.py`) whose latest parameters the run starts from instead
  of a random initialisation, with a fresh optimizer state at step 0; its `ModelConfig` must equal `model_config` but
  for `models.config.COMPUTE_ONLY_FIELDS`, and its recorded vocabulary the run's. Only a run without a checkpoint
  reads it: a resume continues from its own checkpoint, like any run.
  """
  model_config: ModelConfig
  num_steps: int
  batch_size: int = 16
  sequence_length: int = 128
  optimizer: OptimizerConfig = OptimizerConfig()
  eval_every: int = 0
  checkpoint_every: int = 100
  log_every: int = 10
  seed: int = 0
  init_from: Optional[str] = None

  def replace(self, **kw) -> "TrainSpec":
    return dataclasses.replace(self, **kw)

  def record(self) -> dict:
    """The spec as pipeline stages record it: its fields, the model's as `models.config.as_record` gives them, without
    `init_from` when it is None (so records written before the field existed still match)."""
    out = dict(dataclasses.asdict(self), model_config=as_record(self.model_config))
    if out["init_from"] is None:
      del out["init_from"]
    return out


@dataclasses.dataclass
class TrainResult:
  model_dir: str
  final_step: int
  last_train_metrics: dict
  last_eval: Optional[dict]


# A data source: (split, start_position, process_index, process_count, repeat) -> iterator with `.position` that yields
# per-process numpy batches of the SeqIO decoder features. `bliss_jax.data.pipeline` provides the SeqIO one. A source
# that reads SeqIO tasks names them in its attribute `seqio_tasks` (a tuple); one that wraps others names none itself
# (`source_tasks` finds theirs).
BatchSource = Callable[..., Iterator[dict]]


def source_tasks(batch_source: BatchSource) -> List[str]:
  """The SeqIO tasks or mixtures `batch_source` reads: its `seqio_tasks` and those of the sources it wraps (found
  through function closures, `functools.partial`s and `__wrapped__`), each once, in the order found."""
  found, seen = [], set()

  def visit(x, depth):
    if depth > 8 or id(x) in seen:
      return
    seen.add(id(x))
    found.extend(t for t in getattr(x, "seqio_tasks", None) or () if t not in found)
    inner = []
    if isinstance(x, functools.partial):
      inner = [x.func, *x.args, *x.keywords.values()]
    elif inspect.isfunction(x):
      for cell in x.__closure__ or ():
        try:
          inner.append(cell.cell_contents)
        except ValueError:  # an empty cell
          pass
    if hasattr(x, "__wrapped__"):
      inner.append(x.__wrapped__)
    for y in inner:
      if callable(y):
        visit(y, depth + 1)

  visit(batch_source, 0)
  return found


def round_up_vocab(n: int, multiple: int = 128) -> int:
  return -(-n // multiple) * multiple


@dataclasses.dataclass
class StepFunctions:
  """What a training run compiles: state init, the sharded train and eval steps, and the layouts they agree on."""
  model: Transformer
  init: Callable  # rng -> TrainState (jit with out_shardings=state_shardings)
  abstract_state: object  # TrainState of ShapeDtypeStructs carrying their shardings
  state_shardings: object
  train_step: Callable  # (state, global batch, base_rng, frozen) -> (state, metrics)
  eval_step: Callable  # (params, global batch) -> sums
  make_train_step: Callable = None  # loss_factory -> another jitted train step with the same layouts


def abstract_params(model_config: ModelConfig, mesh, rules, sequence_length: int = 8):
  """ShapeDtypeStructs (with their NamedShardings on `mesh`) of `Transformer(model_config)`'s parameters."""
  model = Transformer(model_config)
  dummy = jnp.zeros((1, sequence_length), jnp.int32)
  rng = jax.random.PRNGKey(0)
  boxed = jax.eval_shape(lambda r: model.init(r, dummy)["params"], rng)
  plain = jax.eval_shape(lambda r: nn.unbox(model.init(r, dummy)["params"]), rng)
  shardings = partitioning.shardings_for(boxed, plain, mesh, rules)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), plain, shardings)


def load_frozen_models(frozen_model_dirs: Dict[str, str], mesh, rules, *, vocab_size: Optional[int] = None,
                       task_vocab_size: Optional[int] = None, steps: Optional[Dict[str, Optional[int]]] = None,
                       vocabulary: Optional[dict] = None):
  """{name: Transformer}, {name: params} and {name: step} of frozen models (teachers, reference LMs) from their
  MODEL_DIRs' checkpoints (the latest, or `steps[name]`), each laid out on `mesh` by its own logical axis names.

  With `vocab_size` (the trained model's), every frozen model's vocabulary is checked first
  (`checkpoints.check_vocabulary`), also against `vocabulary` (the trained model's record) by fingerprint where the
  frozen model recorded one."""
  if vocab_size is not None:
    for name, model_dir in sorted(frozen_model_dirs.items()):
      checkpoints.check_vocabulary(name, model_dir, vocab_size, task_vocab_size, vocabulary)
  modules, params, loaded = {}, {}, {}
  for name, model_dir in sorted(frozen_model_dirs.items()):
    cfg = ModelDir(model_dir).read_model_config()
    loaded[name], params[name] = checkpoints.load_params(model_dir, abstract_params(cfg, mesh, rules),
                                                         step=(steps or {}).get(name))
    modules[name] = Transformer(cfg)
    logging.info("frozen model %r: %s at step %d", name, model_dir, loaded[name])
  return modules, params, loaded


def build_step_functions(model_config: ModelConfig, tx, schedule, mesh, rules, *, sequence_length: int,
                         loss_factory: Callable = make_lm_loss, num_microbatches: int = 1,
                         frozen_models: Optional[dict] = None, frozen_shardings=None) -> StepFunctions:
  """Abstract state and shardings from the model's logical axis names (no allocation), and the jitted steps.

  `frozen_models` ({name: module}) and `frozen_shardings` (matching the frozen parameters) make the train step take
  the frozen parameters as its fourth argument.

  Call inside `partitioning.mesh_context(mesh, rules)`.
  """
  model = Transformer(model_config)
  dummy = jnp.zeros((1, sequence_length), jnp.int32)

  def init_boxed(rng):
    return create_train_state(model.init(rng, dummy)["params"], tx)

  def init(rng):
    return create_train_state(nn.unbox(model.init(rng, dummy)["params"]), tx)

  rng = jax.random.PRNGKey(0)
  abstract = jax.eval_shape(init, rng)
  state_sh = partitioning.shardings_for(jax.eval_shape(init_boxed, rng), abstract, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
  batch_sh, repl = partitioning.batch_sharding(mesh), partitioning.replicated(mesh)

  def jit_train_step(factory):
    step_fn = make_train_step(factory(model, frozen_models or {}), tx, schedule=schedule,
                              num_microbatches=num_microbatches)
    return jax.jit(step_fn, in_shardings=(state_sh, batch_sh, repl, frozen_shardings),
                   out_shardings=(state_sh, repl), donate_argnums=(0,))

  train_step = jit_train_step(loss_factory)
  eval_step = jax.jit(evaluation.make_eval_step(model), in_shardings=(state_sh.params, batch_sh), out_shardings=repl)
  return StepFunctions(model, jax.jit(init, out_shardings=state_sh), abstract, state_sh, train_step, eval_step,
                       jit_train_step)


def _on_abstract_inputs(how: Callable, model_config: ModelConfig, *, batch_size: int, sequence_length: int,
                        num_steps: int, optimizer: OptimizerConfig, loss_factory: Callable,
                        frozen_configs: Optional[Dict[str, ModelConfig]], mesh, fsdp: bool, prefix_lm: bool):
  """`how(jitted train step, *abstract arguments)` for one sharded train step of `model_config` on `mesh`: the
  state, a batch, the rng and frozen models' parameters as ShapeDtypeStructs carrying their shardings."""
  mesh = mesh or partitioning.make_mesh()
  rules = partitioning.logical_rules(fsdp)
  tx, schedule = make_tx(optimizer, num_steps)
  with partitioning.mesh_context(mesh, rules):
    frozen_modules = {k: Transformer(c) for k, c in (frozen_configs or {}).items()}
    frozen = {k: abstract_params(c, mesh, rules, sequence_length) for k, c in (frozen_configs or {}).items()} or None
    frozen_sh = jax.tree.map(lambda x: x.sharding, frozen) if frozen else None
    fns = build_step_functions(model_config, tx, schedule, mesh, rules, sequence_length=sequence_length,
                               loss_factory=loss_factory, frozen_models=frozen_modules, frozen_shardings=frozen_sh)
    keys = ["decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids",
            "decoder_positions"] + (["decoder_causal_attention"] if prefix_lm else [])
    batch = {k: jax.ShapeDtypeStruct((batch_size, sequence_length), jnp.int32,
                                     sharding=partitioning.batch_sharding(mesh)) for k in keys}
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=partitioning.replicated(mesh))
    return how(fns.train_step, fns.abstract_state, batch, rng, frozen)


def abstract_train_step(model_config: ModelConfig, *, batch_size: int, sequence_length: int, num_steps: int = 1000,
                        optimizer: OptimizerConfig = OptimizerConfig(), loss_factory: Callable = make_lm_loss,
                        frozen_configs: Optional[Dict[str, ModelConfig]] = None, mesh=None, fsdp: bool = True,
                        prefix_lm: bool = False):
  """Trace one sharded train step of a (possibly paper-sized) configuration with `jax.eval_shape`: no parameter is
  allocated and nothing runs, but every shape, sharding rule and the loss's use of frozen models is checked.

  Returns (abstract new state, abstract metrics).
  """
  return _on_abstract_inputs(jax.eval_shape, model_config, batch_size=batch_size, sequence_length=sequence_length,
                             num_steps=num_steps, optimizer=optimizer, loss_factory=loss_factory,
                             frozen_configs=frozen_configs, mesh=mesh, fsdp=fsdp, prefix_lm=prefix_lm)


def compiled_train_step(model_config: ModelConfig, *, batch_size: int, sequence_length: int, num_steps: int = 1000,
                        optimizer: OptimizerConfig = OptimizerConfig(), loss_factory: Callable = make_lm_loss,
                        frozen_configs: Optional[Dict[str, ModelConfig]] = None, mesh=None, fsdp: bool = True,
                        prefix_lm: bool = False):
  """`abstract_train_step`'s step lowered and compiled for the current backend, still without allocating anything:
  its `memory_analysis()` gives the per-device buffer sizes XLA assigned (arguments, outputs, temporaries)."""
  return _on_abstract_inputs(lambda f, *args: f.lower(*args).compile(), model_config, batch_size=batch_size,
                             sequence_length=sequence_length, num_steps=num_steps, optimizer=optimizer,
                             loss_factory=loss_factory, frozen_configs=frozen_configs, mesh=mesh, fsdp=fsdp,
                             prefix_lm=prefix_lm)


def check_init_from(init_from: str, model_config: ModelConfig, vocabulary: Optional[dict]) -> None:
  """Refuse a MODEL_DIR `init_from` whose model is not `model_config` (any field but `COMPUTE_ONLY_FIELDS`, named) or
  whose recorded vocabulary is not `vocabulary` (the run's tasks', when known; `model_vocabulary.check`)."""
  theirs = ModelDir(init_from).read_model_config()
  diff = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in COMPUTE_ONLY_FIELDS and
          getattr(theirs, f.name) != getattr(model_config, f.name)]
  if diff:
    raise ValueError(
        f"init_from={init_from}: its model differs from this run's: " +
        ", ".join(f"ModelConfig.{k}={getattr(theirs, k)!r} there, {getattr(model_config, k)!r} here" for k in diff) +
        " (only " + ", ".join(sorted(COMPUTE_ONLY_FIELDS)) + " may differ; a layer layout is chosen at import: "
        "scripts/import_hf.py --scan_layers)")
  if vocabulary is not None:
    model_vocabulary.check(init_from, vocabulary, what=f"this run's data ({', '.join(vocabulary['tasks'])})")


def initial_state(fns: StepFunctions, tx, seed: int, init_from: Optional[str] = None):
  """A run's first train state: `fns.init` from `seed`, or the parameters of MODEL_DIR `init_from`'s latest checkpoint
  laid out by `fns.state_shardings`, with a fresh optimizer state at step 0."""
  if init_from is None:
    return fns.init(jax.random.PRNGKey(seed))
  step, params = checkpoints.load_params(init_from, fns.abstract_state.params)
  logging.info("starting from %s at step %d (init_from)", init_from, step)
  return jax.jit(lambda p: create_train_state(p, tx), out_shardings=fns.state_shardings)(params)


def make_tx(optimizer: OptimizerConfig, num_steps: int):
  """(optax transformation, schedule) for an `OptimizerConfig` over `num_steps`."""
  schedule = optimizers.make_schedule(
      optimizer.schedule, peak_lr=optimizer.peak_lr, total_steps=num_steps, warmup_steps=optimizer.warmup_steps,
      final_fraction=optimizer.final_fraction, decay_fraction=optimizer.decay_fraction,
      decay_shape=optimizer.decay_shape, halve_every=optimizer.halve_every)
  tx = optimizers.make_optimizer(optimizer.name, schedule=schedule, weight_decay=optimizer.weight_decay,
                                 b1=optimizer.b1, b2=optimizer.b2, clip_norm=optimizer.clip_norm)
  return tx, schedule


def train(*, model_dir: str, spec: TrainSpec, batch_source: BatchSource, vocab_size: Optional[int] = None,
          num_microbatches: int = 1, loss_factory: Callable = make_lm_loss, eval_batches: Optional[int] = 8,
          keep_checkpoints: Optional[int] = 3, mesh_data: int = -1, mesh_model: int = 1, fsdp: bool = False,
          devices=None, progress_bar: bool = True, stop_at_step: Optional[int] = None,
          frozen_model_dirs: Optional[Dict[str, str]] = None,
          loss_phases: Optional[Sequence[Tuple[int, Callable]]] = None,
          allow_config_change: Sequence[str] = (), extra_records: Optional[Dict[str, str]] = None,
          async_checkpoints: bool = True, prefetch_batches: int = 0) -> TrainResult:
  """Train `spec.model_config` on `batch_source` for `spec.num_steps` optimizer steps, resuming from MODEL_DIR if
  possible.

  Args:
    model_dir: checkpoints (`checkpoints/`), `metrics.jsonl`, `tensorboard/`, `model_config.json`, `run_config.json`
      and, for a source over SeqIO tasks, `vocabulary.json` (their vocabulary and names, `model_vocabulary`) go here
      (`model_dir.ModelDir`). The run holds MODEL_DIR/run.lock while it works: a second process is refused. A resume
      whose tasks have another vocabulary (fingerprint) than the recorded one is refused.
    spec: the model, steps, batch, optimizer, seed and cadence (`TrainSpec`). `vocab_size=None` in its model config
      is resolved from `vocab_size` (the task's vocabulary, padded up to a multiple of 128).
    batch_source: see `BatchSource`. It is asked for split "train" (repeating) and "validation" (not repeating). The
      SeqIO tasks it reads (`source_tasks`) must share one vocabulary.
    num_microbatches: gradient accumulation: the batch is processed in this many slices per optimizer step.
    loss_factory: `loss_factory(model, frozen_models) -> loss_fn(params, batch, rng, frozen) -> (loss, metrics)`.
    frozen_model_dirs: {name: MODEL_DIR} of frozen models the loss consults (a KD teacher, a RHO-1 reference model);
      their latest checkpoints are loaded, sharded on the same mesh, and passed to every step. Each must have this
      run's vocabulary (size, and the recorded fingerprint where both have one).
    loss_phases: [(last_step, loss_factory), ...] in increasing order: steps up to each `last_step` use that phase's
      loss, each compiled as its own step (so a phase whose loss ignores the frozen models never runs them — SALT's
      plain stage after KD); steps after the last phase use `loss_factory`. One optimizer state and schedule run
      across the switch, and resuming on either side picks the phase from the step.
    eval_batches: the held-out evaluation every `spec.eval_every` steps averages `eval_batches` batches of the
      validation split chosen uniformly at random over the whole split (`evaluation.sample_batches`, seed
      `evaluation.SAMPLE_SEED`; read once, at the first evaluation, and kept for the run: per process, its shard); None:
      the whole split at every evaluation; 0 disables. Every validation row of metrics.jsonl (and `last_eval`) says
      which in its field `eval_sample`.
    keep_checkpoints: the periodic and final checkpoints kept (None: all; see `checkpoints.RunCheckpoints`).
    async_checkpoints: write checkpoints in the background while training continues (False: each save blocks the
      loop until its files are on disk; the checkpoints are the same either way).
    prefetch_batches: training batches read and placed on the devices this many steps ahead, on a background
      thread (`batch_prefetch`), for a device whose step is shorter than the loop's host work; 0 (the default: on a
      2-core CPU the thread competes with the step) reads each in turn on the loop's thread while the device runs
      the step dispatched before. The batches and results are the same.
    mesh_data / mesh_model / fsdp: the device mesh and whether parameters are also sharded over "data".
    stop_at_step: leave after this step (checkpointed) although the schedule runs to `spec.num_steps`, as a pre-empted
      job would; rerunning continues from there.
    allow_config_change: recorded fields (`run_config`) a resume may change, e.g. ("optimizer.peak_lr",), ("data",)
      or ("num_steps",) (the schedule is then recomputed over the new `num_steps` from the current step on). Other
      changes are refused, as is `num_steps` below the latest checkpoint's step.
    extra_records: {file name: text} written into MODEL_DIR with the run's own records, once the command is known to
      be valid and compatible with the run (the CLI's `config.gin`).
  """
  model_config, num_steps, batch_size = spec.model_config, spec.num_steps, spec.batch_size
  sequence_length, optimizer, seed = spec.sequence_length, spec.optimizer, spec.seed
  eval_every = spec.eval_every
  config_checks.check_train(
      num_steps=num_steps, batch_size=batch_size, sequence_length=sequence_length,
      num_microbatches=num_microbatches, seed=seed, eval_every=eval_every, eval_batches=eval_batches,
      checkpoint_every=spec.checkpoint_every, keep_checkpoints=keep_checkpoints, log_every=spec.log_every,
      stop_at_step=stop_at_step, vocab_size=vocab_size, optimizer=optimizer,
      loss_phase_ends=[last for last, _ in loss_phases or ()])
  for name in extra_records or {}:
    if os.path.basename(name) != name or name in ("", ".", ".."):
      raise ValueError(f"extra_records: {name!r} is not a plain file name")
  if vocab_size is not None and model_config.vocab_size is not None and model_config.vocab_size < vocab_size:
    raise ValueError(f"model vocab_size={model_config.vocab_size} is smaller than the task vocabulary ({vocab_size} "
                     "ids incl. extra ids); use the same tokenizer or a larger vocab_size")
  if model_config.vocab_size is None:
    if vocab_size is None:
      raise ValueError("model_config.vocab_size is None and no task vocabulary size was given")
    model_config = dataclasses.replace(model_config, vocab_size=round_up_vocab(vocab_size))
  if batch_size % jax.process_count():
    raise ValueError(f"global batch_size={batch_size} is not divisible by {jax.process_count()} processes")
  model_dir = os.path.abspath(model_dir)
  run = ModelDir(model_dir)
  vocabulary = model_vocabulary.record_of_tasks(source_tasks(batch_source))
  init_from = os.path.abspath(spec.init_from) if spec.init_from else None
  mesh = partitioning.make_mesh(mesh_data, mesh_model, devices)
  if batch_size % mesh.shape["data"]:
    raise ValueError(f"global batch_size={batch_size} is not divisible by the data axis ({mesh.shape['data']})")
  rules = partitioning.logical_rules(fsdp)
  tx, schedule = make_tx(optimizer, num_steps)

  with run_lock.run_lock(model_dir, what="training run"), partitioning.mesh_context(mesh, rules), \
       contextlib.ExitStack() as stack:
    frozen_modules, frozen, frozen_steps = load_frozen_models(
        frozen_model_dirs or {}, mesh, rules, vocab_size=model_config.vocab_size, task_vocab_size=vocab_size,
        vocabulary=vocabulary)
    ckpts = stack.enter_context(checkpoints.RunCheckpoints(model_dir, keep_checkpoints,
                                                           async_save=async_checkpoints))
    record = {
        "model_config": as_record(model_config), "task_vocab_size": vocab_size, "batch_size": batch_size,
        "sequence_length": sequence_length, "num_microbatches": num_microbatches, "seed": seed,
        "num_steps": num_steps, "optimizer": dataclasses.asdict(optimizer),
        "loss": run_config.loss_schedule(loss_factory, loss_phases),
        "frozen_models": {k: {"model_config": as_record(frozen_modules[k].cfg), "step": frozen_steps[k]}
                          for k in frozen_modules},
        "data": run_config.describe(batch_source)}
    if vocabulary is not None:  # (a source whose vocabulary is unknown compares none)
      record["vocabulary_fingerprint"] = vocabulary["fingerprint"]
    if init_from is not None:
      record["init_from"] = init_from
    old_record = run.read_run_config()
    if ckpts.latest_step() is not None:
      if vocabulary is not None and "vocabulary_fingerprint" not in allow_config_change:
        model_vocabulary.check(model_dir, vocabulary, what=f"this run's data ({', '.join(vocabulary['tasks'])})")
      old = old_record or _legacy_record(run)
      diff = run_config.check_resume(old, record, ckpts.latest_step(), allow_config_change)
      for k, (a, b) in diff.items():
        logging.warning("resuming %s with a changed %s: %s -> %s (allowed)", model_dir, k, a, b)
    else:
      old_record, diff = None, {}
      if init_from is not None:
        check_init_from(init_from, model_config, vocabulary)
    frozen_sh = jax.tree.map(lambda x: x.sharding, frozen) if frozen else None
    fns = build_step_functions(model_config, tx, schedule, mesh, rules, sequence_length=sequence_length,
                               loss_factory=loss_factory, num_microbatches=num_microbatches,
                               frozen_models=frozen_modules, frozen_shardings=frozen_sh)
    frozen = frozen or None
    repl = partitioning.replicated(mesh)
    restored = ckpts.restore(fns.abstract_state)
    if restored is None:
      state = initial_state(fns, tx, seed, init_from)
      position = 0
    else:
      state, data = restored
      position = int(data["position"])
      logging.info("resumed from step %d (data position %d)", int(state.step), position)
    start_step = int(state.step)
    if jax.process_index() == 0:
      run.write_model_config(model_config)
      run.write_run_config(run_config.updated(old_record, record, diff, start_step))
      if vocabulary is not None:
        run.write_vocabulary(vocabulary)
      for name, text in (extra_records or {}).items():
        run_config.write_atomically(run.file(name), text)
    train_writer = metric_writers.make_writer(model_dir, "train", start_step=start_step)
    eval_writer = metric_writers.make_writer(model_dir, "validation", start_step=start_step)
    if jax.process_index() == 0 and start_step == 0:
      n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(fns.abstract_state.params))
      train_writer.write_hparams({"num_params": n_params, "vocab_size": model_config.vocab_size,
                                  "batch_size": batch_size, "sequence_length": sequence_length})

    base_rng = jax.device_put(jax.random.PRNGKey(seed + 1), repl)
    batches = stack.enter_context(batch_prefetch.placed_batches(
        batch_source("train", start_position=position, process_index=jax.process_index(),
                     process_count=jax.process_count(), repeat=True),
        lambda batch: partitioning.global_batch_from_local(batch, mesh), prefetch_batches))
    last_eval = heldout = None

    def run_eval(step, state):
      nonlocal last_eval, heldout
      if not eval_every or eval_batches == 0:
        return
      held = heldout
      if held is None:
        # Aligned before sampling: every process then draws the same indices of the same global batches, so the
        # sample is one sample of the split, not one per process.
        local = partitioning.aligned_over_processes(batch_source(
            "validation", start_position=0, process_index=jax.process_index(), process_count=jax.process_count(),
            repeat=False))
        held = evaluation.heldout(local, eval_batches)
        if eval_batches is not None:
          heldout = held  # the sample, kept for the run's later evaluations
      gbatches = (partitioning.global_batch_from_local(b, mesh) for b in held.batches)
      last_eval = dict(evaluation.evaluate(fns.eval_step, state.params, gbatches), eval_sample=held.estimator)
      eval_writer.write_scalars(step, last_eval)

    phases = [(last, fns.make_train_step(factory)) for last, factory in (loss_phases or ())]

    def step_fn(state, step):  # (1-based) optimizer step `step`, with its phase's loss
      fn = next((fn for last, fn in phases if step <= last), fns.train_step)
      try:
        batch = next(batches)
      except StopIteration:  # the stream repeats, so it ends only if the split yields no batch at all
        raise ValueError(f"the training data ({', '.join(source_tasks(batch_source)) or 'the batch source'}) yields "
                         f"no batch: its 'train' split is empty or shorter than one batch of {batch_size} x "
                         f"{sequence_length} tokens") from None
      return fn(state, batch, base_rng, frozen)

    def nonfinite(step, metrics):
      if np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"]):
        return None
      return f"non-finite loss {metrics['loss']} / grad norm {metrics['grad_norm']} at step {step}"

    last = run_loop.last_step(start_step, num_steps, stop_at_step)
    state, last_metrics = run_loop.run_loop(
        state, step_fn, first_step=start_step, last_step=last, num_steps=num_steps, checkpoints=ckpts,
        checkpoint_every=spec.checkpoint_every, checkpoint_data=lambda step: {"position": position + step - start_step},
        writer=train_writer, log_every=spec.log_every, nonfinite=nonfinite,
        unsaved="the state after step {step} holds non-finite parameters or optimizer state; not saved",
        advice="Lower the learning rate (a resume may change it with train.allow_config_change=('optimizer.peak_lr',)) "
               "or check the data, then rerun to resume.",
        desc="train", progress_bar=progress_bar,
        postfix=lambda m: {"loss": f"{m['loss']:.3f}", "tok_s": f"{m['tokens_per_sec']:.0f}"},
        # throughput counts every loss-carrying token processed (RHO-1 reports its selected ones as num_tokens)
        tokens=lambda m: m.get("num_valid_tokens", m.get("num_tokens", 0.0)),
        after_step=run_eval if eval_every else None, after_step_every=max(eval_every, 1))
    recorded = [r for r in run.metrics("validation") if r["step"] == num_steps] if start_step >= num_steps else []
    if recorded:  # a finished run, rerun: its final evaluation is the recorded one, not another row
      last_eval = {k: v for k, v in recorded[-1].items() if k not in ("step", "split")}
    elif last == num_steps and eval_every and (num_steps % eval_every or start_step >= num_steps):
      run_eval(num_steps, state)
    train_writer.flush()
    eval_writer.flush()
  del batches
  return TrainResult(model_dir=model_dir, final_step=last, last_train_metrics=last_metrics, last_eval=last_eval)


def _legacy_record(run: ModelDir) -> dict:
  """What a run written before run_config.json existed records: its model_config.json (if any)."""
  if not os.path.exists(run.model_config_path):
    return {}
  with open(run.model_config_path) as f:
    return {"model_config": json.load(f)}
