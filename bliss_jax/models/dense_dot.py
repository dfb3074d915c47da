"""A dense layer's `dot_general` whose backward pass is two matmuls in the standard layout.

A dense layer y = x · W contracts the trailing axes of x with the leading axes of W. Its gradients are
dx̄ = ȳ · Wᵀ and dW̄ = xᵀ · ȳ. Autodiff writes them as `dot_general`s that contract a leading axis of one operand, and
XLA:CPU's layout assignment then transposes dy (the larger operand) and runs a dot of non-standard layout, which its
library backend (XNNPACK/YNNPACK) does not take: that dot runs on XLA's own emitter, about 3x slower at the `tiny`
shapes. `dense_dot_general` has the same forward pass and the same derivatives (up to float summation order), with
the transposes of x and W materialised behind an `optimization_barrier`, so both backward dots are [M, K] · [K, N]
dots the library runs. It is a `custom_jvp` (BLISS differentiates the proxy in forward mode too): its tangent map is
written so that JAX's transposition of it gives those dots. `dense_dot_general_for_backend()` is it on CPU and
`None` (flax's `lax.dot_general`) elsewhere, where the compilers pick good layouts themselves. Only the dense layers'
contraction is replaced: trailing axes of the input with leading axes of the kernel, no batch axes; anything else
takes `lax.dot_general`.
"""
import functools
import math
import os
from typing import Optional

import jax


def _is_dense(lhs, rhs, dimension_numbers) -> bool:
  (lc, rc), (lb, rb) = dimension_numbers
  n = len(lc)
  return (not lb and not rb and n >= 1 and tuple(lc) == tuple(range(lhs.ndim - n, lhs.ndim))
          and tuple(rc) == tuple(range(n)))


def _matrices(x, w, n: int):
  """x as [M, K] and w as [K, N], K the product of the contracted axes."""
  k = math.prod(x.shape[x.ndim - n:])
  return x.reshape(-1, k), w.reshape(k, -1)


def _out_shape(x, w, n: int):
  return x.shape[:x.ndim - n] + w.shape[n:]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _dense(x, w, n: int):
  # x's leading axes are not merged: a merge would hide from XLA's SPMD partitioner a batch axis sharded behind an
  # unsharded one (the target's logits in chunks [n, B, length, d]) and make it gather every row
  return jax.lax.dot_general(x, w, ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))), ((), ())))


@_dense.defjvp
def _dense_jvp(n, primals, tangents):
  """dy = dx·W + x·dW, written over the transposes xᵀ and Wᵀ (materialised, behind a barrier) so that the
  transposition of this linear map, i.e. reverse mode, is two standard-layout dots: dx̄ = ȳ·Wᵀ and dW̄ = xᵀ·ȳ."""
  x, w = primals
  dx, dw = tangents
  x2, w2 = _matrices(x, w, n)
  dx2, dw2 = _matrices(dx, dw, n)
  # separate barriers: inside a loop over x (the chunked head), Wᵀ stays loop-invariant and is hoisted out of it
  x_t, w_t = jax.lax.optimization_barrier(x2.T), jax.lax.optimization_barrier(w2.T)
  dy = (jax.lax.dot_general(dx2, w_t, (((1,), (1,)), ((), ()))) +
        jax.lax.dot_general(x_t, dw2, (((0,), (0,)), ((), ()))))
  return _dense(x, w, n), dy.reshape(_out_shape(x, w, n))


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """`lax.dot_general` with the backward pass above for a dense layer's contraction; other contractions, an explicit
  precision or output dtype, and mixed operand dtypes go to `lax.dot_general` unchanged."""
  if (precision is None and preferred_element_type is None and lhs.dtype == rhs.dtype
      and _is_dense(lhs, rhs, dimension_numbers)):
    return _dense(lhs, rhs, len(dimension_numbers[0][0]))
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type)


OFF_VARIABLE = "BLISS_JAX_DENSE_DOT"


def dense_dot_general_for_backend(backend: Optional[str] = None):
  """`dense_dot_general` on the CPU backend, None (flax's default `lax.dot_general`) on any other, and everywhere
  where $BLISS_JAX_DENSE_DOT is `xla` (e.g. to rerun a job on XLA's own dots and compare its results). The model
  takes `models.blocked_attention` where this is not None."""
  choice = os.environ.get(OFF_VARIABLE, "").strip()
  if choice not in ("", "xla"):
    raise ValueError(f"{OFF_VARIABLE}={choice!r}: expected 'xla' (flax's lax.dot_general) or unset")
  return dense_dot_general if not choice and (backend or jax.default_backend()) == "cpu" else None
