"""BLISS's objectives and bilevel step on a tiny LM: hand values, HVP = finite differences, the implicit hypergradient
against the unrolled one, the jvp form (H3) = the vjp form (H2), and the global-batch softmax on 8 devices = 1 device.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
import pytest

from bliss_jax import partitioning
from bliss_jax.bilevel import hvp as hvp_lib
from bliss_jax.bilevel import hypergradient
from bliss_jax.bilevel import step as bilevel_step
from bliss_jax.bilevel.loop import compiled_bilevel_step
from bliss_jax.bilevel.step import (BilevelConfig, build_bilevel_functions, clip_per_tensor, make_hypergradient,
                                    make_optimizers, make_single_pass)
from bliss_jax.losses import bilevel as objectives
from bliss_jax.losses.lm import model_logits
from bliss_jax.models.config import preset
from bliss_jax.models.score_model import ScoreModel, from_lm_params, init_head, score_batch
from bliss_jax.models.transformer import Transformer, head_weight

V, T, B = 32, 8, 8
L2 = 0.3  # strong enough that the converged lower level is well conditioned (κ ≈ 600)
PROXY = preset("tiny", vocab_size=V, num_layers=1, d_model=16, num_heads=2, num_kv_heads=1, d_ff=32)
TARGET = preset("tiny", vocab_size=V, num_layers=1, d_model=24, num_heads=2, num_kv_heads=1, d_ff=48)


def _batch(seed, n=B):
  rng = np.random.default_rng(seed)
  toks = rng.integers(2, V, size=(n, T + 1)).astype(np.int32)
  w = np.ones((n, T), np.int32)
  w[0, 5:] = 0  # one shorter example
  return {"decoder_input_tokens": toks[:, :-1], "decoder_target_tokens": toks[:, 1:], "decoder_loss_weights": w,
          "decoder_segment_ids": w.copy(), "decoder_positions": np.tile(np.arange(T, dtype=np.int32), (n, 1))}


def _params(model, seed):
  return jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, T), jnp.int32))["params"]


@pytest.fixture(scope="module")
def setup():
  proxy, target = Transformer(PROXY), Transformer(TARGET)
  p = _params(proxy, 0)
  head = {"kernel": 0.3 * jax.random.normal(jax.random.PRNGKey(5), (PROXY.d_model, 1)), "bias": jnp.zeros(1)}
  return proxy, target, p, _params(target, 1), from_lm_params(p, head)


def test_objective_parts_equal_hand_computed_values():
  rng = np.random.default_rng(0)
  logits, tlogits = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
  targets = np.array([[0, 1, 2], [3, 3, 1]])
  w = np.array([[1, 1, 0], [1, 1, 1]])
  batch = {"decoder_target_tokens": targets, "decoder_loss_weights": w}
  lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  lt = tlogits - np.log(np.exp(tlogits).sum(-1, keepdims=True))
  ce = -np.take_along_axis(lp, targets[..., None], -1)[..., 0]
  per = np.array([ce[0, :2].mean(), ce[1].mean()])
  np.testing.assert_allclose(objectives.per_sample_ce(jnp.asarray(logits), batch), per, rtol=1e-6)
  kl_fwd = (np.exp(lt) * (lt - lp)).sum(-1)
  kl_rev = (np.exp(lp) * (lp - lt)).sum(-1)
  np.testing.assert_allclose(objectives.token_kl(tlogits, logits, "target_proxy"), kl_fwd, rtol=1e-5)
  np.testing.assert_allclose(objectives.token_kl(tlogits, logits, "proxy_target"), kl_rev, rtol=1e-5)
  s = np.array([0.2, -1.0])
  P = np.exp(s) / np.exp(s).sum()
  params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([[3.0]])}
  ce_rows, kl_mean = objectives.sample_terms(jnp.asarray(logits), batch, jnp.asarray(tlogits))
  g, parts = objectives.lower_objective(ce_rows, objectives.sample_weights(jnp.asarray(s)), params, kl=kl_mean,
                                        gamma=0.5, l2=0.1)
  kl = (kl_fwd * w).sum() / w.sum()
  np.testing.assert_allclose(g, (P * per).sum() + 0.5 * kl + 0.1 * 14.0, rtol=1e-5)
  np.testing.assert_allclose(parts["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(objectives.upper_objective(jnp.asarray(logits), batch), (ce * w).sum() / w.sum(),
                             rtol=1e-6)
  np.testing.assert_allclose(objectives.sample_weights(jnp.array([1.0, 3.0]), "normalized"), [0.25, 0.75])
  with pytest.raises(ValueError, match="weighting"):
    objectives.sample_weights(jnp.ones(2), "uniform")


def test_config_refuses_inconsistent_settings():
  with pytest.raises(ValueError, match="sigmoid"):
    BilevelConfig(weighting="normalized", sigmoid=False)
  with pytest.raises(ValueError, match="solver"):
    BilevelConfig(solver="lbfgs")
  with pytest.raises(ValueError, match="kl_direction"):
    BilevelConfig(kl_direction="both")


def test_per_tensor_clip():
  tx = clip_per_tensor(1.0)
  out, _ = tx.update({"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.3, 0.4])}, tx.init(None))
  np.testing.assert_allclose(out["a"], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_allclose(out["b"], [0.3, 0.4], rtol=1e-6)


def test_lm_hvp_equals_finite_differences_of_gradients(setup):
  proxy, _, p, _, _ = setup
  batch = _batch(0)
  f = lambda q: objectives.upper_objective(model_logits(proxy, q, batch), batch)
  v = jax.tree.map(lambda x: x / otu.tree_norm(x) if x.size else x,
                   otu.tree_random_like(jax.random.PRNGKey(3), p))
  v = otu.tree_scale(1.0 / otu.tree_norm(v), v)
  hv = jax.jit(lambda q, u: hvp_lib.hvp(f, q, u))(p, v)
  eps, g = 1e-2, jax.jit(jax.grad(f))
  fd = otu.tree_scale(1 / (2 * eps), otu.tree_sub(g(otu.tree_add_scale(p, eps, v)),
                                                  g(otu.tree_add_scale(p, -eps, v))))
  rel = float(otu.tree_norm(otu.tree_sub(hv, fd)) / otu.tree_norm(hv))
  assert rel < 2e-3, rel


def _lm_problem(setup, gamma=0.0):
  proxy, target, p, tp, s = setup
  score_model = ScoreModel(PROXY, sigmoid=False)
  batch, val = _batch(1), _batch(2)
  tl = model_logits(target, tp, batch) if gamma else None
  weights = lambda sp: objectives.sample_weights(score_batch(score_model, sp, batch))

  def inner(q, sp):
    ce, kl = objectives.sample_terms(model_logits(proxy, q, batch), batch, tl)
    return objectives.lower_objective(ce, weights(sp), q, kl=kl, gamma=gamma, l2=L2)[0]

  outer = lambda q: objectives.upper_objective(model_logits(proxy, q, val), val)
  per_sample = lambda q: objectives.per_sample_ce(model_logits(proxy, q, batch), batch)
  return proxy, p, s, inner, outer, per_sample, weights


def test_jvp_form_equals_vjp_form_on_an_lm_with_kl(setup):
  proxy, p, s, inner, outer, per_sample, weights = _lm_problem(setup, gamma=0.1)
  z = otu.tree_random_like(jax.random.PRNGKey(7), p)
  fast, _ = jax.jit(hypergradient.weighted_sum_hypergradient, static_argnums=(0, 1))(per_sample, weights, p, s, z)
  general = jax.jit(hypergradient.mixed_term, static_argnums=(0,))(inner, p, s, z)
  rel = float(otu.tree_norm(otu.tree_add(fast, general)) / otu.tree_norm(general))
  assert rel < 1e-4, rel


def _cosine(a, b):
  return float(otu.tree_vdot(a, b) / (otu.tree_norm(a) * otu.tree_norm(b)))


def test_implicit_and_unrolled_hypergradients_agree_near_the_lower_optimum(setup):
  """θp run to (near) the lower optimum by Adam; the unrolled hypergradient of K SGD steps from there is the
  Neumann series of the same K terms (they agree tightly), and tends to the CG solution as K grows."""
  proxy, p0, s, inner, outer, per_sample, weights = _lm_problem(setup)

  @jax.jit
  def converge(p):
    tx = optax.adam(optax.cosine_decay_schedule(1e-2, 1000))
    def body(carry, _):
      q, st = carry
      u, st = tx.update(jax.grad(inner)(q, s), st, q)
      return (optax.apply_updates(q, u), st), None
    return jax.lax.scan(body, (p, tx.init(p)), None, length=1000)[0][0]

  p_star = converge(p0)
  grad_norm = float(otu.tree_norm(jax.grad(inner)(p_star, s)))
  assert grad_norm < 1e-2, grad_norm
  matvec = jax.jit(hvp_lib.damped_hvp(lambda q: inner(q, s), p_star))
  v = otu.tree_random_like(jax.random.PRNGKey(1), p_star)
  for _ in range(40):  # power iteration: the step 1/λ_max keeps SGD (and the Neumann series) contracting
    hv = matvec(v)
    lam_max, v = float(otu.tree_vdot(v, hv) / otu.tree_vdot(v, v)), otu.tree_scale(1.0 / otu.tree_norm(hv), hv)
  lr, K = 0.9 / lam_max, 1000

  @jax.jit
  def both(p):
    unrolled = hypergradient.unrolled_hypergradient(inner, outer, p, s, steps=K, tx=optax.sgd(lr))[1]
    cg, _ = hypergradient.implicit_hypergradient(inner, outer, p, s, solver="cg", iters=200)
    neumann, _ = hypergradient.implicit_hypergradient(inner, outer, p, s, solver="neumann", iters=K - 1, alpha=lr)
    return unrolled, cg, neumann

  unrolled, cg, neumann = both(p_star)
  cos_neumann, cos_cg = _cosine(unrolled, neumann), _cosine(unrolled, cg)
  print(f"cos(unrolled, neumann K)={cos_neumann:.5f} cos(unrolled, CG)={cos_cg:.5f}")
  assert cos_neumann > 0.999, cos_neumann
  assert cos_cg > 0.99, cos_cg


@pytest.fixture(scope="module")
def bilevel_cfg():
  return BilevelConfig(gamma=0.1, l2=1e-3, inner_steps=2, solver="cg", solver_iters=4, proxy_lr=1e-3, score_lr=1e-2,
                       sigmoid=True)


def _run_step(setup, cfg, devices, steps=2):
  _, _, p, tp, s = setup
  mesh = partitioning.make_mesh(devices=devices)
  rules = partitioning.logical_rules()
  with partitioning.mesh_context(mesh, rules):
    fns = build_bilevel_functions(PROXY, TARGET, cfg, 10, mesh, rules,
                                  target_shardings=jax.tree.map(lambda _: partitioning.replicated(mesh), tp))
    state = fns.init(p, s)
    out = []
    for i in range(steps):
      train = jax.tree.map(lambda *x: np.stack(x), *[_batch(10 * i + k) for k in range(cfg.inner_steps)])
      state, m = fns.step(state, train, _batch(100 + i), tp)
      out.append(jax.device_get(m))
    return jax.device_get(state), out


@pytest.mark.integration
def test_bilevel_step_on_8_devices_equals_1_device(setup, bilevel_cfg):
  """The softmax over the batch is global: with rows split over 8 devices the step is the 1-device step; so is the
  step rematerialised over 2 microbatches of rows on 8 devices."""
  s1, m1 = _run_step(setup, bilevel_cfg, jax.devices()[:1])
  s8, m8 = _run_step(setup, bilevel_cfg, jax.devices()[:8])
  lean, m_lean = _run_step(setup, dataclasses.replace(bilevel_cfg, remat=True, microbatches=2), jax.devices()[:8])
  for other, m_other in ((s8, m8), (lean, m_lean)):
    for a, b in zip(m1, m_other):
      for k in ("upper_F", "lower_G", "weight_max", "hypergrad_norm", "lower_kl"):
        np.testing.assert_allclose(a[k], b[k], rtol=2e-5, err_msg=k)
    # Adam's normalised updates move each weight by up to score_lr = 1e-2 per step; round-off differences between
    # the 1- and 8-device reductions stay below 1e-5 of that
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5), s1.score, other.score)
  assert int(s8.step) == 2
  # the step changed the score model and the proxy, and the weights are a distribution over the GLOBAL batch
  assert not np.allclose(s8.score["head"]["kernel"], setup[4]["head"]["kernel"])
  assert 1.0 / B <= m8[0]["weight_max"] < 1.0


def test_vjp_and_jvp_steps_agree(setup, bilevel_cfg):
  sj, mj = _run_step(setup, bilevel_cfg, jax.devices()[:1], steps=1)
  sv, mv = _run_step(setup, dataclasses.replace(bilevel_cfg, mixed="vjp"), jax.devices()[:1], steps=1)
  np.testing.assert_allclose(mj[0]["hypergrad_norm"], mv[0]["hypergrad_norm"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), sj.score, sv.score)


def test_reference_objective_reads_prefix_lm_rows_causally():
  """F on a prefix-LM reference batch (LAMBADA: context, then continuation) = the causal CE of the continuation
  tokens of the same rows; the proxy never attends bidirectionally over the context (2 layers, so it would show)."""
  cfg = dataclasses.replace(PROXY, num_layers=2)
  model = Transformer(cfg)
  params = _params(model, 3)
  batch = _batch(7)
  prefix = np.zeros((B, T), np.int32)
  prefix[:, :6] = 1  # the context: inputs 0..5 (bidirectional under a prefix-LM mask)
  loss_w = batch["decoder_loss_weights"] * (1 - prefix)  # loss on the continuation only
  ref = dict(batch, decoder_causal_attention=prefix, decoder_loss_weights=loss_w)
  causal_logits = np.asarray(model.apply({"params": params}, batch["decoder_input_tokens"],
                                         segment_ids=batch["decoder_segment_ids"],
                                         positions=batch["decoder_positions"]))
  lp = causal_logits - np.log(np.exp(causal_logits).sum(-1, keepdims=True))
  ce = -np.take_along_axis(lp, batch["decoder_target_tokens"][..., None], -1)[..., 0]
  want = float((ce * loss_w).sum() / loss_w.sum())
  got = float(objectives.reference_objective(model, params, ref))
  np.testing.assert_allclose(got, want, rtol=2e-6)
  bidirectional = float(objectives.upper_objective(model_logits(model, params, ref), ref))
  assert abs(bidirectional - want) > 2e-5 * want  # what F was before: a different number


def test_bilevel_step_uses_the_causal_reference_objective(setup):
  """The step's upper_F on a prefix-LM reference batch is `reference_objective` at the updated proxy."""
  proxy, _, p, _, s = setup
  cfg = BilevelConfig(gamma=0.0, proxy_lr=1e-3, score_lr=1e-3, solver="cg", solver_iters=2)
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  rules = partitioning.logical_rules()
  prefix = np.zeros((B, T), np.int32)
  prefix[:, :3] = 1
  val = dict(_batch(11), decoder_causal_attention=prefix,
             decoder_loss_weights=_batch(11)["decoder_loss_weights"] * (1 - prefix))
  with partitioning.mesh_context(mesh, rules):
    fns = build_bilevel_functions(PROXY, None, cfg, 4, mesh, rules, sequence_length=T)
    state = fns.init(p, s)
    train = jax.tree.map(lambda x: x[None], _batch(3))
    new, m = fns.step(state, train, val, None)
  np.testing.assert_allclose(m["upper_F"], objectives.reference_objective(proxy, new.proxy, val), rtol=1e-5)


def test_score_head_init_is_torchs_linear_default():
  h = init_head(256, "uniform", seed=3)
  bound = 1 / 16
  assert h["kernel"].shape == (256, 1) and h["bias"].shape == (1,)
  assert np.abs(h["kernel"]).max() <= bound and np.abs(h["kernel"]).max() > 0.9 * bound
  assert np.std(h["kernel"]) == pytest.approx(bound / np.sqrt(3), rel=0.15)  # U(−b, b) has std b/√3
  np.testing.assert_array_equal(init_head(256, "uniform", seed=3)["kernel"], h["kernel"])
  assert not np.any(init_head(8, "zeros")["kernel"])
  assert BilevelConfig().score_head_init == "uniform"


def test_bilevel_optimizers_follow_the_reference():
  """Cosine to 0 (not 10%) and weight decay on every parameter (biases and norm scales too)."""
  cfg = BilevelConfig(proxy_lr=1e-2, score_lr=1e-2, weight_decay=0.5, proxy_clip=None, score_clip=None)
  ptx, _, psched, _ = make_optimizers(cfg, 10)
  assert float(psched(10)) == 0.0 and float(psched(5)) == pytest.approx(0.5e-2)
  params = {"bias": jnp.ones(3), "kernel": jnp.ones((2, 2))}
  zero = jax.tree.map(jnp.zeros_like, params)
  upd, _ = ptx.update(zero, ptx.init(params), params)
  lr0 = float(psched(0))
  np.testing.assert_allclose(upd["bias"], -lr0 * 0.5 * np.ones(3), rtol=1e-6)  # decay reaches the bias
  old = BilevelConfig(proxy_lr=1e-2, score_lr=1e-2, weight_decay=0.5, proxy_clip=None, score_clip=None,
                      decay_on="matrices", final_fraction=0.1)
  ptx, _, psched, _ = make_optimizers(old, 10)
  assert float(psched(10)) == pytest.approx(1e-3)
  upd, _ = ptx.update(zero, ptx.init(params), params)
  np.testing.assert_array_equal(upd["bias"], np.zeros(3))


def _target_chunks(target, tp, batch, **kw):
  """The target's logits of `batch` as the bilevel step passes them (`objectives.logit_chunks`)."""
  hidden = model_logits(target, tp, batch, return_hidden="only")
  return objectives.logit_chunks(target.cfg, head_weight(target.cfg, tp), hidden, **kw)


def _full_lower(proxy, batch, tl, gamma, l2=L2, direction="target_proxy"):
  """G from the full logits (`sample_terms`), with fixed weights `w`: what the chunked objective must equal."""
  def g(q, w):
    ce, kl = objectives.sample_terms(model_logits(proxy, q, batch), batch, tl, direction)
    return objectives.lower_objective(ce, w, q, kl=kl, gamma=gamma, l2=l2)[0]
  return g


@pytest.mark.parametrize("direction", ["target_proxy", "proxy_target", None])
def test_chunked_sample_terms_equal_the_full_logits_to_second_order(setup, direction):
  """Values, gradient and HVP of G over chunks of 3 positions (T = 8: the last chunk padded) = from the full logits."""
  proxy, target, p, tp, _ = setup
  batch = _batch(1)
  tl = None if direction is None else model_logits(target, tp, batch)
  chunks = None if direction is None else _target_chunks(target, tp, batch, chunk_tokens=3 * B)
  gamma = 0.0 if direction is None else 0.3
  w = objectives.sample_weights(jnp.linspace(-1.0, 1.0, B))

  def chunked(q):
    hidden = model_logits(proxy, q, batch, return_hidden="only")
    ce, kl = objectives.chunked_sample_terms(PROXY, head_weight(PROXY, q), hidden, batch, chunks,
                                             direction or "target_proxy", chunk_tokens=3 * B)
    return ce, kl, objectives.lower_objective(ce, w, q, kl=kl, gamma=gamma, l2=L2)[0]

  full = lambda q: _full_lower(proxy, batch, tl, gamma, direction=direction or "target_proxy")(q, w)
  ce, kl, g = jax.jit(chunked)(p)
  ce_full, kl_full = objectives.sample_terms(model_logits(proxy, p, batch), batch, tl, direction or "target_proxy")
  np.testing.assert_allclose(ce, ce_full, rtol=1e-5)
  assert (kl is None) == (direction is None)
  if kl is not None:
    np.testing.assert_allclose(kl, kl_full, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(g, full(p), rtol=1e-5)
  rel = lambda a, b: float(otu.tree_norm(otu.tree_sub(a, b)) / otu.tree_norm(b))
  assert rel(jax.jit(jax.grad(lambda q: chunked(q)[2]))(p), jax.jit(jax.grad(full))(p)) < 1e-5
  v = otu.tree_random_like(jax.random.PRNGKey(4), p)
  h_chunked = jax.jit(lambda q, u: hvp_lib.hvp(lambda x: chunked(x)[2], q, u))
  assert rel(h_chunked(p, v), jax.jit(lambda q, u: hvp_lib.hvp(full, q, u))(p, v)) < 1e-4


def test_the_chunked_objectives_hvp_holds_no_full_logits():
  """Compiled, the HVP of G over chunks of 3 positions has [B, 3, V] logits and no [B, T, V] (nor padded [B, 9, V])
  ones; from the full logits it has them (d_ff = 40 so that no MLP activation shares the logits' shape)."""
  cfg = dataclasses.replace(PROXY, d_ff=40)
  proxy, batch = Transformer(cfg), _batch(1)
  p = _params(proxy, 0)
  w = jnp.full((B,), 1.0 / B)

  def g(q, chunk_tokens):
    if not chunk_tokens:
      return _full_lower(proxy, batch, None, 0.0)(q, w)
    hidden = model_logits(proxy, q, batch, return_hidden="only")
    ce, _ = objectives.chunked_sample_terms(cfg, head_weight(cfg, q), hidden, batch, chunk_tokens=chunk_tokens)
    return objectives.lower_objective(ce, w, q, l2=L2)[0]

  hlo = lambda n: jax.jit(lambda q: hvp_lib.hvp(lambda x: g(x, n), q, q)).lower(p).compile().as_text()
  chunked, full = hlo(3 * B), hlo(0)
  assert f"f32[{B},3,{V}]" in chunked
  assert f"f32[{B},{T},{V}]" not in chunked and f"f32[{B},9,{V}]" not in chunked
  assert f"f32[{B},{T},{V}]" in full


SINGLE = BilevelConfig(gamma=0.1, l2=1e-3, schedule="single_pass", solver="neumann", solver_iters=1, warm_start=True,
                       damping=0.5, solver_alpha=0.05, sigmoid=True)


def test_single_pass_is_one_iteration_of_each_part(setup):
  """One forward-over-reverse pass gives ∇G, z' = z − α((∇²G + λ_z I)z − ∇F) and ∇Φ = (H3) along z, each equal to
  its own computation from the full logits."""
  proxy, target, p, tp, s = setup
  score_model = ScoreModel(PROXY, sigmoid=True)
  batch, val = _batch(1), _batch(2)
  tl = model_logits(target, tp, batch)
  z = otu.tree_random_like(jax.random.PRNGKey(9), p)
  grad, (g, parts), hyper, z_new, aux = jax.jit(make_single_pass(proxy, score_model, SINGLE))(
      p, s, z, batch, val, _target_chunks(target, tp, batch))
  weights = lambda sp: objectives.sample_weights(score_batch(score_model, sp, batch))
  inner = _full_lower(proxy, batch, tl, SINGLE.gamma, SINGLE.l2)
  w = weights(s)
  rel = lambda a, b: float(otu.tree_norm(otu.tree_sub(a, b)) / otu.tree_norm(b))
  np.testing.assert_allclose(g, inner(p, w), rtol=1e-5)
  assert rel(grad, jax.grad(inner)(p, w)) < 1e-5
  grad_f = jax.grad(lambda q: objectives.upper_objective(model_logits(proxy, q, val), val))(p)
  hz = hvp_lib.hvp(lambda q: inner(q, w), p, z)
  want = otu.tree_add_scale(z, -SINGLE.solver_alpha, otu.tree_sub(otu.tree_add_scale(hz, SINGLE.damping, z), grad_f))
  assert rel(z_new, want) < 1e-5
  per_sample = lambda q: objectives.per_sample_ce(model_logits(proxy, q, batch), batch)
  want_hyper, want_a = hypergradient.weighted_sum_hypergradient(per_sample, weights, p, s, z)
  np.testing.assert_allclose(aux["a"], want_a, rtol=1e-4, atol=1e-6)
  assert rel(hyper, want_hyper) < 1e-4
  np.testing.assert_allclose(parts["kl"], objectives.sample_terms(model_logits(proxy, p, batch), batch, tl)[1],
                             rtol=1e-5)


def test_single_pass_leaves_the_solved_z_in_place_and_gives_its_hypergradient(setup):
  """At z* solving (H1) (CG to convergence), the single pass's iteration does not move z and its ∇Φ is the
  sequential schedule's converged one. λ_z = 10: at this random θp, ∇²G has negative eigenvalues that smaller
  dampings leave, and CG then does not converge."""
  proxy, target, p, tp, s = setup
  single = dataclasses.replace(SINGLE, damping=10.0)
  score_model = ScoreModel(PROXY, sigmoid=True)
  batch, val = _batch(1), _batch(2)
  solved = dataclasses.replace(single, schedule="sequential", solver="cg", solver_iters=60, warm_start=False)
  chunks = _target_chunks(target, tp, batch)
  hyper_cg, z_star, _ = jax.jit(make_hypergradient(proxy, score_model, solved))(p, s, batch, val, chunks)
  _, _, hyper, z_new, _ = jax.jit(make_single_pass(proxy, score_model, single))(p, s, z_star, batch, val, chunks)
  rel = lambda a, b: float(otu.tree_norm(otu.tree_sub(a, b)) / otu.tree_norm(b))
  assert rel(z_new, z_star) < 2e-6
  assert rel(hyper, hyper_cg) < 1e-4


def test_single_pass_step_moves_the_proxy_like_the_sequential_step(setup, bilevel_cfg):
  """The lower steps do not depend on z: K_in = 2 single-pass and sequential steps give the same proxy; from z = 0
  the first z is α·∇F at the last lower step's θp; the metrics have the same names."""
  single = dataclasses.replace(bilevel_cfg, schedule="single_pass", solver="neumann", solver_iters=1,
                               warm_start=True, solver_alpha=0.05)
  seq_state, seq_m = _run_step(setup, bilevel_cfg, jax.devices()[:1], steps=1)
  state, m = _run_step(setup, single, jax.devices()[:1], steps=1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), state.proxy, seq_state.proxy)
  assert set(m[0]) == set(seq_m[0])
  np.testing.assert_allclose(m[0]["lower_G"], seq_m[0]["lower_G"], rtol=1e-5)
  _, _, p, _, _ = setup
  one = dataclasses.replace(single, inner_steps=1)
  state, m = _run_step(setup, one, jax.devices()[:1], steps=1)
  proxy = Transformer(PROXY)
  grad_f = jax.grad(lambda q: objectives.reference_objective(proxy, q, _batch(100)))(p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 0.05 * b, rtol=1e-5, atol=1e-9), nn.unbox(state.z),
               nn.unbox(grad_f))
  assert m[0]["hypergrad_norm"] == 0.0  # a = ⟨∇L_i, 0⟩


def test_single_pass_refuses_settings_it_cannot_run():
  for bad in ({"solver": "cg"}, {"solver_iters": 3}, {"warm_start": False}, {"mixed": "vjp"}):
    with pytest.raises(ValueError, match="single_pass"):
      BilevelConfig(**dict(dict(schedule="single_pass", solver="normalized", solver_iters=1, warm_start=True), **bad))
  with pytest.raises(ValueError, match="schedule"):
    BilevelConfig(schedule="simultaneous")


@pytest.mark.integration
def test_remat_step_equals_the_plain_step_and_holds_less():
  """`remat=True` runs the proxy and the score model scanned over their layers with each block rematerialised, on
  the unscanned parameters: the same step (sequential and single pass) to float tolerance, and a compiled step whose
  temporary memory is smaller (the activations of every block and their tangents are no longer all kept). The step
  compiled on abstract inputs (`bilevel.loop.compiled_bilevel_step`, what scripts/bench_bilevel.py --memory_only
  measures) is the same program: the same buffer sizes as the step compiled on the concrete state."""
  cfg2 = dataclasses.replace(PROXY, num_layers=3, d_ff=64)
  proxy = Transformer(cfg2)
  p = _params(proxy, 0)
  s = from_lm_params(p, {"kernel": 0.3 * jax.random.normal(jax.random.PRNGKey(5), (cfg2.d_model, 1)),
                         "bias": jnp.zeros(1)})
  tp = _params(Transformer(TARGET), 1)
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  rules = partitioning.logical_rules()
  base = BilevelConfig(gamma=0.1, l2=1e-3, solver="normalized", solver_iters=2, proxy_lr=1e-3, score_lr=1e-2)
  single = dataclasses.replace(base, schedule="single_pass", solver_iters=1, warm_start=True)
  train = jax.tree.map(lambda x: x[None], _batch(3, n=16))
  val = _batch(4, n=16)
  for cfg in (base, single):
    states, temps = [], []
    for remat in (False, True):
      with partitioning.mesh_context(mesh, rules):
        fns = build_bilevel_functions(cfg2, TARGET, dataclasses.replace(cfg, remat=remat), 10, mesh, rules,
                                      target_shardings=jax.tree.map(lambda _: partitioning.replicated(mesh), tp))
        state = fns.init(p, s)
        m = fns.step.lower(state, train, val, tp).compile().memory_analysis()
        temps.append(m.temp_size_in_bytes)
      abstract = compiled_bilevel_step(cfg2, TARGET, dataclasses.replace(cfg, remat=remat), batch_size=16,
                                       sequence_length=T, num_steps=10, mesh=mesh, fsdp=False).memory_analysis()
      assert ([getattr(abstract, k + "_size_in_bytes") for k in ("argument", "output", "temp", "alias")] ==
              [getattr(m, k + "_size_in_bytes") for k in ("argument", "output", "temp", "alias")])
      with partitioning.mesh_context(mesh, rules):
        for _ in range(2):
          state, _ = fns.step(state, train, val, tp)
        states.append(jax.device_get(state))
    for part in ("proxy", "score", "z"):
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=part),
                   getattr(states[0], part), getattr(states[1], part))
    assert temps[1] < 0.8 * temps[0], temps  # about 0.3x at these shapes


def _long_batch(seed, n=16, t=40):
  """n rows of t positions (3 chunks of 16 positions at 16 rows, the last padded), with fractional loss weights, a
  shorter row and a row without loss-carrying tokens."""
  rng = np.random.default_rng(seed)
  toks = rng.integers(2, V, size=(n, t + 1)).astype(np.int32)
  w = np.ones((n, t), np.float32)
  w[0, 25:] = 0
  w[1] = 0
  w[2, ::3] = 0.5
  return {"decoder_input_tokens": toks[:, :-1], "decoder_target_tokens": toks[:, 1:], "decoder_loss_weights": w,
          "decoder_segment_ids": np.ones((n, t), np.int32),
          "decoder_positions": np.tile(np.arange(t, dtype=np.int32), (n, 1))}


def test_microbatched_objectives_equal_the_whole_batch(setup):
  """`microbatches=4`: the solve's z (HVPs of G with the KL), the alignments a and ∇Φ, and the single pass's ∇G,
  ∇²G·z and ∇Φ, computed over 4 microbatches of rows (strided), equal the whole batch's: per-row values rejoined in
  order, the KL's token mean recombined with fractional loss weights and a row without tokens (∇F and F: the whole
  batch either way)."""
  proxy, target, p, tp, s = setup
  score_model = ScoreModel(PROXY, sigmoid=True)
  batch, val = _long_batch(1), _long_batch(2)
  chunks = _target_chunks(target, tp, batch)
  assert chunks.shape[0] == 3
  base = BilevelConfig(gamma=0.3, l2=1e-3, solver="cg", solver_iters=3)
  single = dataclasses.replace(SINGLE, gamma=0.3)
  z = otu.tree_random_like(jax.random.PRNGKey(6), p)
  rel = lambda a, b: float(otu.tree_norm(otu.tree_sub(a, b)) / otu.tree_norm(b))
  whole = jax.jit(make_hypergradient(proxy, score_model, base))(p, s, batch, val, chunks)
  whole_single = jax.jit(make_single_pass(proxy, score_model, single))(p, s, z, batch, val, chunks)
  for extra in ({"microbatches": 4},):  # with remat: test_bilevel_step_on_8_devices_equals_1_device
    hyper, z_solved, aux = jax.jit(make_hypergradient(proxy, score_model, dataclasses.replace(base, **extra)))(
        p, s, batch, val, chunks)
    assert rel(z_solved, whole[1]) < 1e-4 and rel(hyper, whole[0]) < 1e-4, extra
    np.testing.assert_allclose(aux["F"], whole[2]["F"], rtol=1e-5)
    np.testing.assert_allclose(aux["a"], whole[2]["a"], rtol=1e-4, atol=1e-7)
    grad, (g, parts), hyper, z_new, _ = jax.jit(make_single_pass(proxy, score_model, dataclasses.replace(
        single, **extra)))(p, s, z, batch, val, chunks)
    np.testing.assert_allclose(parts["kl"], whole_single[1][1]["kl"], rtol=1e-5)
    np.testing.assert_allclose(g, whole_single[1][0], rtol=1e-5)
    assert rel(grad, whole_single[0]) < 1e-5 and rel(z_new, whole_single[3]) < 1e-5
    assert rel(hyper, whole_single[2]) < 1e-4
  with pytest.raises(ValueError, match="microbatches=3 does not divide the batch's 16 rows"):
    jax.jit(make_hypergradient(proxy, score_model, dataclasses.replace(base, microbatches=3)))(
        p, s, batch, val, chunks)
  with pytest.raises(ValueError, match="microbatches=0"):
    BilevelConfig(microbatches=0)


def _sub_jaxprs(eqn):
  """The jaxprs an equation holds (jit, checkpoint, custom rules, loops, cond branches)."""
  for v in eqn.params.values():
    for sub in (v if isinstance(v, (tuple, list)) else (v,)):
      inner = getattr(sub, "jaxpr", sub)
      if hasattr(inner, "eqns"):
        yield inner


def _scans(jaxpr):
  """(length, body) of every scan in a jaxpr and its sub-jaxprs."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      yield eqn.params["length"], eqn.params["jaxpr"].jaxpr
    for inner in _sub_jaxprs(eqn):
      yield from _scans(inner)


@pytest.mark.parametrize("schedule", ["sequential", "single_pass"])
def test_microbatches_split_the_second_order_passes_only(setup, schedule):
  """`microbatches=4` splits G's terms in the passes differentiated twice (the solver's HVPs and the alignments' jvp,
  or the single pass) and leaves the K_in first-order lower steps and ∇F on the whole batch: splitting them cost
  time for no lower peak. The scan over 4 microbatches (length 4) appears in no lower step; with K_in = 3, one layer
  and one chunk of positions, no scan before the lower steps' has these lengths (the solver's 3 iterations come
  after)."""
  _, _, p, tp, s = setup
  cfg = BilevelConfig(gamma=0.3, inner_steps=3, remat=True, microbatches=4, schedule=schedule,
                      **({"solver_iters": 1, "warm_start": True} if schedule == "single_pass" else {}))
  mesh = partitioning.make_mesh(devices=jax.devices()[:1])
  rules = partitioning.logical_rules()
  with partitioning.mesh_context(mesh, rules):
    fns = build_bilevel_functions(PROXY, TARGET, cfg, 10, mesh, rules,
                                  target_shardings=jax.tree.map(lambda _: partitioning.replicated(mesh), tp))
    train = jax.tree.map(lambda *x: np.stack(x), *[_batch(k) for k in range(3)])
    jaxpr = jax.make_jaxpr(fns.step)(fns.init(p, s), train, _batch(9), tp).jaxpr
  k_plain = 3 if schedule == "sequential" else 2  # the single pass makes the last one
  lower = next(body for length, body in _scans(jaxpr) if length == k_plain)  # the first: the step runs it first
  assert 4 not in [n for n, _ in _scans(lower)], [n for n, _ in _scans(lower)]
  assert 4 in [n for n, _ in _scans(jaxpr)]  # the second-order passes' microbatches


def test_rematerialised_microbatches_keep_the_target_chunks_by_reference():
  """With `remat` the microbatch body is not checkpointed, and reverse mode keeps what each microbatch's head scan
  reads: the target's logit chunks must reach that scan as the microbatch scan slices them, so that JAX keeps the
  slices by reference instead of stacking a copy of the whole batch's chunks (a `stop_gradient` or transpose in between
  made one: 19.1 MB of temporaries here against 12.6 MB with a checkpointed body)."""
  v = 2048  # the target's chunks (6.3 MB) dominate the tiny models' activations
  proxy = Transformer(dataclasses.replace(PROXY, vocab_size=v))
  target = Transformer(dataclasses.replace(TARGET, vocab_size=v))
  p, batch = _params(proxy, 0), _long_batch(1)
  chunks = _target_chunks(target, _params(target, 1), batch)
  w = jnp.full((16,), 1 / 16)
  temps = []
  for remat in (False, True):
    cfg = BilevelConfig(gamma=0.3, remat=remat, microbatches=4)
    lower = bilevel_step._lower_objective(bilevel_step._rematerialised(proxy, cfg), cfg)
    grad = jax.jit(jax.grad(lambda q, c: lower(q, w, batch, c)[0]))  # pylint: disable=cell-var-from-loop
    temps.append(grad.lower(p, chunks).compile().memory_analysis().temp_size_in_bytes)
  assert temps[1] < temps[0] + 0.5 * chunks.nbytes, (temps, chunks.nbytes)
