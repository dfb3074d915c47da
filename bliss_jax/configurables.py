"""The gin edge: library functions registered as gin configurables, under short names the configs use.

Library modules stay gin-free (plain Python functions and dataclasses); this module is imported by the scripts and is
the one place that decides what a `.gin` file can bind.
"""
import dataclasses
from typing import Optional

import gin

from bliss_jax.data import pipeline
from bliss_jax.data.synthetic import synthetic_source
from bliss_jax.losses.lm import make_lm_loss
from bliss_jax.models import config as model_config_lib
from bliss_jax.training import run_config, trainer


def model_config(preset: str = "tiny", vocab_size="task", **overrides) -> model_config_lib.ModelConfig:
  """A named preset with overrides; `vocab_size="task"` takes the task vocabulary's size (padded to 128)."""
  cfg = model_config_lib.preset(preset, **overrides)
  if vocab_size == "task":
    return dataclasses.replace(cfg, vocab_size=None)
  if vocab_size is not None:
    return dataclasses.replace(cfg, vocab_size=int(vocab_size))
  return cfg


def _gin_bindings(fn) -> Optional[dict]:
  """The parameters gin binds to configurable `fn` in the current scope, macros resolved to their values; None for a
  function gin does not know or binds nothing to."""
  try:
    return gin.get_bindings(fn) or None
  except ValueError:
    return None


run_config.bound_arguments = _gin_bindings  # a run's record then holds its gin-bound loss parameters

gin.external_configurable(model_config, "model_config")
gin.external_configurable(trainer.train, "train")
gin.external_configurable(trainer.TrainSpec, "TrainSpec")
gin.external_configurable(trainer.OptimizerConfig, "OptimizerConfig")
gin.external_configurable(make_lm_loss, "lm_loss")
gin.external_configurable(synthetic_source, "synthetic_source")
gin.external_configurable(pipeline.seqio_batch_source, "seqio_batch_source")
gin.external_configurable(pipeline.vocabulary_size, "vocabulary_size")

# RHO-1 (selective language modeling). pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.losses.selective import make_selective_loss  # noqa: E402
from bliss_jax.selection.reference_losses import reference_loss_source  # noqa: E402

gin.external_configurable(make_selective_loss, "selective_loss")
gin.external_configurable(reference_loss_source, "reference_loss_source")

# Method pipelines (scripts/run_pipeline.py --pipeline=NAME calls the configurable NAME).
from bliss_jax.pipelines import miniplm as _miniplm  # noqa: E402

gin.external_configurable(_miniplm.run, "miniplm")

# SALT (small-model-aided large-model training). pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.losses import salt as _salt_losses  # noqa: E402
from bliss_jax.pipelines import salt as _salt  # noqa: E402

gin.external_configurable(_salt_losses.make_salt_kd_loss, "salt_kd_loss")
gin.external_configurable(_salt_losses.omega_schedule, "salt_omega_schedule")
gin.external_configurable(_salt.run, "salt")

from bliss_jax.pipelines import rho1 as _rho1  # noqa: E402

gin.external_configurable(_rho1.run, "rho1")

# BLISS (bilevel influence scoring). pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.bilevel.step import BilevelConfig  # noqa: E402
from bliss_jax.pipelines import bliss as _bliss  # noqa: E402

gin.external_configurable(BilevelConfig, "BilevelConfig")
gin.external_configurable(_bliss.run, "bliss")

from bliss_jax.pipelines.mates import MatesScorer  # noqa: E402

gin.external_configurable(MatesScorer, "MatesScorer")

# What a selection holds: `salt.selection_report = @benchmark_selection_reporter()` (likewise `bliss.`).
# pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data import composition as _composition  # noqa: E402
from bliss_jax.data.benchmark import reports as _benchmark_reports  # noqa: E402

gin.external_configurable(_benchmark_reports.selection_reporter, "benchmark_selection_reporter")


COMPOSITIONS = ("doc_prefix", "embedded", "benchmark", "local_mixture")


def selection_reporter(composition: Optional[str], task: Optional[str] = None
                       ) -> Optional[_composition.SelectionReporter]:
  """The reporter a composition is named by: "benchmark" (the benchmark catalog's domain, quality and target-like
  share, and its per-document report), "embedded" (the embedded mixture's catalog likewise), "doc_prefix" (the
  document id up to its first ":", e.g. the embedded default corpus's pydoc / stdlib, or a local task's sources),
  "local_mixture" (the sources of `task`, a mixture registered by `register_local_mixture`, with its target-like
  ones; `data.local_mixture`) or None."""
  if composition is None:
    return None
  if composition == "local_mixture":
    from bliss_jax.data import local_mixture  # pylint: disable=g-import-not-at-top
    mixture = local_mixture.registered(task) if task else None
    if mixture is None:
      raise ValueError(f"composition='local_mixture' describes a mixture registered by register_local_mixture, and "
                       f"the stream {task!r} is not one")
    return mixture.selection_reporter()
  if composition == "embedded":
    from bliss_jax.data import embedded_mixture  # pylint: disable=g-import-not-at-top
    return embedded_mixture.selection_reporter()
  if composition == "doc_prefix":
    return _composition.SelectionReporter(labellers=_composition.doc_prefix_labellers)
  if composition == "benchmark":
    return _benchmark_reports.selection_reporter()
  raise ValueError(f"composition={composition!r}: expected None or one of {COMPOSITIONS}")


# The comparison of every method (scripts/compare.py). pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.pipelines import compare as _compare  # noqa: E402


def compare(*, composition: Optional[str] = None, **kwargs) -> dict:
  """`compare.run` with the composition named (`selection_reporter`; "local_mixture": `train_task`'s sources)."""
  return _compare.run(composition=selection_reporter(composition, kwargs.get("train_task")), **kwargs)


compare.__wrapped__ = _compare.run  # gin checks the bindings of `compare` against `compare.run`'s parameters
gin.external_configurable(compare, "compare")
