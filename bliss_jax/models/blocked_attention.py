"""Written-out attention for XLA:CPU: matmuls in the layout its library runs and, under a causal mask, blocks of
queries that skip the keys above the diagonal.

The same function as `models.transformer.einsum_attention`, softmax(q·kᵀ/√d + mask)·v, computed per key/value head
with the query heads that share it stacked as rows ([B, kv, g·T, d] queries against [B, kv, S, d] keys). `attention`
is a `custom_jvp` whose tangent map is written so that JAX's transposition of it, the backward pass, is six batched
[M, K] · [K, N] matmuls: transposes are taken of the [T, d] operands (behind `optimization_barrier`s, so XLA does not
fold them back into the matmuls), never of the [T, S] probabilities, which XLA:CPU's library backend would otherwise
not take (see `models.dense_dot`). The softmax's derivative enters as

  d(o) = (p∘ds)·v − rowsum(p∘ds)·o + p·dv,     ds = (dq·kᵀ + q·dkᵀ)/√d,

whose transposition reads rowsum(ō∘o) over d instead of rowsum(p̄∘p) over the keys (FlashAttention's backward,
Dao et al. 2022, Alg. 2's D_i). It is differentiable to any order (BLISS's HVP is forward-over-reverse).

`blocked_attention` splits the queries into blocks of positions; under a causal mask block i attends only keys
[0, end of block i), so about half of the [T, S] scores, probabilities and their gradients are never formed
(4 blocks of 64 at T = 256: 10/16). The result equals the full attention up to float summation order: a masked key's
probability is exactly 0 either way.
"""
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

BLOCK = 64  # query positions per block
MAX_BLOCKS = 8  # longer sequences take longer blocks


def _dims(a):
  nb = a.ndim - 2
  return tuple(range(nb))


def _mm(a, b):
  """[..., M, K] · [..., K, N]."""
  d = _dims(a)
  return jax.lax.dot_general(a, b, (((a.ndim - 1,), (len(d),)), (d, d)))


def _mm_nt(a, b):
  """[..., M, K] · [..., N, K]ᵀ: transposed as a linear map of `a`, a standard matmul with `b`."""
  d = _dims(a)
  return jax.lax.dot_general(a, b, (((a.ndim - 1,), (b.ndim - 1,)), (d, d)))


def _mm_tn(a, b):
  """[..., K, M]ᵀ · [..., K, N]: transposed as a linear map of `b`, a standard matmul with `a`."""
  d = _dims(a)
  return jax.lax.dot_general(a, b, (((len(d),), (len(d),)), (d, d)))


def _swap(x):
  return jnp.swapaxes(x, -1, -2)


_barrier = jax.lax.optimization_barrier


def _rows(x, kv: int):
  """[B, T, h, d] -> [B, kv, (h / kv)·T, d]: the heads that share a key/value head stacked as rows."""
  b, t, h, d = x.shape
  return x.reshape(b, t, kv, h // kv, d).transpose(0, 2, 3, 1, 4).reshape(b, kv, (h // kv) * t, d)


def _unrows(x, t: int):
  """The inverse of `_rows`."""
  b, kv, gt, d = x.shape
  return x.reshape(b, kv, gt // t, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, kv * (gt // t), d)


def _kv(x):
  """[B, S, kv, d] -> [B, kv, S, d]."""
  return x.transpose(0, 2, 1, 3)


def _probabilities(q_rows, k_t, mask, t: int):
  """softmax over the keys of q·kᵀ (q already scaled by 1/√d) where `mask` [B, 1, T, S] allows, float32
  [B, kv, g·T, S]."""
  b, kv, gt, _ = q_rows.shape
  s = jax.lax.dot_general(q_rows, k_t, (((3,), (2,)), ((0, 1), (0, 1))), preferred_element_type=jnp.float32)
  s = s.reshape(b, kv, gt // t, t, -1)
  s = jnp.where(mask[:, :, None], s, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(s, axis=-1).reshape(b, kv, gt, -1)


def _scaled_rows(q, kv: int):
  return _rows(q, kv) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def attention(q, k, v, mask, kv_heads: int):
  """softmax(q·kᵀ/√d, masked)·v: q [B, T, h, d], k and v [B, S, kv_heads, d] (h a multiple of kv_heads; query
  heads that share a key/value head contiguous), `mask` boolean [B, 1, T, S]. Returns [B, T, h, d] in v's dtype;
  scores and softmax in float32, as the model's einsum attention."""
  p = _probabilities(_scaled_rows(q, kv_heads), _swap(_kv(k)), mask, q.shape[1])
  return _unrows(_mm(p.astype(v.dtype), _kv(v)), q.shape[1])


@attention.defjvp
def _attention_jvp(kv_heads, primals, tangents):
  q, k, v, mask = primals
  dq, dk, dv, _ = tangents
  t = q.shape[1]
  q_rows, k_rows, v_rows = _scaled_rows(q, kv_heads), _kv(k), _kv(v)
  k_t = _barrier(_swap(k_rows))
  p = _probabilities(q_rows, k_t, mask, t)
  pv = p.astype(v.dtype)
  o = _mm(pv, v_rows)
  # the operands of the backward matmuls, materialised in their layout behind barriers
  q_t, k_b, v_t = _barrier(_swap(q_rows)), _barrier(k_rows), _barrier(_swap(v_rows))
  f32 = functools.partial(jax.lax.convert_element_type, new_dtype=jnp.float32)
  ds = f32(_mm_nt(_scaled_rows(dq, kv_heads), k_b)) + f32(_mm_tn(q_t, _barrier(_swap(_kv(dk)))))
  pds = p * ds
  do = (_mm_nt(pds.astype(v.dtype), v_t) - jnp.sum(pds, -1, keepdims=True).astype(o.dtype) * o
        + _swap(_barrier(_mm_nt(_barrier(_swap(_kv(dv))), pv))))
  return _unrows(o, t), _unrows(do, t)


def blocked_attention(q, k, v, mask, kv_heads: int, causal: bool, block: Optional[int] = None):
  """`attention` over blocks of query positions; with `causal` (the mask allows no key after its query), block i
  attends only the keys up to its last position. `block` positions per block (default `BLOCK`, or T / `MAX_BLOCKS`
  if longer); without `causal`, one block."""
  t = q.shape[1]
  block = block or max(BLOCK, math.ceil(t / MAX_BLOCKS))
  if not causal or t <= block:
    return attention(q, k, v, mask, kv_heads)
  if k.shape[1] != t:
    raise ValueError(f"causal blocks need as many keys as queries, got {k.shape[1]} keys for {t} queries")
  outs = []
  for start in range(0, t, block):
    end = min(start + block, t)
    outs.append(attention(q[:, start:end], k[:, :end], v[:, :end], mask[:, :, start:end, :end], kv_heads))
  return jnp.concatenate(outs, axis=1)
