"""KD loss (SALT eq. 4) against hand-computed values on a 3-token, 4-word example."""
import types

import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax.losses import kd


def _hand(student_logits, teacher_logits, targets, omega, rho):
  s = np.asarray(student_logits, np.float64)
  t = np.asarray(teacher_logits, np.float64) * rho
  log_q = s - np.log(np.exp(s).sum(-1, keepdims=True))
  p = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
  ce = -log_q[np.arange(len(targets)), targets]
  soft = -(p * log_q).sum(-1)
  return (1 - omega) * ce + omega * soft


STUDENT = [[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.0, 0.0], [0.3, -0.2, 0.1, 1.0]]
TEACHER = [[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
TARGETS = [0, 1, 3]


@pytest.mark.parametrize("omega", [0.0, 0.667, 1.0])
@pytest.mark.parametrize("rho", [0.25, 1.0])
def test_kd_token_loss_hand_computed(omega, rho):
  got = kd.kd_token_loss(jnp.array(STUDENT), jnp.array(TEACHER), jnp.array(TARGETS), omega=omega, rho=rho)
  np.testing.assert_allclose(got, _hand(STUDENT, TEACHER, TARGETS, omega, rho), rtol=1e-6)


def test_omega_zero_is_exactly_ce_and_rho_flattens():
  from bliss_jax.losses.lm import token_cross_entropy
  s, t, y = jnp.array(STUDENT), jnp.array(TEACHER), jnp.array(TARGETS)
  np.testing.assert_array_equal(kd.kd_token_loss(s, t, y, omega=0.0, rho=0.25), token_cross_entropy(s, y))
  p = np.asarray(kd.teacher_distribution(t, 0.25))
  # ρ = 0.25 = Hinton τ = 4: the first row's teacher probabilities ∝ exp(0.25·z)
  np.testing.assert_allclose(p[0], np.exp([0.5, 0.25, 0.0, -0.25]) / np.exp([0.5, 0.25, 0.0, -0.25]).sum(), rtol=1e-6)


def test_kd_loss_fn_means_over_loss_positions_and_checks_vocab():
  class Fake:
    def __init__(self, logits, vocab):
      self.logits, self.cfg = jnp.array(logits)[None], types.SimpleNamespace(vocab_size=vocab)

    def apply(self, variables, tokens, **kw):
      return self.logits

  student, teacher = Fake(STUDENT, 4), Fake(TEACHER, 4)
  batch = {"decoder_input_tokens": jnp.zeros((1, 3), jnp.int32), "decoder_target_tokens": jnp.array([TARGETS]),
           "decoder_loss_weights": jnp.array([[1, 0, 1]])}
  loss_fn = kd.make_kd_loss(student, {"teacher": teacher}, omega=0.667, rho=0.25)
  loss, m = loss_fn({}, batch, None, {"teacher": {}})
  per = _hand(STUDENT, TEACHER, TARGETS, 0.667, 0.25)
  assert float(loss) == pytest.approx((per[0] + per[2]) / 2, rel=1e-6)
  assert float(m["num_tokens"]) == 2
  with pytest.raises(ValueError, match="shared tokenizer"):
    kd.make_kd_loss(student, {"teacher": Fake(TEACHER, 8)})
  with pytest.raises(ValueError, match="frozen model named 'teacher'"):
    kd.make_kd_loss(student, {})
