"""Solvers for A z = b with A = ∇²_{θp}G + λ_z I given only as a matrix-free `matvec` (pytrees in, pytrees out).

All three run a fixed number of iterations inside jit (`iters`), take an optional warm start `x0`, and return z:
  - `conjugate_gradient`: jax.scipy's CG (pytree-aware), for symmetric positive-definite A.
  - `neumann`: z = α Σ_{k=0}^{K} (I − αA)^k b, which converges when ‖I − αA‖ < 1 (0 < α < 2/λ_max(A), A ≻ 0).
  - `normalized_iteration`: the BLISS reference implementation's solver (spec §Hypergradient, [code]): gradient
    descent on ½zᵀAz − bᵀz, g = Az − b, each tensor g_t of g rescaled to unit norm when its norm exceeds 1
    (`normalize="tensor"`, the reference's; `"global"` rescales the whole pytree by its global norm instead),
    z ← z − α·g; started (without a warm start) from z₀ = 1/numel in every tensor. The reference code passes
    A = H + 1e-2·I, i.e. `damping=1e-2` in `hvp.damped_hvp`.
`iteration` is one step of the last two from a given residual (what a single-pass bilevel step takes).
`matvec_count` is how many products with A a solve costs (the FLOP accounting's HVP count).
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

from bliss_jax.choices import check_choice

SOLVERS = ("cg", "neumann", "normalized")
NORMALIZATIONS = ("tensor", "global")


def conjugate_gradient(matvec: Callable, b, x0=None, *, iters: int = 10, tol: float = 0.0):
  """CG for A z = b (A symmetric positive-definite), at most `iters` iterations (stops early at ‖r‖ ≤ tol·‖b‖)."""
  return jax.scipy.sparse.linalg.cg(matvec, b, x0=x0, tol=tol, atol=0.0, maxiter=iters)[0]


def neumann(matvec: Callable, b, x0=None, *, iters: int = 10, alpha: float = 1e-2):
  """Truncated Neumann series α Σ_{k≤iters} (I − αA)^k b; with a warm start x0 it is Richardson's iteration
  z ← z + α(b − Az) from x0 (the same fixed point)."""
  if x0 is not None:
    body = lambda _, z: iteration("neumann", z, otu.tree_sub(matvec(z), b), alpha=alpha)
    return jax.lax.fori_loop(0, iters, body, x0)

  def body(_, carry):
    term, total = carry
    term = otu.tree_sub(term, otu.tree_scale(alpha, matvec(term)))
    return term, otu.tree_add(total, term)
  _, total = jax.lax.fori_loop(0, iters, body, (b, b))
  return otu.tree_scale(alpha, total)


def uniform_start(b):
  """The reference implementation's z₀: every element of each tensor 1/numel(tensor)."""
  return jax.tree.map(lambda x: jnp.full_like(x, 1.0 / max(x.size, 1)), b)


def unit_norm_cap(g, normalize: str = "tensor"):
  """g rescaled to norm ≤ 1: each tensor by max(‖g_t‖, 1) ("tensor", the reference's `if g.norm() > 1: g /= g.norm()`
  per parameter), or the whole pytree by max(‖g‖, 1) ("global")."""
  check_choice("normalize", normalize, NORMALIZATIONS)
  if normalize == "tensor":
    return jax.tree.map(lambda x: x / jnp.maximum(jnp.linalg.norm(x.reshape(-1)), 1.0), g)
  return otu.tree_scale(1.0 / jnp.maximum(otu.tree_norm(g), 1.0), g)


def normalized_iteration(matvec: Callable, b, x0=None, *, iters: int = 3, alpha: float = 1e-2,
                         normalize: str = "tensor"):
  """The reference solver: `iters` steps of z ← z − α·cap(g), g = Az − b, `cap` = `unit_norm_cap` (from
  `uniform_start` by default)."""
  z = uniform_start(b) if x0 is None else x0

  def body(_, z):
    return iteration("normalized", z, otu.tree_sub(matvec(z), b), alpha=alpha, normalize=normalize)
  return jax.lax.fori_loop(0, iters, body, z)


ITERATIVE = ("neumann", "normalized")


def iteration(name: str, z, residual, *, alpha: float = 1e-2, normalize: str = "tensor"):
  """One step of a stationary solver from z given its residual r = Az − b: "neumann" (Richardson) z − α·r,
  "normalized" z − α·`unit_norm_cap`(r). (CG keeps a search direction across steps and has no such step.)"""
  check_choice("solver", name, ITERATIVE)
  step = unit_norm_cap(residual, normalize) if name == "normalized" else residual
  return otu.tree_add_scale(z, -alpha, step)


def matvec_count(name: str, iters: int) -> int:
  """Products with A that `solve(name, ..., iters=iters)` computes: CG also forms the initial residual b − A·x0."""
  check_choice("solver", name, SOLVERS)
  return iters + 1 if name == "cg" else iters


def solve(name: str, matvec: Callable, b, x0=None, *, iters: int, alpha: Optional[float] = None,
          normalize: str = "tensor"):
  """Dispatch by name ("cg", "neumann", "normalized"); `alpha` is the step of the latter two, `normalize` the
  normalised iteration's cap (`unit_norm_cap`)."""
  check_choice("solver", name, SOLVERS)
  if name == "cg":
    return conjugate_gradient(matvec, b, x0, iters=iters)
  kw = {} if alpha is None else {"alpha": alpha}
  if name == "neumann":
    return neumann(matvec, b, x0, iters=iters, **kw)
  return normalized_iteration(matvec, b, x0, iters=iters, normalize=normalize, **kw)
