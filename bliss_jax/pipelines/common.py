"""Pieces every method pipeline shares: train a model for a stage, evaluate it on a fixed held-out split, draw the
candidate pool, count FLOPs.

`trainer.TrainSpec` is what a pipeline needs to know to train one model (shape, steps, batch, optimizer); the data,
loss and frozen models are given per stage. All training goes through `trainer.train`, so every stage resumes from its
checkpoints when a pipeline is rerun.

A selection (a list of `doc_id#chunk_index` keys of the pool split) is trained from a chunk store of that split
(`pool_store`, written once under the pipeline's shared root and reused) through `selection_source`: the batches the
selection's packed SeqIO task gave, read by index (`selection.selected_task.selected_store_source`).

Limits on the held-out set (`max_batches`) and on the pool (`max_examples`) take seeded uniform samples over the whole
split (`evaluation.sample_batches`, `pool_keys`), never its first batches or examples in file order, which on a split
made of several sources would hold only the first ones; every held-out result names its estimator (`eval_sample`).
"""
import functools
import os
from typing import Callable, Dict, List, Optional

import jax
import seqio
from jax.experimental import multihost_utils

from bliss_jax import partitioning
from bliss_jax.data import pipeline as data_pipeline
from bliss_jax.data.chunk_store import ChunkStore, write_chunk_store
from bliss_jax.data.keyed import iter_example_keys
from bliss_jax.losses.lm import make_lm_loss
from bliss_jax.models.config import ModelConfig, count_params
from bliss_jax.models.flops import forward_flops_per_token, train_flops_per_token
from bliss_jax.models.transformer import Transformer
from bliss_jax.sampling import proportional_counts, reservoir_sample
from bliss_jax.selection.selected_task import selected_store_source
from bliss_jax.training import checkpoints, evaluation, run_config, trainer
from bliss_jax.training.model_dir import ModelDir
from bliss_jax.training.run_lock import run_lock


def train_on_task(model_dir: str, spec: trainer.TrainSpec, task: str, *, loss_factory: Callable = make_lm_loss,
                  frozen_model_dirs: Optional[Dict[str, str]] = None, progress_bar: bool = True,
                  stop_at_step: Optional[int] = None, keep_checkpoints: Optional[int] = 3,
                  batch_source: Optional[Callable] = None) -> dict:
  """Train `spec` on SeqIO `task` (train split, packed) into `model_dir`; returns the model dir and its cost.
  `keep_checkpoints`: periodic checkpoints kept (None: all, for evaluating the run's curve afterwards).
  `batch_source`, when given, is read instead of the task's packed stream (e.g. `selected_task.selected_store_source`
  over a chunk store of `task`'s examples); the task still gives the vocabulary."""
  source = batch_source or data_pipeline.seqio_batch_source(
      task, batch_size=spec.batch_size, sequence_length=spec.sequence_length, seed=spec.seed)
  result = trainer.train(
      model_dir=model_dir, spec=spec, batch_source=source, vocab_size=data_pipeline.vocabulary_size(task),
      loss_factory=loss_factory, progress_bar=progress_bar, frozen_model_dirs=frozen_model_dirs,
      stop_at_step=stop_at_step, keep_checkpoints=keep_checkpoints)
  cfg = ModelDir(model_dir).read_model_config()
  tokens = spec.num_steps * spec.batch_size * spec.sequence_length
  return {"model_dir": model_dir, "steps": result.final_step, "tokens": tokens,
          "train_flops": train_flops_per_token(cfg, spec.sequence_length) * tokens,
          "num_params": count_params(cfg)}


POOL_STORE_SHARDS = 1  # the pipelines' pools are small; a corpus is written in more shards, by many processes


def pool_store(root: str, task: str, split: str, sequence_length: int) -> ChunkStore:
  """The chunk store of `task:split` at `sequence_length`, ROOT/chunk_stores/<task>.<split>.L<length>: written on
  first use (every process its shards, then a barrier; resumable by shard), reused when complete. Another job
  writing it (a comparison's seed run as its own process) is waited for (`<directory>.lock`), not written over."""
  directory = os.path.join(root, "chunk_stores", f"{task}.{split}.L{sequence_length}")
  write = functools.partial(write_chunk_store, directory, task, split, sequence_length, num_shards=POOL_STORE_SHARDS,
                            process_index=jax.process_index(), process_count=jax.process_count())
  with run_lock(os.path.dirname(directory), os.path.basename(directory) + ".lock", what="chunk store write",
                wait=True):
    write()
  if jax.process_count() > 1:  # every process, whether its shards were the last or not
    multihost_utils.sync_global_devices(f"pool_store:{directory}")
    write()  # every shard is written: completes the manifest
  return ChunkStore(directory)


def selection_source(store: ChunkStore, keys: List[str], spec: trainer.TrainSpec, seed: Optional[int] = None):
  """A `BatchSource` training `spec` on the chunks `keys` of `store` (`pool_store`): the batches of the selection's
  packed SeqIO task for `spec.batch_size` and `seed` (default `spec.seed`); validation is the store task's."""
  if spec.sequence_length != store.manifest["sequence_length"]:
    raise ValueError(f"a {spec.sequence_length}-token model trained on chunks of "
                     f"{store.manifest['sequence_length']} tokens ({store.store_dir})")
  return selected_store_source(store.store_dir, keys, batch_size=spec.batch_size,
                               seed=spec.seed if seed is None else seed, store=store)


def forward_flops(model_dir: str, sequence_length: int, tokens: int) -> float:
  """FLOPs of running the model in `model_dir` forward over `tokens` tokens (scoring, teacher forwards)."""
  return forward_flops_per_token(ModelDir(model_dir).read_model_config(), sequence_length) * tokens


POOL_SAMPLE_SEED = 0  # one pool sample for every method drawing from the same split


def pool_keys(task: str, split: str, sequence_length: int, max_examples: Optional[int] = None) -> List[str]:
  """The candidate pool of `task:split` as example keys: all of them in split order, or `max_examples` drawn uniformly
  from the whole split, read once (`sampling.reservoir_sample`, seed `POOL_SAMPLE_SEED`; memory for `max_examples`
  keys, however large the split).

  A SeqIO mixture's pool is drawn in its mixing rates, the distribution its stream is sampled from: of each task of
  rate r_i > 0, c_i of its examples (a seeded uniform sample, in its order; tasks in the mixture's order), the c_i in
  the proportions of the rates and as many as the tasks (and `max_examples`) allow (`sampling.proportional_counts`).
  Natural rates keep almost every example; skewed ones keep fewer, so that the pool is not a cleaner or dirtier
  distribution than what the stream trains on."""
  provider = seqio.get_mixture_or_task(task)
  if not isinstance(provider, seqio.Mixture):
    keys = iter_example_keys(task, split, sequence_length)
    return list(keys) if max_examples is None else reservoir_sample(keys, max_examples, POOL_SAMPLE_SEED).items
  tasks = [t for t in provider.tasks if provider.get_rate(t) > 0]
  per_task = [list(iter_example_keys(t.name, split, sequence_length)) for t in tasks]
  counts = proportional_counts([len(k) for k in per_task], [provider.get_rate(t) for t in tasks], max_examples)
  return [key for keys, c in zip(per_task, counts) if c > 0
          for key in reservoir_sample(keys, c, POOL_SAMPLE_SEED).items]


def pool_subset_keys(task: str, split: str, sequence_length: int, max_examples: Optional[int] = None
                     ) -> Optional[List[str]]:
  """`pool_keys`, or None where the pool is the whole split (a task without a limit): what a scorer that reads the
  whole split by default is given."""
  if max_examples is None and not isinstance(seqio.get_mixture_or_task(task), seqio.Mixture):
    return None
  return pool_keys(task, split, sequence_length, max_examples)


def pool_sample_inputs(max_examples: Optional[int]) -> dict:
  """What a stage that reads the pool records of its limit: {"max_examples", "sample_seed"}, nothing without one."""
  return {} if max_examples is None else {"max_examples": max_examples, "sample_seed": POOL_SAMPLE_SEED}


def heldout_eval(model_dir: str, task: str, split: str = "validation", *, sequence_length: int = 128,
                 batch_size: int = 16, max_batches: Optional[int] = None) -> dict:
  """Loss, perplexity and next-token accuracy of a MODEL_DIR's latest checkpoint on every token of `task:split` (or of
  `max_batches` batches sampled over it), with its estimator (`heldout_batches`)."""
  return heldout_at_step(model_dir, None, task, split, sequence_length=sequence_length, batch_size=batch_size,
                         max_batches=max_batches)


def load_frozen(model_dir: str, mesh=None, step: Optional[int] = None):
  """(module, params) of a frozen model at its latest checkpoint (or `step`), parameters laid out on `mesh` (default:
  all devices on "data")."""
  mesh = mesh or partitioning.make_mesh()
  rules = partitioning.logical_rules()
  modules, params, _ = trainer.load_frozen_models({"m": model_dir}, mesh, rules, steps={"m": step})
  return modules["m"], params["m"]


def write_json(path: str, obj) -> str:
  """Write `obj` to `path` atomically (creating its directory); returns `path`."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  run_config.write_json(path, obj)
  return path


def latest_step(model_dir: str) -> int:
  """The newest finished checkpoint's step under MODEL_DIR/checkpoints (0 if none)."""
  return ModelDir(model_dir).latest_step() or 0


def heldout_batches(task: str, split: str = "validation", *, sequence_length: int, batch_size: int,
                    max_batches: Optional[int] = None) -> evaluation.HeldOut:
  """The held-out batches of `task:split`, unpacked and unshuffled, as `heldout_at_step` evaluates them (prefix-LM
  features for tasks with inputs): the whole split in order (streamed), or `max_batches` of them chosen uniformly over
  the whole split (`evaluation.sample_batches`, read once, in split order)."""
  converter = "prefix_lm" if "inputs" in seqio.get_mixture_or_task(task).output_features else "decoder"
  ds = data_pipeline.get_dataset(task, split, sequence_length, batch_size, shuffle=False, seed=0, repeat=False,
                                 feature_converter=converter, drop_remainder=False)
  return evaluation.heldout(ds.as_numpy_iterator(), max_batches)


def heldout_sample_inputs(max_batches: Optional[int]) -> dict:
  """What a stage that evaluates on the held-out set records of its limit: the sample's seed, nothing without one."""
  return {} if max_batches is None else {"eval_sample_seed": evaluation.SAMPLE_SEED}


@functools.lru_cache(maxsize=None)
def _jitted_eval_step(cfg: ModelConfig):
  """One compiled evaluation step per model shape, shared by every checkpoint of that shape evaluated here."""
  return jax.jit(evaluation.make_eval_step(Transformer(cfg)))


def heldout_at_step(model_dir: str, step: Optional[int], task: str, split: str = "validation", *, sequence_length: int,
                    batch_size: int, max_batches: Optional[int] = None,
                    heldout: Optional[evaluation.HeldOut] = None) -> dict:
  """Loss, perplexity, next-token accuracy and token count of MODEL_DIR's checkpoint at `step` on every loss-carrying
  token of `task:split` (or of `max_batches` batches sampled over it; prefix-LM features for tasks with inputs), plus
  `step` (None: the latest checkpoint) and `eval_sample` (the estimator). `heldout`: those batches, already read
  (`heldout_batches`, with a list of batches), to evaluate many checkpoints on one read of the split."""
  cfg = ModelDir(model_dir).read_model_config()
  step, params = checkpoints.load_params(model_dir, step=step)
  if heldout is None:
    heldout = heldout_batches(task, split, sequence_length=sequence_length, batch_size=batch_size,
                              max_batches=max_batches)
  return dict(evaluation.evaluate(_jitted_eval_step(cfg), params, heldout.batches), step=step,
              eval_sample=heldout.estimator)
