"""Metrics as lm-evaluation-harness computes them: per-item scores, then means and standard errors.

Multiple choice, with ℓ_i the summed log-likelihood of choice i and |s_i| the length of its string in characters:

  acc      = 1[argmax_i ℓ_i = gold],      acc_norm = 1[argmax_i ℓ_i / |s_i| = gold],

argmax taking the FIRST maximal index on ties (numpy's rule, which the harness uses). LAMBADA: acc = the mean of the
greedy flags, and perplexity = exp(−mean over items of Σ log p(word tokens)) — the harness's `perplexity`
aggregation, a per-word (per-item) perplexity, not a per-token one. Standard errors are the harness's: for means,
sample standard deviation (n − 1) / √n; for perplexity (the harness bootstraps it) the delta method,
ppl · stderr(per-item log-likelihood).

Generative tasks: a filter reduces each response to its answer (`regex_extract`, the harness's `regex` +
`take_first`), and exact_match = 1[norm(answer) = norm(target)], with norm the harness's `exact_match` options.
"""
import math
import re
import string
from typing import Callable, Sequence

import numpy as np


def mean_stderr(values: Sequence[float]) -> float:
  """sqrt(Σ (x − x̄)² / (n − 1)) / √n; NaN for n < 2."""
  x = np.asarray(values, np.float64)
  if x.size < 2:
    return float("nan")
  return float(np.std(x, ddof=1) / math.sqrt(x.size))


def multiple_choice_scores(loglikelihoods: Sequence[Sequence[float]], choices: Sequence[Sequence[str]],
                           golds: Sequence[int]) -> dict:
  """Per-item {"acc", "acc_norm"} arrays (0/1) from each item's choice log-likelihoods and choice strings."""
  acc, acc_norm = [], []
  for lls, strings, gold in zip(loglikelihoods, choices, golds, strict=True):
    lls = np.asarray(lls, np.float64)
    if lls.shape != (len(strings),):
      raise ValueError(f"{lls.shape[0]} log-likelihoods for {len(strings)} choices")
    lengths = np.array([float(len(s)) for s in strings])
    acc.append(float(np.argmax(lls) == gold))
    acc_norm.append(float(np.argmax(lls / lengths) == gold))
  return {"acc": np.array(acc), "acc_norm": np.array(acc_norm)}


def lambada_scores(logprobs: Sequence[float], is_greedy: Sequence[bool]) -> dict:
  """{"acc", "acc_stderr", "perplexity", "perplexity_stderr"} of LAMBADA items (see module docstring)."""
  ll = np.asarray(logprobs, np.float64)
  greedy = np.asarray(is_greedy, np.float64)
  ppl = math.exp(min(-float(ll.mean()), 700.0))
  return {"acc": float(greedy.mean()), "acc_stderr": mean_stderr(greedy), "perplexity": ppl,
          "perplexity_stderr": ppl * mean_stderr(ll)}


def summarize(per_item: dict) -> dict:
  """{name: mean, name + "_stderr": stderr} for each per-item metric array."""
  out = {}
  for name, values in per_item.items():
    out[name] = float(np.mean(values))
    out[name + "_stderr"] = mean_stderr(values)
  return out


def regex_extract(pattern: str, group_select: int = 0, fallback: str = "[invalid]") -> Callable[[str], str]:
  """The harness's `regex` filter on one response: match number `group_select` of `re.findall(pattern)` (of a
  pattern with several groups, the first non-empty one), stripped; `fallback` when nothing matches."""
  regex = re.compile(pattern)

  def extract(response: str) -> str:
    matches = regex.findall(response)
    if not matches:
      return fallback
    match = matches[group_select]
    if isinstance(match, tuple):
      match = next((m for m in match if m), fallback)
    return match.strip()

  return extract


def exact_match(predictions: Sequence[str], references: Sequence[str], regexes_to_ignore: Sequence[str] = (),
                ignore_case: bool = False, ignore_punctuation: bool = False) -> np.ndarray:
  """Per-item 1[norm(prediction) = norm(reference)], norm = every regex of `regexes_to_ignore` removed in turn
  (`re.sub`), then lower-cased, then punctuation deleted, as the options say (the harness's `exact_match`)."""
  def norm(text: str) -> str:
    for regex in regexes_to_ignore:
      text = re.sub(regex, "", text)
    if ignore_case:
      text = text.lower()
    if ignore_punctuation:
      text = text.translate(str.maketrans("", "", string.punctuation))
    return text

  return np.array([float(norm(p) == norm(r)) for p, r in zip(predictions, references, strict=True)])
