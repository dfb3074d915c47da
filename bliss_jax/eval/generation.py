"""Batched greedy generation from a key/value cache, jit-compiled, in lm-evaluation-harness's `generate_until` way.

A prompt is `[start_id] + encode(context)` (the context's start, as `loglikelihood.encode_pair` lays it out), cut to
its last `max_length - max_new_tokens` tokens, as the harness cuts a generation context. Prompts are sorted longest
first and decoded `batch_size` at a time, left-padded (segment id 0; positions count from each row's first token) to
a length bucket P:

  prefill   one pass over the prompts writes them into a cache of P + max_new_tokens positions (`Transformer(cache=)`,
            rounded up to whole chunks) and gives each row's first greedy token;
  decode    `chunk` tokens per jitted call, each fed back one at a time; the call returns the tokens it fed.

Between chunks the host checks each row's tokens (`done`) and stops once every row is done: greedy tokens do not
depend on what comes after them, so cutting afterwards gives what stopping there would. The text of a generation is
the decoded tokens before the first end-of-sequence id, cut before the first stop sequence (`until`), as the
harness's `generate_until` returns it. Argmax ties go to the lowest id; with `vocab_size`, ids the vocabulary does not
have (a model's padded rows) are never chosen. Batches are sharded over the mesh's "data" axis like
`loglikelihood`'s.
"""
import math
from typing import Callable, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from bliss_jax import partitioning
from bliss_jax.eval import loglikelihood
from bliss_jax.models.transformer import init_cache

def encode_prompt(vocabulary, context: str, start_id: Optional[int] = loglikelihood.START_ID) -> List[int]:
  """`[start_id] + encode(context)`; without a start id the ids alone (the end-of-sequence id for an empty context)."""
  ids = list(vocabulary.encode(context)) if context else []
  start = [] if start_id is None else [start_id]
  return start + ids or [vocabulary.eos_id]


def cut_at_stop(text: str, until: Sequence[str]) -> str:
  """`text` before the first occurrence of any of `until` (the harness's `text.split(term)[0]` for each term)."""
  for term in until:
    if term:
      text = text.split(term)[0]
  return text


def pack_prompts(prompts: Sequence[Sequence[int]], batch_size: int, length: int) -> dict:
  """int32 `tokens`, `segment_ids` (1 on the prompt) and `positions` [batch_size, length], each prompt left-padded
  (rows past `len(prompts)` all padding)."""
  batch = {k: np.zeros((batch_size, length), np.int32) for k in ("tokens", "segment_ids", "positions")}
  for i, prompt in enumerate(prompts):
    if not 0 < len(prompt) <= length:
      raise ValueError(f"prompt {i}: {len(prompt)} tokens for {length} positions (at least one, the start id)")
    batch["tokens"][i, length - len(prompt):] = prompt
    batch["segment_ids"][i, length - len(prompt):] = 1
    batch["positions"][i, length - len(prompt):] = np.arange(len(prompt))
  return batch


def make_decode_fns(model, chunk: int, vocab_size: Optional[int] = None, out_sharding=None):
  """(prefill, decode) for jit (module docstring): `prefill(params, batch, cache_length) -> state` (cache_length
  static) and `decode(params, state) -> (state, tokens [B, chunk])`; `state` holds the cache, each row's next token
  (generated, not yet fed) and its position. `out_sharding`: where `decode`'s tokens go (e.g. replicated, so every
  process can read them)."""

  def greedy(logits):
    return jnp.argmax(logits[:, -1, :vocab_size], -1).astype(jnp.int32)

  def prefill(params, batch, cache_length):
    cache = init_cache(model.cfg, batch["tokens"].shape[0], cache_length)
    logits, cache = model.apply({"params": params}, batch["tokens"], segment_ids=batch["segment_ids"],
                                positions=batch["positions"], cache=cache)
    return {"cache": cache, "token": greedy(logits), "position": batch["positions"][:, -1] + 1}

  def decode(params, state):
    def step(state, _):
      logits, cache = model.apply({"params": params}, state["token"][:, None], positions=state["position"][:, None],
                                  cache=state["cache"])
      return {"cache": cache, "token": greedy(logits), "position": state["position"] + 1}, state["token"]

    state, fed = jax.lax.scan(step, state, None, length=chunk)
    tokens = fed.T
    if out_sharding is not None:
      tokens = jax.lax.with_sharding_constraint(tokens, out_sharding)
    return state, tokens

  return prefill, decode


def make_token_generator(model, params, *, batch_size: int = 32, max_length: int = 2048, chunk: int = 32,
                         vocab_size: Optional[int] = None, length_buckets: Optional[Sequence[int]] = None,
                         mesh: Optional[Mesh] = None, rules=None, progress: bool = True) -> Callable:
  """`generate(prompts, max_new_tokens, done=None) -> [token ids]`: the greedy continuation of each prompt (token
  lists beginning with the start id), in the order given, `max_new_tokens` ids long, or shorter once `done(ids)` holds
  for every row of its batch (the ids past the point where it first held are then partly missing).

  Args:
    model, params: a `Transformer` and its (unboxed) parameters.
    batch_size: rows decoded together; with `mesh`, a multiple of its "data" size.
    max_length: the model's context: prompts keep their last `max_length - max_new_tokens` tokens.
    chunk: tokens per jitted decoding call, between which `done` is checked.
    vocab_size: only ids below it are generated (the vocabulary's size, when the model has padded rows).
    length_buckets: prompt lengths to pad to (default `loglikelihood.default_length_buckets` of the longest prompt
      allowed).
    mesh: shard each batch (and its cache) over the mesh's "data" axis; every process must call with the same prompts.
    rules: logical-axis rules for tracing on `mesh` (default `partitioning.logical_rules()`).
    progress: a tqdm bar over the prompts.
  """
  if mesh is not None:
    if batch_size % mesh.shape["data"]:
      raise ValueError(f"batch_size={batch_size} is not a multiple of the mesh's data axis ({mesh.shape['data']})")
    params = partitioning.replicate_params(params, mesh)
    rules = partitioning.logical_rules() if rules is None else rules
  prefill, decode = make_decode_fns(model, chunk, vocab_size,
                                    None if mesh is None else partitioning.replicated(mesh))
  prefill, decode = jax.jit(prefill, static_argnums=2), jax.jit(decode)

  def run(fn, *args):
    if mesh is None:
      return fn(*args)
    with partitioning.mesh_context(mesh, rules):
      return fn(*args)

  def generate(prompts: Sequence[Sequence[int]], max_new_tokens: int,
               done: Optional[Callable[[List[int]], bool]] = None) -> List[List[int]]:
    if not 0 < max_new_tokens < max_length:
      raise ValueError(f"max_new_tokens={max_new_tokens} must lie in [1, max_length={max_length})")
    longest = max_length - max_new_tokens
    buckets = tuple(sorted({min(b, longest) for b in (length_buckets or
                                                      loglikelihood.default_length_buckets(longest))} | {longest}))
    prompts = [list(p)[-longest:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    chunks = math.ceil(max_new_tokens / chunk)
    out: List[Optional[List[int]]] = [None] * len(prompts)
    with tqdm(total=len(prompts), desc="generate", disable=not progress, leave=False) as bar:
      for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        length = next(b for b in buckets if b >= max(len(prompts[i]) for i in idx))
        batch = pack_prompts([prompts[i] for i in idx], batch_size, length)
        if mesh is not None:
          batch = {k: partitioning.global_array(v, partitioning.batch_sharding(mesh)) for k, v in batch.items()}
        state = run(prefill, params, batch, length + chunks * chunk)
        rows = [[] for _ in idx]
        for _ in range(chunks):
          state, tokens = run(decode, params, state)
          tokens = np.asarray(jax.device_get(tokens))
          for r in range(len(idx)):
            rows[r].extend(tokens[r].tolist())
          if done is not None and all(done(row) for row in rows):
            break
        for r, i in enumerate(idx):
          out[i] = rows[r][:max_new_tokens]
        bar.update(len(idx))
    return out

  return generate


def make_generate_fn(model, params, vocabulary, *, start_id: Optional[int] = loglikelihood.START_ID,
                     **kwargs) -> Callable[[Sequence[str], Sequence[str], int], List[str]]:
  """`generate_fn(contexts, until, max_new_tokens) -> [text]` (module docstring), the generation function
  `harness.run_eval` takes: `encode_prompt(..., start_id)`, then `make_token_generator(model, params, **kwargs)`
  (`vocab_size` defaults to the vocabulary's)."""
  kwargs.setdefault("vocab_size", vocabulary.vocab_size)
  token_generator = make_token_generator(model, params, **kwargs)
  eos_id = vocabulary.eos_id

  def text_of(ids: List[int], until: Sequence[str]) -> str:
    ids = ids[:ids.index(eos_id)] if eos_id in ids else ids
    return cut_at_stop(vocabulary.decode(ids), until)

  def generate_fn(contexts: Sequence[str], until: Sequence[str], max_new_tokens: int) -> List[str]:
    def done(ids):
      return eos_id in ids or any(term and term in vocabulary.decode(ids) for term in until)

    prompts = [encode_prompt(vocabulary, context, start_id) for context in contexts]
    return [text_of(ids, until) for ids in token_generator(prompts, max_new_tokens, done)]

  return generate_fn
