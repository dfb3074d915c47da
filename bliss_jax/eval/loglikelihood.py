"""Batched, jit-compiled log-likelihood of continuations given contexts, in lm-evaluation-harness conventions.

For a (context, continuation) pair of token lists, with the continuation c_1..c_m after context x,

  logprob = Σ_{j=1..m} log p(c_j | x, c_<j),   num_tokens = m,   is_greedy = ∀j: c_j = argmax_v p(v | x, c_<j).

Each pair is one row, as the harness packs it: the sequence x ++ c is cut to its last `max_length + 1` tokens (the
context, its start id first, is left-truncated), the row's inputs are all but its last token and its targets all but
its first, and the last m target positions carry the continuation. Rows are right-padded (segment id 0, which attends
only to padding) to a length bucket and batches to `batch_size` rows, so a handful of shapes (one per bucket) are
compiled once and reused for every task.

Tokenisation (`encode_pair`) is the harness's `_encode_pair` for a tokenizer that prepends a BOS: trailing whitespace
of the context moves to the front of the continuation, continuation = encode(context + continuation)[len(encode(
context)):], and the context is `[START_ID] + encode(context)`, or `[START_ID]` alone when empty. `START_ID` = 0 is
what every training example starts with: SeqIO's decoder inputs are the targets shifted right behind a 0 (the pad
id). So a row is laid out as training lays out a document (0, then its tokens), and as lm-evaluation-harness lays it
out for the Hugging Face export, whose tokenizer prepends 0 as its BOS (`bliss_jax.export.hf`).
"""
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from bliss_jax import partitioning
from bliss_jax.losses.lm import token_cross_entropy

TokenPair = Tuple[Sequence[int], Sequence[int]]
START_ID = 0  # SeqIO's shifted-right decoder inputs begin every example with the pad id 0.


class LoglikelihoodResult(NamedTuple):
  """Σ log p of the continuation's tokens, their number, and whether greedy decoding would produce them all."""
  logprob: float
  num_tokens: int
  is_greedy: bool


def encode_pair(vocabulary, context: str, continuation: str,
                start_id: Optional[int] = START_ID) -> Tuple[List[int], List[int]]:
  """Token ids of (context, continuation), harness style (see module docstring): the context ids begin with
  `start_id`, and an empty context is `[start_id]`.

  `vocabulary` needs `encode(str) -> list[int]` and `eos_id` (any seqio vocabulary). `start_id=None` prepends
  nothing and puts `eos_id` before an empty continuation, the harness's layout for a tokenizer without a BOS.
  """
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces:
    context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
  start = [] if start_id is None else [start_id]
  if not context:
    return start or [vocabulary.eos_id], list(vocabulary.encode(continuation))
  whole = list(vocabulary.encode(context + continuation))
  context_ids = list(vocabulary.encode(context))
  return start + context_ids, whole[len(context_ids):]


def row_length(pair: TokenPair, max_length: int) -> int:
  """Input positions the pair needs: len(context) + len(continuation) - 1, at most `max_length`."""
  return min(len(pair[0]) + len(pair[1]) - 1, max_length)


def pack_rows(pairs: Sequence[TokenPair], batch_size: int, length: int) -> dict:
  """A batch of `batch_size` rows of `length` tokens (module docstring), rows past `len(pairs)` all padding.

  Returns int32 `inputs`, `targets`, `segment_ids` and float32 `weights` (1 on the continuation's targets).
  """
  batch = {k: np.zeros((batch_size, length), np.int32) for k in ("inputs", "targets", "segment_ids")}
  batch["weights"] = np.zeros((batch_size, length), np.float32)
  for i, (context, continuation) in enumerate(pairs):
    if not continuation:
      raise ValueError(f"pair {i}: empty continuation (nothing to score)")
    if not context:
      raise ValueError(f"pair {i}: empty context (it holds at least the start id, as encode_pair makes it)")
    if len(continuation) > length:
      raise ValueError(f"pair {i}: continuation of {len(continuation)} tokens does not fit in {length} positions")
    seq = (list(context) + list(continuation))[-(length + 1):]
    n = len(seq) - 1
    batch["inputs"][i, :n] = seq[:-1]
    batch["targets"][i, :n] = seq[1:]
    batch["segment_ids"][i, :n] = 1
    batch["weights"][i, n - len(continuation):n] = 1.0
  return batch


def make_loglikelihood_step(model) -> Callable:
  """`step(params, batch) -> {"logprob", "num_tokens", "is_greedy"}` (each [B]) on a `pack_rows` batch, for jit."""

  def step(params, batch):
    logits = model.apply({"params": params}, batch["inputs"], segment_ids=batch["segment_ids"])
    weights = batch["weights"]
    logprob = -token_cross_entropy(logits, batch["targets"])
    greedy = (jnp.argmax(logits, -1) == batch["targets"]) | (weights == 0)
    return {"logprob": jnp.sum(logprob * weights, -1), "num_tokens": jnp.sum(weights, -1).astype(jnp.int32),
            "is_greedy": jnp.all(greedy, -1)}

  return step


def default_length_buckets(max_length: int, smallest: int = 64) -> Tuple[int, ...]:
  """Powers of two from `smallest` below `max_length`, then `max_length`: at most ~log2(max_length) shapes."""
  buckets, b = [], smallest
  while b < max_length:
    buckets.append(b)
    b *= 2
  return tuple(buckets) + (max_length,)


def make_token_scorer(model, params, *, batch_size: int = 32, max_length: int = 2048,
                      length_buckets: Optional[Sequence[int]] = None, mesh: Optional[Mesh] = None,
                      rules=None, progress: bool = True,
                      step_fn: Optional[Callable] = None) -> Callable[[Sequence[TokenPair]], List[LoglikelihoodResult]]:
  """`score(pairs) -> [LoglikelihoodResult]` for (context ids, continuation ids) pairs, in the order given.

  The pairs are scored as given: context ids begin with the start id (`encode_pair` makes them so).

  Args:
    model, params: a `Transformer` and its (unboxed) parameters.
    batch_size: rows per forward pass; the last batch is padded to it. With `mesh`, a multiple of its "data" size.
    max_length: longest row (the model's context length); longer pairs lose the start of their context.
    length_buckets: row lengths to pad to (the smallest that fits each batch); default `default_length_buckets`.
      `(max_length,)` compiles a single shape.
    mesh: shard each batch over the mesh's "data" axis (parameters replicated unless already on the mesh);
      every process must call `score` with the same pairs.
    rules: logical-axis rules for tracing on `mesh` (default `partitioning.logical_rules()`).
    progress: show a tqdm bar over the pairs.
    step_fn: an already jitted `make_loglikelihood_step(model)` to share its compilations between scorers.
  """
  buckets = tuple(sorted(set(length_buckets or default_length_buckets(max_length))))
  if buckets[-1] != max_length:
    raise ValueError(f"length_buckets {buckets} must end at max_length={max_length}")
  if mesh is not None:
    data = mesh.shape["data"]
    if batch_size % data:
      raise ValueError(f"batch_size={batch_size} is not a multiple of the mesh's data axis ({data})")
    params = partitioning.replicate_params(params, mesh)
    rules = partitioning.logical_rules() if rules is None else rules
  if step_fn is None:
    step = make_loglikelihood_step(model)
    step_fn = jax.jit(step) if mesh is None else jax.jit(step, out_shardings=partitioning.replicated(mesh))

  def run(batch):
    if mesh is None:
      return step_fn(params, batch)
    sharding = partitioning.batch_sharding(mesh)
    with partitioning.mesh_context(mesh, rules):
      return step_fn(params, {k: partitioning.global_array(v, sharding) for k, v in batch.items()})

  def score(pairs: Sequence[TokenPair]) -> List[LoglikelihoodResult]:
    lengths = [row_length(p, max_length) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda i: -lengths[i])  # longest first: similar lengths share a batch
    results: List[Optional[LoglikelihoodResult]] = [None] * len(pairs)
    with tqdm(total=len(pairs), desc="loglikelihood", disable=not progress, leave=False) as bar:
      for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        length = next(b for b in buckets if b >= max(lengths[i] for i in idx))
        out = jax.device_get(run(pack_rows([pairs[i] for i in idx], batch_size, length)))
        for row, i in enumerate(idx):
          results[i] = LoglikelihoodResult(float(out["logprob"][row]), int(out["num_tokens"][row]),
                                           bool(out["is_greedy"][row]))
        bar.update(len(idx))
    return results

  return score


def make_score_fn(model, params, vocabulary, *, start_id: Optional[int] = START_ID,
                  **kwargs) -> Callable[[Sequence[Tuple[str, str]]], List[LoglikelihoodResult]]:
  """`score_fn(pairs of (context, continuation) strings) -> [LoglikelihoodResult]`: `encode_pair(..., start_id)`,
  then `make_token_scorer(model, params, **kwargs)`. This is the score function `harness.run_eval` takes."""
  token_scorer = make_token_scorer(model, params, **kwargs)

  def score_fn(pairs: Sequence[Tuple[str, str]]) -> List[LoglikelihoodResult]:
    return token_scorer([encode_pair(vocabulary, c, x, start_id) for c, x in pairs])

  return score_fn
