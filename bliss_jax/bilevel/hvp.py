"""Hessian-vector products by forward-over-reverse differentiation, and the pytree algebra the solvers use.

`hvp(f, x, v) = ∇²f(x)·v = d/dε ∇f(x + εv)|₀` is one `jax.jvp` of `jax.grad(f)`: about the cost of 2-3 gradients and
the memory of one (no Hessian is formed), for any pytree `x`. The vector algebra is optax's `tree_utils`.
"""
from typing import Callable

import jax
import optax.tree_utils as otu


def hvp(f: Callable, x, v):
  """∇²f(x)·v for scalar `f` of the pytree `x`, `v` a pytree like `x` (forward-over-reverse)."""
  return jax.jvp(jax.grad(f), (x,), (v,))[1]


def damped_hvp(f: Callable, x, damping: float = 0.0) -> Callable:
  """v ↦ (∇²f(x) + damping·I)·v, the linear operator of the system (H + λ_z I) z = ∇F."""
  def matvec(v):
    hv = hvp(f, x, v)
    return otu.tree_add_scale(hv, damping, v) if damping else hv
  return matvec
