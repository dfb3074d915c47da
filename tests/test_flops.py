"""`models.flops` against XLA's own count of the compiled passes (`cost_analysis()["flops"]`, which also counts the
elementwise ops the estimates leave out: hence the tolerance)."""
import jax
import jax.numpy as jnp
import pytest

from bliss_jax.bilevel import hvp as hvp_lib
from bliss_jax.losses.lm import model_logits, token_cross_entropy
from bliss_jax.models import flops
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer

B, L = 2, 32


def _xla_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


@pytest.fixture(scope="module")
def passes():
  cfg = preset("tiny", vocab_size=512, num_layers=2, d_model=64, num_heads=4, num_kv_heads=4, d_ff=256)
  model = Transformer(cfg)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (B, L), 0, cfg.vocab_size)
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]
  per_token = lambda p: token_cross_entropy(model_logits(model, p, {"decoder_input_tokens": tokens}), tokens)
  loss = lambda p: jnp.mean(per_token(p))
  counted = {
      "forward": _xla_flops(per_token, params),
      "train": _xla_flops(jax.grad(loss), params),
      "hvp": _xla_flops(lambda p, v: hvp_lib.hvp(loss, p, v), params, params),
      "hvp_with_gradient": _xla_flops(lambda p, v: jax.jvp(jax.grad(loss), (p,), (v,)), params, params),
      "jvp": _xla_flops(lambda p, v: jax.jvp(per_token, (p,), (v,)), params, params),
  }
  return cfg, counted


def test_each_pass_estimate_is_xla_s_count_of_it(passes):
  """Forward, train step, HVP (tangent only: 8/3 train; with the gradient: 3 train) and jvp (3 forward), per token.
  The HVP at 2 × train and the jvp at 2 × forward (the estimates before) were 26% and 33% under XLA's count."""
  cfg, counted = passes
  estimate = {"forward": flops.forward_flops_per_token(cfg, L), "train": flops.train_flops_per_token(cfg, L),
              "hvp": flops.hvp_flops_per_token(cfg, L),
              "hvp_with_gradient": flops.hvp_flops_per_token(cfg, L, with_gradient=True),
              "jvp": flops.jvp_flops_per_token(cfg, L)}
  for kind, est in estimate.items():
    assert counted[kind] / (B * L) == pytest.approx(est, rel=0.05), kind


def test_second_order_passes_over_a_gradient_are_xla_s_ratios(passes):
  """The ratios the bilevel step's estimate adds up, free of the elementwise ops' share: an HVP is 8/3 gradients
  (the primal weight gradients are dead), 3 with the gradient kept; a jvp is 3 forwards."""
  cfg, counted = passes
  train, forward = flops.train_flops_per_token(cfg, L), flops.forward_flops_per_token(cfg, L)
  assert flops.hvp_flops_per_token(cfg, L) / train == pytest.approx(counted["hvp"] / counted["train"], rel=0.02)
  assert flops.hvp_flops_per_token(cfg, L, with_gradient=True) / train == pytest.approx(
      counted["hvp_with_gradient"] / counted["train"], rel=0.02)
  assert flops.jvp_flops_per_token(cfg, L) / forward == pytest.approx(counted["jvp"] / counted["forward"], rel=0.02)
