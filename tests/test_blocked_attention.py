"""`models.blocked_attention`: the CPU's attention has the einsum attention's values and derivatives (reverse, forward,
second order) under causal, packed and prefix masks and grouped heads; its backward pass compiles to standard-layout
matmuls only; causal blocks skip the keys above the diagonal; the model takes it on the CPU only."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax.models import blocked_attention as ba
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer, attention_mask, einsum_attention

TOL = dict(rtol=2e-5, atol=2e-5)


def reference(q, k, v, mask, kv_heads):
  """The model's attention off the CPU (`einsum_attention`), probabilities in the values' dtype."""
  return einsum_attention(q, k, v, mask, kv_heads, v.dtype)


def _qkv(b, t, h, kv, d, dtype=jnp.float32):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  return tuple(jax.random.normal(key, (b, t, n, d), dtype) for key, n in zip(keys, (h, kv, kv)))


def _masks(b, t):
  segments = jnp.array([[1] * (t // 2) + [2] * (t - t // 2 - 3) + [0] * 3] + [[1] * t] * (b - 1))
  prefix = jnp.array([[1] * (t // 3) + [0] * (t - t // 3)] * b)
  return {"causal, packed": (attention_mask(segments), True), "prefix LM": (attention_mask(segments, prefix), False)}


def _check_derivatives(ours, ref, q, k, v):
  loss = lambda f: lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)) * jnp.cos(q))
  np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), **TOL)
  for a, b in zip(jax.grad(loss(ours), (0, 1, 2))(q, k, v), jax.grad(loss(ref), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(a, b, **TOL)
  tangents = (0.3 * q, -0.7 * k, 0.5 * v)
  np.testing.assert_allclose(jax.jvp(ours, (q, k, v), tangents)[1], jax.jvp(ref, (q, k, v), tangents)[1], **TOL)
  hvp = lambda f: jax.jvp(jax.grad(loss(f), (0, 1, 2)), (q, k, v), tangents)[1]  # forward over reverse (BLISS)
  for a, b in zip(jax.jit(lambda: hvp(ours))(), hvp(ref)):
    np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("mask_name", ["causal, packed", "prefix LM"])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_values_gradients_jvp_and_hvp_equal_the_einsum_attention(mask_name, heads, kv_heads):
  q, k, v = _qkv(2, 40, heads, kv_heads, 8)
  mask, causal = _masks(2, 40)[mask_name]
  # blocks of 16 positions over 40: the last block is shorter; without `causal` one block
  ours = jax.jit(lambda q, k, v: ba.blocked_attention(q, k, v, mask, kv_heads, causal, block=16))
  _check_derivatives(ours, lambda q, k, v: reference(q, k, v, mask, kv_heads), q, k, v)


def test_the_mask_may_be_traced():
  q, k, v = _qkv(2, 16, 2, 2, 4)
  segments = jnp.array([[1] * 10 + [2] * 6, [1] * 16])
  f = jax.jit(lambda q, segments: ba.attention(q, k, v, attention_mask(segments), 2))
  np.testing.assert_allclose(f(q, segments), reference(q, k, v, attention_mask(segments), 2), **TOL)
  g = jax.jit(jax.grad(lambda q, segments: jnp.sum(ba.attention(q, k, v, attention_mask(segments), 2) ** 2)))
  np.testing.assert_allclose(g(q, segments), jax.grad(lambda q: jnp.sum(reference(
      q, k, v, attention_mask(segments), 2) ** 2))(q), **TOL)


def test_bfloat16_keeps_scores_and_softmax_in_float32():
  q, k, v = _qkv(2, 24, 4, 2, 8, jnp.bfloat16)
  mask = attention_mask(jnp.ones((2, 24), jnp.int32))
  out = ba.blocked_attention(q, k, v, mask, 2, True, block=8)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), reference(q, k, v, mask, 2).astype(jnp.float32), atol=2e-2)


def _dots(text):
  """(lhs batch, lhs contracting, rhs batch, rhs contracting, lhs rank) of every dot in compiled HLO text."""
  found = []
  for line in text.splitlines():
    if "dot(" not in line:
      continue
    dims = {key: re.search(key + r"=\{([\d,]*)\}", line) for key in
            ("lhs_batch_dims", "lhs_contracting_dims", "rhs_batch_dims", "rhs_contracting_dims")}
    found.append(tuple(d.group(1) if d else "" for d in dims.values()))
  return found


def _standard(dims):
  """[..., M, K] · [..., K, N]: the LHS contracts its last axis, the RHS its first after the batch axes."""
  lb, lc, rb, rc = dims
  nb = len([x for x in lb.split(",") if x])
  return lc == str(nb + 1) and rc == str(nb)


def _largest_transpose(text):
  """The most elements any transpose in compiled HLO text produces (inside fusions too)."""
  shapes = re.findall(r"= \w+\[([\d,]*)\]\{[^}]*\} transpose\(", text)
  return max([int(np.prod([int(n) for n in s.split(",")])) for s in shapes] or [0])


def test_the_backward_pass_is_standard_layout_matmuls_with_no_transposed_probabilities():
  """Every matmul of the compiled gradient is [..., M, K] · [..., K, N] (what XLA:CPU's library runs), and no
  transpose is larger than the queries; for the einsum attention's gradient XLA transposes the [T, S] scores."""
  b, t, h, kv, d = 2, 64, 4, 2, 16
  q, k, v = _qkv(b, t, h, kv, d)
  mask = attention_mask(jnp.ones((b, t), jnp.int32))
  grad = lambda f: jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) ** 2), (0, 1, 2))
  compiled = lambda f: jax.jit(grad(f)).lower(q, k, v).compile().as_text()
  ours = compiled(lambda q, k, v: ba.attention(q, k, v, mask, kv))
  ref = compiled(lambda q, k, v: reference(q, k, v, mask, kv))
  assert len(_dots(ours)) >= 6 and all(_standard(x) for x in _dots(ours)), _dots(ours)
  assert _largest_transpose(ours) <= b * t * h * d < _largest_transpose(ref) == b * h * t * t


def _calls(f, *args):
  """The `attention` calls in f's jaxpr."""
  return [e for e in jax.make_jaxpr(f)(*args).eqns if e.primitive.name == "custom_jvp_call"]


def test_causal_blocks_skip_the_keys_above_the_diagonal():
  q, k, v = _qkv(1, 64, 2, 2, 8)
  mask = attention_mask(jnp.ones((1, 64), jnp.int32))
  calls = lambda causal: _calls(lambda q: ba.blocked_attention(q, k, v, mask, 2, causal, block=16), q)
  assert [tuple(e.outvars[0].aval.shape) for e in calls(True)] == [(1, 16, 2, 8)] * 4  # 4 blocks of 16 queries
  assert [e.invars[1].aval.shape[1] for e in calls(True)] == [16, 32, 48, 64]  # each over the keys up to its end
  assert [tuple(e.outvars[0].aval.shape) for e in calls(False)] == [(1, 64, 2, 8)]  # a prefix may look ahead
  with pytest.raises(ValueError, match="as many keys as queries"):
    ba.blocked_attention(q, k[:, :32], v[:, :32], mask[..., :32], 2, True, block=16)


def test_default_blocks():
  q, k, v = _qkv(1, 1024, 1, 1, 4)
  mask = attention_mask(jnp.ones((1, 1024), jnp.int32))
  calls = lambda t: len(_calls(
      lambda q: ba.blocked_attention(q[:, :t], k[:, :t], v[:, :t], mask[..., :t, :t], 1, True), q))
  assert (calls(64), calls(128), calls(256), calls(1024)) == (1, 2, 4, ba.MAX_BLOCKS)  # blocks of 64, at most 8


def test_the_model_takes_it_on_the_cpu_only(monkeypatch):
  """The Transformer's logits and gradient equal those of its einsum attention (BLISS_JAX_DENSE_DOT=xla: XLA's own
  dots and attention), and the CPU program holds the blocked attention's custom rule."""
  cfg = preset("tiny_neox")
  model = Transformer(cfg)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 32), 0, cfg.vocab_size)
  segments = jnp.array([[1] * 20 + [2] * 12, [1] * 32])
  params = model.init(jax.random.PRNGKey(1), tokens, segment_ids=segments)
  logits = lambda p: model.apply(p, tokens, segment_ids=segments)
  loss = lambda p: jnp.mean(logits(p) ** 2)
  run = lambda: (jax.jit(logits)(params), jax.jit(jax.grad(loss))(params))
  monkeypatch.delenv("BLISS_JAX_DENSE_DOT", raising=False)
  assert "custom_jvp_call" in str(jax.make_jaxpr(logits)(params))
  ours = run()
  monkeypatch.setenv("BLISS_JAX_DENSE_DOT", "xla")
  ref = run()
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
