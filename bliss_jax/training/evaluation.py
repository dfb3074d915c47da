"""Held-out loss, perplexity and next-token accuracy of a model on batches of a SeqIO split.

The jit-compiled step returns sums (CE, correct predictions, tokens), which add across batches; the host divides once
at the end, so the result is the exact token-mean over the whole split however it was batched.
"""
import math
from typing import Callable, Iterable

import jax
import numpy as np

from bliss_jax.losses.lm import model_logits, next_token_metrics


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
