"""Hypergradients of Φ(θs) = F(θp*(θs)), θp*(θs) = argmin_θp G(θp, θs) (BLISS spec §Bilevel problem).

Implicit function theorem (spec §Hypergradient):
  (H1)  z* solves (∇²_{θpθp}G + λ_z I) z = ∇_{θp}F(θp)
  (H2)  ∇Φ(θs) = −∇²_{θsθp}G · z* = −∇_{θs} ⟨∇_{θp}G(θp, θs), z*⟩
For G = Σ_i P_i(θs)·L_i(θp) + R(θp), where only the weights depend on θs, (H2) is
  (H3)  ∇Φ(θs) = −∇_{θs} Σ_i P_i(θs)·a_i,   a_i = ⟨∇_{θp}L_i, z*⟩,
and for P = softmax(s(θs)) the cotangent of the scores is P_i(a_i − ā), ā = Σ_j P_j a_j. All a_i come from ONE
forward-mode pass (`jax.jvp` of the per-sample losses along z), so no per-sample gradient is ever stored; the θs
gradient is one reverse pass through the score model (`jax.vjp`).

`unrolled_hypergradient` differentiates through K optimiser steps of the lower level instead (memory grows with K);
it validates the implicit one on small problems.
"""
from typing import Callable, Optional

import jax
import optax
import optax.tree_utils as otu

from bliss_jax.bilevel import hvp as hvp_lib
from bliss_jax.bilevel import solvers


def solve_adjoint(inner_loss: Callable, theta_p, theta_s, outer_grad, *, solver: str = "cg", iters: int = 10,
                  damping: float = 0.0, alpha: Optional[float] = None, x0=None, normalize: str = "tensor"):
  """z of (H1): (∇²_{θpθp} inner_loss(θp, θs) + damping·I) z = outer_grad, by `solvers.solve`."""
  matvec = hvp_lib.damped_hvp(lambda p: inner_loss(p, theta_s), theta_p, damping)
  return solvers.solve(solver, matvec, outer_grad, x0, iters=iters, alpha=alpha, normalize=normalize)


def mixed_term(inner_loss: Callable, theta_p, theta_s, z):
  """∇²_{θsθp}G·z = ∇_{θs}⟨∇_{θp}G(θp, θs), z⟩ by `jax.vjp` of θs ↦ ∇_{θp}G (the general form of (H2))."""
  _, vjp = jax.vjp(lambda s: jax.grad(inner_loss)(theta_p, s), theta_s)
  return vjp(z)[0]


def implicit_hypergradient(inner_loss: Callable, outer_loss: Callable, theta_p, theta_s, *, solver: str = "cg",
                           iters: int = 10, damping: float = 0.0, alpha: Optional[float] = None, x0=None):
  """(∇Φ(θs), z): (H1) then (H2), for any scalar inner_loss(θp, θs) and outer_loss(θp) (θp ≈ the lower argmin)."""
  z = solve_adjoint(inner_loss, theta_p, theta_s, jax.grad(outer_loss)(theta_p), solver=solver, iters=iters,
                    damping=damping, alpha=alpha, x0=x0)
  return otu.tree_scale(-1.0, mixed_term(inner_loss, theta_p, theta_s, z)), z


def weighted_sum_hypergradient(per_sample_losses: Callable, weights: Callable, theta_p, theta_s, z):
  """(H3): (∇Φ(θs), a) for G = Σ_i weights(θs)_i · per_sample_losses(θp)_i + R(θp), given z of (H1).

  a = jvp of `per_sample_losses` at θp along z (one forward-mode pass); ∇Φ = vjp of `weights` at θs with −a.
  """
  _, a = jax.jvp(per_sample_losses, (theta_p,), (z,))
  _, vjp = jax.vjp(weights, theta_s)
  return vjp(-jax.lax.stop_gradient(a))[0], a


def unrolled_hypergradient(inner_loss: Callable, outer_loss: Callable, theta_p0, theta_s, *, steps: int,
                           tx: optax.GradientTransformation):
  """(Φ_K(θs), ∇Φ_K(θs)) for Φ_K = outer_loss(θp_K), θp_K = `steps` updates of `tx` on inner_loss(·, θs) from θp0,
  by reverse-mode through the whole unrolled loop (`lax.scan`)."""
  def phi(s):
    def body(carry, _):
      p, opt = carry
      updates, opt = tx.update(jax.grad(inner_loss)(p, s), opt, p)
      return (optax.apply_updates(p, updates), opt), None
    (p, _), _ = jax.lax.scan(body, (theta_p0, tx.init(theta_p0)), None, length=steps)
    return outer_loss(p)
  return jax.value_and_grad(phi)(theta_s)
