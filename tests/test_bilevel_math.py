"""Hypergradient math on problems with closed forms: weighted ridge regression as the lower level.

G(w, s) = ½ Σ_i P_i(s)(x_iᵀw − y_i)² + ½λ‖w‖², P = softmax(s)  →  w*(s) = A⁻¹XᵀPy, A = XᵀPX + λI
F(w) = ½‖X_v w − y_v‖²                                             →  ∇Φ(s) = J_softmax(s)ᵀ [∇F·A⁻¹x_i r_i]_i,
with r_i = y_i − x_iᵀw* (differentiating A w* = XᵀPy in P_i gives dw*/dP_i = A⁻¹x_i r_i).
Run in float64 so the 1e-5 tolerance tests the math, not round-off.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bliss_jax.bilevel import hvp as hvp_lib
from bliss_jax.bilevel import hypergradient, solvers

N, D, NV, LAM = 12, 5, 7, 0.3


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  X, y = rng.normal(size=(N, D)), rng.normal(size=N)
  Xv, yv = rng.normal(size=(NV, D)), rng.normal(size=NV)
  s = rng.normal(size=N)
  return [jnp.asarray(a) for a in (X, y, Xv, yv, s)]


def _losses(X, y, Xv, yv):
  # the parameters as a pytree (two leaves) so the machinery is exercised on more than one array
  per_sample = lambda w: 0.5 * (X @ jnp.concatenate([w["a"], w["b"]]) - y) ** 2
  inner = lambda w, s: jnp.sum(jax.nn.softmax(s) * per_sample(w)) + 0.5 * LAM * (
      jnp.sum(w["a"] ** 2) + jnp.sum(w["b"] ** 2))
  outer = lambda w: 0.5 * jnp.sum((Xv @ jnp.concatenate([w["a"], w["b"]]) - yv) ** 2)
  return per_sample, inner, outer


def _split(w):
  return {"a": w[:2], "b": w[2:]}


def _closed_form(X, y, Xv, yv, s):
  P = jax.nn.softmax(s)
  A = X.T @ (P[:, None] * X) + LAM * jnp.eye(D)
  w = jnp.linalg.solve(A, X.T @ (P * y))
  gF = Xv.T @ (Xv @ w - yv)
  dphi_dP = (X @ jnp.linalg.solve(A, gF)) * (y - X @ w)
  J = jnp.diag(P) - jnp.outer(P, P)  # softmax Jacobian (symmetric)
  return w, J @ dphi_dP, A


def _phi(X, y, Xv, yv, s):
  return 0.5 * jnp.sum((Xv @ _closed_form(X, y, Xv, yv, s)[0] - yv) ** 2)


def test_hvp_equals_exact_hessian_and_finite_differences():
  X, y, Xv, yv, s = _problem()
  _, inner, _ = _losses(X, y, Xv, yv)
  w, _, A = _closed_form(X, y, Xv, yv, s)
  v = jnp.asarray(np.random.default_rng(1).normal(size=D))
  hv = hvp_lib.hvp(lambda p: inner(p, s), _split(w), _split(v))
  np.testing.assert_allclose(jnp.concatenate([hv["a"], hv["b"]]), A @ v, rtol=1e-10)
  eps, g = 1e-5, jax.grad(lambda p: inner(p, s))
  fd = jax.tree.map(lambda a, b: (a - b) / (2 * eps), g(_split(w + eps * v)), g(_split(w - eps * v)))
  np.testing.assert_allclose(jnp.concatenate([fd["a"], fd["b"]]), A @ v, rtol=1e-7)


def test_cg_implicit_hypergradient_matches_closed_form():
  X, y, Xv, yv, s = _problem()
  _, inner, outer = _losses(X, y, Xv, yv)
  w, expected, _ = _closed_form(X, y, Xv, yv, s)
  got, _ = hypergradient.implicit_hypergradient(inner, outer, _split(w), s, solver="cg", iters=2 * D)
  assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-5


def test_closed_form_matches_finite_differences_of_phi():
  X, y, Xv, yv, s = _problem()
  _, expected, _ = _closed_form(X, y, Xv, yv, s)
  eps = 1e-6
  fd = np.array([(_phi(X, y, Xv, yv, s.at[i].add(eps)) - _phi(X, y, Xv, yv, s.at[i].add(-eps))) / (2 * eps)
                 for i in range(N)])
  np.testing.assert_allclose(fd, expected, rtol=1e-6, atol=1e-10)


def test_weighted_sum_form_equals_general_vjp_form():
  """(H3), one jvp + the softmax vjp, equals (H2)'s vjp of θs ↦ ∇_θp G for the same z, and a_i = ⟨∇L_i, z⟩."""
  X, y, Xv, yv, s = _problem()
  per_sample, inner, outer = _losses(X, y, Xv, yv)
  w, _, _ = _closed_form(X, y, Xv, yv, s)
  z = _split(jnp.asarray(np.random.default_rng(2).normal(size=D)))
  general = hypergradient.mixed_term(inner, _split(w), s, z)
  fast, a = hypergradient.weighted_sum_hypergradient(per_sample, jax.nn.softmax, _split(w), s, z)
  np.testing.assert_allclose(fast, -general, rtol=1e-10, atol=1e-14)
  r = X @ w - y
  np.testing.assert_allclose(a, r * (X @ jnp.concatenate([z["a"], z["b"]])), rtol=1e-10)
  P = jax.nn.softmax(s)
  np.testing.assert_allclose(fast, -P * (a - jnp.sum(P * a)), rtol=1e-10, atol=1e-14)


def _errors(solver, iters, alpha=None, damping=0.0):
  X, y, Xv, yv, s = _problem()
  _, inner, outer = _losses(X, y, Xv, yv)
  w, _, A = _closed_form(X, y, Xv, yv, s)
  b = jax.grad(outer)(_split(w))
  exact = jnp.linalg.solve(A + damping * jnp.eye(D), jnp.concatenate([b["a"], b["b"]]))
  out = []
  for k in iters:
    z = hypergradient.solve_adjoint(inner, _split(w), s, b, solver=solver, iters=k, damping=damping, alpha=alpha)
    out.append(float(np.linalg.norm(jnp.concatenate([z["a"], z["b"]]) - exact) / np.linalg.norm(exact)))
  return out, A


def test_neumann_converges_to_the_solution():
  _, A = _errors("cg", [1])
  alpha = 1.0 / float(np.linalg.eigvalsh(A).max())  # ‖I − αA‖ < 1
  errs, _ = _errors("neumann", [5, 50, 2000], alpha=alpha)
  assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-6, errs


def test_normalized_iteration_converges_toward_the_damped_solution():
  """The reference solver (z₀ = 1/numel, unit-norm steps) approaches (H + λ_z I)⁻¹∇F: monotone, then close."""
  errs, _ = _errors("normalized", [3, 30, 300, 3000], alpha=0.02, damping=1e-2)
  assert errs[0] > errs[1] > errs[2] > errs[3] and errs[3] < 1e-3, errs


def test_solvers_warm_start_at_the_solution_stays_there():
  X, y, Xv, yv, s = _problem()
  _, inner, outer = _losses(X, y, Xv, yv)
  w, _, A = _closed_form(X, y, Xv, yv, s)
  b = jax.grad(outer)(_split(w))
  exact = _split(jnp.linalg.solve(A, jnp.concatenate([b["a"], b["b"]])))
  for name in solvers.SOLVERS:
    z = hypergradient.solve_adjoint(inner, _split(w), s, b, solver=name, iters=3, alpha=0.05, x0=exact)
    np.testing.assert_allclose(z["a"], exact["a"], rtol=1e-8)


def test_unrolled_hypergradient_approaches_the_implicit_one():
  """Gradient descent from w=0 run to convergence: the unrolled hypergradient → the closed form."""
  X, y, Xv, yv, s = _problem()
  _, inner, outer = _losses(X, y, Xv, yv)
  _, expected, A = _closed_form(X, y, Xv, yv, s)
  lr = 1.0 / float(np.linalg.eigvalsh(A).max())
  w0 = _split(jnp.zeros(D))
  rel = []
  for k in (20, 2000):
    _, g = hypergradient.unrolled_hypergradient(inner, outer, w0, s, steps=k, tx=optax.sgd(lr))
    rel.append(float(np.linalg.norm(g - expected) / np.linalg.norm(expected)))
  assert rel[0] > rel[1] and rel[1] < 1e-6, rel


def test_unknown_solver_is_refused():
  with pytest.raises(ValueError, match="solver='lbfgs': expected one of"):
    solvers.solve("lbfgs", lambda v: v, jnp.ones(3), iters=1)


def test_normalized_iteration_caps_each_tensor_as_the_reference_does():
  """Three steps of z ← z − α·g_t/max(‖g_t‖, 1) per tensor on A = diag, b = (big, small), traced by hand.

  Tensor "big" (2 entries, A = 1, b = (30, 40)): its residual norm stays > 1, so every step moves it by exactly α
  along the residual's direction; tensor "small" (1 entry, A = 0.5, b = 0.2): norm < 1, plain gradient steps. The
  global-norm variant would shrink the small tensor's step by the big tensor's norm (~50)."""
  diag = {"big": jnp.array([1.0, 1.0]), "small": jnp.array([0.5])}
  b = {"big": jnp.array([30.0, 40.0]), "small": jnp.array([0.2])}
  matvec = lambda v: jax.tree.map(lambda d, x: d * x, diag, v)
  alpha = 0.1
  z = {"big": np.array([0.5, 0.5]), "small": np.array([1.0])}  # uniform_start: 1/numel per tensor
  for _ in range(3):
    g_big = diag["big"] * z["big"] - b["big"]
    g_small = diag["small"] * z["small"] - b["small"]
    z = {"big": z["big"] - alpha * g_big / max(np.linalg.norm(g_big), 1.0),
         "small": z["small"] - alpha * g_small / max(np.linalg.norm(g_small), 1.0)}
  # the small tensor by hand: g = 0.5z − 0.2: 1 → 1 − 0.1·0.3 = 0.97 → 0.97 − 0.1·0.285 = 0.9415
  #   → 0.9415 − 0.1·0.27075 = 0.914425
  np.testing.assert_allclose(z["small"], [0.914425], rtol=1e-12)
  out = solvers.normalized_iteration(matvec, b, iters=3, alpha=alpha)
  np.testing.assert_allclose(out["small"], z["small"], rtol=1e-6)
  np.testing.assert_allclose(out["big"], z["big"], rtol=1e-6)
  glob = solvers.normalized_iteration(matvec, b, iters=3, alpha=alpha, normalize="global")
  assert abs(float(glob["small"][0]) - 1.0) < 0.005  # the small tensor barely moves under a global cap


def test_matvec_count_is_what_the_solvers_compute():
  """Products with A counted as they execute: CG forms b − A·x0 before its `iters` iterations."""
  diag = jnp.arange(1.0, 7.0)
  b = jnp.ones(6)
  for name in solvers.SOLVERS:
    calls = []

    def matvec(v):
      jax.debug.callback(lambda: calls.append(1))
      return diag * v
    jax.block_until_ready(solvers.solve(name, matvec, b, iters=3, alpha=0.1))
    assert len(calls) == solvers.matvec_count(name, 3), name
  assert solvers.matvec_count("cg", 3) == 4
