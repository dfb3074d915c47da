"""Schedules at chosen steps, gradient accumulation = full batch, clipping, weight-decay mask."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bliss_jax.data.synthetic import SyntheticBatches
from bliss_jax.losses.lm import make_lm_loss, token_cross_entropy
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.training.optimizers import decay_mask, make_optimizer, make_schedule
from bliss_jax.training.train_state import create_train_state
from bliss_jax.training.train_step import make_train_step


def test_warmup_cosine_values():
  s = make_schedule("cosine", peak_lr=1.0, total_steps=110, warmup_steps=10, final_fraction=0.1)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  # halfway through the decay: final + (peak - final)·(1 + cos(π/2))/2 = 0.55
  assert float(s(60)) == pytest.approx(0.55, abs=1e-6)
  assert float(s(110)) == pytest.approx(0.1, abs=1e-6)


def test_wsd_values():
  s = make_schedule("wsd", peak_lr=2.0, total_steps=100, warmup_steps=10, final_fraction=0.0, decay_fraction=0.2)
  assert float(s(5)) == pytest.approx(1.0)
  assert float(s(50)) == pytest.approx(2.0)
  assert float(s(80)) == pytest.approx(2.0)
  assert float(s(90)) == pytest.approx(1.0)
  assert float(s(100)) == pytest.approx(0.0)
  s2 = make_schedule("wsd", peak_lr=1.0, total_steps=100, warmup_steps=0, final_fraction=0.0, decay_fraction=0.2,
                     decay_shape="1-sqrt")
  assert float(s2(85)) == pytest.approx(1 - math.sqrt(5 / 20), abs=1e-6)


def test_bad_schedule_names():
  with pytest.raises(ValueError, match="schedule='cosin': expected one of"):
    make_schedule("cosin", peak_lr=1.0, total_steps=10)
  with pytest.raises(ValueError, match="optimizer='adam_w': expected one of"):
    make_optimizer("adam_w", schedule=optax.constant_schedule(1.0))


def test_token_cross_entropy_hand_computed():
  logits = jnp.array([[0.0, jnp.log(3.0)]])  # softmax = (1/4, 3/4)
  np.testing.assert_allclose(token_cross_entropy(logits, jnp.array([1])), [-np.log(0.75)], rtol=1e-6)
  np.testing.assert_allclose(token_cross_entropy(logits, jnp.array([0])), [np.log(4.0)], rtol=1e-6)


def test_decay_mask_only_matrices():
  m = decay_mask({"kernel": jnp.zeros((2, 3)), "scale": jnp.zeros(3), "bias": jnp.zeros(3)})
  assert m == {"kernel": True, "scale": False, "bias": False}


@pytest.fixture(scope="module")
def tiny_setup():
  cfg = preset("tiny", vocab_size=64)
  model = Transformer(cfg)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"])
  batch = next(SyntheticBatches(vocab_size=64, batch_size=8, sequence_length=16))
  # uneven loss weights, so that the token-weighted accumulation matters
  w = np.ones_like(batch["decoder_loss_weights"])
  w[0, 5:] = 0
  w[3, 2:] = 0
  batch["decoder_loss_weights"] = w
  return model, params, jax.tree.map(jnp.asarray, batch)


@pytest.mark.parametrize("average", ["token", "sequence"])
def test_gradient_accumulation_equals_full_batch(tiny_setup, average):
  model, params, batch = tiny_setup
  # packed rows with 1-3 segments, so that micro-batches hold different numbers of sequences (8 + 1 + 2 = 11 in all)
  segments = np.ones((8, 16), np.int32)
  segments[1, 6:] = 2
  segments[2, 4:8], segments[2, 8:] = 2, 3
  batch = dict(batch, decoder_segment_ids=jnp.asarray(segments))
  tx = optax.sgd(1.0)  # update = -grad, so parameters compare gradients exactly
  loss_fn = make_lm_loss(model, average=average)
  full = jax.jit(make_train_step(loss_fn, tx))
  accum = jax.jit(make_train_step(loss_fn, tx, num_microbatches=4))
  s_full, m_full = full(create_train_state(params, tx), batch, jax.random.PRNGKey(0))
  s_acc, m_acc = accum(create_train_state(params, tx), batch, jax.random.PRNGKey(0))
  for a, b in zip(jax.tree.leaves(s_full.params), jax.tree.leaves(s_acc.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m_full["loss"], m_acc["loss"], rtol=1e-6)
  np.testing.assert_allclose(m_full["accuracy"], m_acc["accuracy"], rtol=1e-6)
  assert float(m_acc["num_tokens"]) == float(m_full["num_tokens"]) == 8 * 16 - 11 - 14
  if average == "sequence":
    assert float(m_acc["num_sequences"]) == float(m_full["num_sequences"]) == 11
