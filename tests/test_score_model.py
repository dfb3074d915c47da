"""Score model: mean pooling by hand, backbone = the LM's hidden states, LM params load into it."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bliss_jax.models.config import preset
from bliss_jax.models.score_model import ScoreModel, from_lm_params, mean_pool
from bliss_jax.models.transformer import Transformer


def test_mean_pool_hand_computed():
  h = jnp.arange(12.0).reshape(1, 3, 4)
  np.testing.assert_allclose(mean_pool(h, jnp.array([[1, 0, 1]])), [[4.0, 5.0, 6.0, 7.0]])


def _lm_and_score_params(x, bias):
  """A tiny LM, its parameters, a random Linear(d, 1) head with `bias`, and the score model's parameters."""
  cfg = preset("tiny", vocab_size=64)
  lm = Transformer(cfg)
  lm_params = nn.unbox(lm.init(jax.random.PRNGKey(0), x)["params"])
  head = {"kernel": jax.random.normal(jax.random.PRNGKey(1), (cfg.d_model, 1)), "bias": jnp.array([bias])}
  return cfg, lm, lm_params, head, from_lm_params(lm_params, head)


def test_score_is_linear_head_on_pooled_lm_hidden_states():
  x = jnp.array([[3, 7, 9, 11, 4, 6]])
  cfg, lm, lm_params, head, params = _lm_and_score_params(x, 0.5)
  weights = jnp.array([[0, 1, 1, 1, 1, 0]])
  sm = ScoreModel(cfg)
  shapes = jax.eval_shape(lambda: nn.unbox(sm.init(jax.random.PRNGKey(0), x)["params"]))
  assert jax.tree.structure(shapes) == jax.tree.structure(params)
  got = sm.apply({"params": params}, x, pool_mask=weights)
  _, hidden = lm.apply({"params": lm_params}, x, return_hidden=True)
  want = (hidden[0, 1:5].mean(0) @ head["kernel"])[0] + 0.5
  np.testing.assert_allclose(got[0], want, rtol=1e-5)
  np.testing.assert_allclose(ScoreModel(cfg, sigmoid=True).apply({"params": params}, x, pool_mask=weights),
                             jax.nn.sigmoid(got), rtol=1e-6)


def test_pooling_all_averages_every_row_position():
  """`pooling="all"` (the BLISS reference's average pool over the chunk) ignores the pool mask; "tokens" uses it."""
  x = jnp.array([[3, 7, 9, 11, 0, 0]])
  cfg, lm, lm_params, head, params = _lm_and_score_params(x, 0.0)
  mask = jnp.array([[1, 1, 1, 1, 0, 0]])
  _, hidden = lm.apply({"params": lm_params}, x, return_hidden=True)
  all_pos = ScoreModel(cfg, pooling="all").apply({"params": params}, x, pool_mask=mask)
  tokens = ScoreModel(cfg, pooling="tokens").apply({"params": params}, x, pool_mask=mask)
  np.testing.assert_allclose(all_pos[0], (hidden[0].mean(0) @ head["kernel"])[0], rtol=1e-5)
  np.testing.assert_allclose(tokens[0], (hidden[0, :4].mean(0) @ head["kernel"])[0], rtol=1e-5)
