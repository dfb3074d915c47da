"""Held-out loss, perplexity and next-token accuracy of a model on batches of a SeqIO split, and which batches.

The jit-compiled step returns sums (CE, correct predictions, tokens), which add across batches; the host divides once
at the end, so the result is the exact token-mean over the batches evaluated however they were batched.

Those batches are the whole split, or, under a limit of k batches, a seeded uniform choice of k of the split's n
batches read once in order (`sample_batches`, `sampling.reservoir_sample`), so a split whose files hold different
sources is sampled across all of them, not cut after its first files. `estimator` says which, in the words every
record uses.
"""
import math
from typing import Callable, Iterable, List, NamedTuple, Optional

import jax
import numpy as np

from bliss_jax.losses.lm import model_logits, next_token_metrics
from bliss_jax.sampling import reservoir_sample


def make_eval_step(model) -> Callable:
  """`eval_step(params, batch) -> {"ce_sum", "correct_sum", "num_tokens"}`, ready for `jax.jit`."""
  def eval_step(params, batch):
    return next_token_metrics(model_logits(model, params, batch), batch)
  return eval_step


def summarize(sums: dict) -> dict:
  """{"loss", "perplexity", "accuracy", "num_tokens"} from accumulated sums."""
  n = float(sums["num_tokens"])
  if n == 0:
    raise ValueError("evaluation saw no loss-carrying tokens")
  loss = float(sums["ce_sum"]) / n
  return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": float(sums["correct_sum"]) / n,
          "num_tokens": n}


def evaluate(eval_step: Callable, params, batches: Iterable[dict]) -> dict:
  """Run a (jitted) `eval_step` over `batches` (already device arrays) and summarize."""
  totals = {"ce_sum": 0.0, "correct_sum": 0.0, "num_tokens": 0.0}
  for batch in batches:
    out = jax.device_get(eval_step(params, batch))
    for k in totals:
      totals[k] += float(np.asarray(out[k], np.float64))
  return summarize(totals)


SAMPLE_SEED = 0  # one held-out sample for every run and method evaluated on the same split and batching


class BatchSample(NamedTuple):
  """`max_batches` batches chosen from a split of `num_batches`, at `indices` (ascending)."""
  batches: List[dict]
  indices: List[int]
  num_batches: int
  max_batches: int
  seed: int

  def estimator(self) -> str:
    return estimator(self.max_batches, self.num_batches, self.seed)


def sample_batches(batches: Iterable[dict], max_batches: int, seed: int = SAMPLE_SEED) -> BatchSample:
  """A uniform random choice of `max_batches` of the n batches of `batches` (all of them when n <= max_batches),
  reading them once and holding only the chosen ones (`sampling.reservoir_sample`), so the same batches and seed
  give the same choice. Returned in their order."""
  sample = reservoir_sample(batches, max_batches, seed)
  return BatchSample(sample.items, sample.indices, sample.n, max_batches, seed)


class HeldOut(NamedTuple):
  """Held-out batches and the estimator they make (`estimator`)."""
  batches: Iterable[dict]
  estimator: str


def heldout(batches: Iterable[dict], max_batches: Optional[int]) -> HeldOut:
  """The batches a held-out number averages: all of `batches` (streamed) when `max_batches` is None, else
  `sample_batches(batches, max_batches)` (read once, held in memory)."""
  if max_batches is None:
    return HeldOut(batches, estimator(None))
  sample = sample_batches(batches, max_batches)
  return HeldOut(sample.batches, sample.estimator())


def estimator(max_batches: Optional[int], num_batches: Optional[int] = None, seed: int = SAMPLE_SEED) -> str:
  """Which batches a held-out number averages, as records and printed output state it: "whole split" (with its
  batch count when known), or "k of n batches, a seeded uniform sample over the split (seed s)"."""
  if max_batches is None or (num_batches is not None and num_batches <= max_batches):
    return "whole split" if num_batches is None else f"whole split ({num_batches} batches)"
  return f"{max_batches} of {num_batches} batches, a seeded uniform sample over the split (seed {seed})"
