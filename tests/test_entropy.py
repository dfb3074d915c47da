"""Entropy, cross-entropy and KL divergence against closed forms; the masked mean by hand."""
import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax.losses.entropy import entropy, kl_divergence, soft_cross_entropy
from bliss_jax.losses.lm import masked_mean

LOGITS = np.array([[0.0, np.log(3.0)], [0.0, 0.0]], np.float32)  # softmax rows: (1/4, 3/4), (1/2, 1/2)


def test_entropy_from_logits_and_from_probabilities():
  h = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
  np.testing.assert_allclose(entropy(logits=LOGITS), [h, np.log(2.0)], rtol=1e-6)
  np.testing.assert_allclose(entropy(probs=jnp.array([[0.25, 0.75], [0.5, 0.5]])), [h, np.log(2.0)], rtol=1e-6)
  np.testing.assert_allclose(entropy(logits=jnp.zeros((3, 7))), np.full(3, np.log(7.0)), rtol=1e-6)  # uniform
  assert float(entropy(probs=jnp.array([1.0, 0.0, 0.0]))) == 0.0  # 0·log 0 = 0, not NaN
  with pytest.raises(ValueError, match="exactly one"):
    entropy(logits=LOGITS, probs=LOGITS)


def test_cross_entropy_and_kl_closed_forms():
  p, q = np.array([0.25, 0.75]), np.array([0.5, 0.5])
  np.testing.assert_allclose(soft_cross_entropy(jnp.asarray(p, jnp.float32), LOGITS[1]), np.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(kl_divergence(LOGITS[0], LOGITS[1]), np.sum(p * np.log(p / q)), rtol=1e-5)
  np.testing.assert_allclose(kl_divergence(LOGITS[1], LOGITS[0]), np.sum(q * np.log(q / p)), rtol=1e-5)
  assert float(kl_divergence(LOGITS[0], LOGITS[0])) == 0.0
  # KL = CE − H
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(4, 9)).astype(np.float32), rng.normal(size=(4, 9)).astype(np.float32)
  pa = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
  np.testing.assert_allclose(kl_divergence(a, b), soft_cross_entropy(jnp.asarray(pa), b) - entropy(logits=a),
                             rtol=1e-5, atol=1e-6)


def test_masked_mean_by_hand():
  v = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  w = jnp.array([[1, 0, 1], [0, 0, 0]])
  assert float(masked_mean(v, w)) == 2.0  # (1 + 3) / 2
  np.testing.assert_array_equal(masked_mean(v, w, -1), [2.0, 0.0])  # a row without weight: 0
  np.testing.assert_array_equal(masked_mean(v, w * 0.5, -1), [2.0, 0.0])  # Σw = 1: not clamped
  np.testing.assert_array_equal(masked_mean(v, w * 0.25, -1), [0.25 + 0.75, 0.0])  # Σw = 0.5 < 1: divided by 1
  assert float(masked_mean(v, w, count=jnp.float32(4.0))) == 1.0  # a given denominator
