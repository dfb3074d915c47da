"""KD loss (SALT eq. 4) against hand-computed values on a 3-token, 4-word example; its token and per-sequence batch
means (Algorithm 1) on packed rows."""
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


class _Fixed:
  """A model whose logits are fixed ([B, T, V]); `cfg.vocab_size` as KD checks it."""

  def __init__(self, logits):
    self.logits, self.cfg = jnp.asarray(logits, jnp.float32), types.SimpleNamespace(vocab_size=len(logits[0][0]))

  def apply(self, variables, tokens, **kw):
    return self.logits


# Two packed rows of 5 positions. Row 0: segment 1 = positions 0-2 (3 loss tokens), segment 2 = positions 3-4 (one
# loss token, position 4 has weight 0); row 1: one segment of 2 loss tokens, then padding. 3 sequences, 6 tokens.
ROWS_STUDENT = [STUDENT + STUDENT[:2], STUDENT[::-1] + STUDENT[:2]]
ROWS_TEACHER = [TEACHER + TEACHER[1:], TEACHER[1:] + TEACHER]
ROWS_TARGETS = [TARGETS + [2, 0], [3, 0, 1, 0, 0]]
ROWS_SEGMENTS = [[1, 1, 1, 2, 2], [1, 1, 0, 0, 0]]
ROWS_WEIGHTS = [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]]


@pytest.mark.parametrize("omega", [0.0, 0.667])
def test_kd_loss_sequence_and_token_means_hand_computed(omega):
  per = [_hand(ROWS_STUDENT[r], ROWS_TEACHER[r], ROWS_TARGETS[r], omega, 0.25) for r in range(2)]
  by_sequence = (np.mean(per[0][0:3]) + per[0][3] + np.mean(per[1][0:2])) / 3  # mean of the 3 sequences' means
  by_token = (per[0][0:4].sum() + per[1][0:2].sum()) / 6
  assert abs(by_sequence - by_token) > 0.05  # the two averages differ on this batch
  batch = {"decoder_input_tokens": jnp.zeros((2, 5), jnp.int32), "decoder_target_tokens": jnp.array(ROWS_TARGETS),
           "decoder_loss_weights": jnp.array(ROWS_WEIGHTS), "decoder_segment_ids": jnp.array(ROWS_SEGMENTS)}
  models = (_Fixed(ROWS_STUDENT), {"teacher": _Fixed(ROWS_TEACHER)})
  for average, want in (("sequence", by_sequence), ("token", by_token)):
    loss, m = kd.make_kd_loss(*models, omega=omega, rho=0.25, average=average)({}, batch, None, {"teacher": {}})
    assert float(loss) == pytest.approx(want, rel=1e-6) and float(m["num_tokens"]) == 6
  assert float(m["loss"]) == pytest.approx(by_token, rel=1e-6) and "denominator" not in m  # token: weight = tokens
  _, m = kd.make_kd_loss(*models, omega=omega, rho=0.25, average="sequence")({}, batch, None, {"teacher": {}})
  assert float(m["num_sequences"]) == float(m["denominator"]) == 3  # the weight of gradient accumulation
  if omega == 0.0:  # ω = 0 is the LM loss, averaged the same way
    from bliss_jax.losses.lm import make_lm_loss  # pylint: disable=g-import-not-at-top
    # (from the stand-in's logits: it has no hidden states for the chunked head)
    loss, _ = make_lm_loss(models[0], average="sequence", chunk_tokens=0)({}, batch, None)
    assert float(loss) == pytest.approx(by_sequence, rel=1e-6)


def test_salt_kd_loss_averages_per_sequence_by_default():
  from bliss_jax.losses.salt import make_salt_kd_loss, salt_kd_loss_factory  # pylint: disable=g-import-not-at-top
  per = [_hand(ROWS_STUDENT[r], ROWS_TEACHER[r], ROWS_TARGETS[r], 0.667, 0.25) for r in range(2)]
  by_sequence = (np.mean(per[0][0:3]) + per[0][3] + np.mean(per[1][0:2])) / 3
  batch = {"decoder_input_tokens": jnp.zeros((2, 5), jnp.int32), "decoder_target_tokens": jnp.array(ROWS_TARGETS),
           "decoder_loss_weights": jnp.array(ROWS_WEIGHTS), "decoder_segment_ids": jnp.array(ROWS_SEGMENTS)}
  models = (_Fixed(ROWS_STUDENT), {"teacher": _Fixed(ROWS_TEACHER)})
  for loss_fn in (make_salt_kd_loss(*models, 0.667, 0.25), salt_kd_loss_factory(0.667, 0.25, n_kd=5)(*models)):
    loss, _ = loss_fn({}, batch, None, {"teacher": {}}, jnp.int32(1))
    assert float(loss) == pytest.approx(by_sequence, rel=1e-6)
  with pytest.raises(ValueError, match="average"):
    make_salt_kd_loss(*models, 0.667, 0.25, average="row")


@pytest.mark.parametrize("average", ["token", "sequence"])
def test_kd_loss_fn_is_the_token_formula_averaged_bit_for_bit(average):
  """make_kd_loss's loss is kd_token_loss (eq. 4) averaged by `masked_mean`, with the same float32 result as the
  expression written out, on random logits, under jit; and the closed form to float32 precision."""
  import jax  # pylint: disable=g-import-not-at-top
  from bliss_jax.losses.entropy import soft_cross_entropy  # pylint: disable=g-import-not-at-top
  from bliss_jax.losses.lm import averaging_weights, token_cross_entropy  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  student, teacher = rng.normal(size=(2, 2, 5, 7)).astype(np.float32) * 3
  targets = rng.integers(0, 7, (2, 5))
  batch = {"decoder_input_tokens": jnp.zeros((2, 5), jnp.int32), "decoder_target_tokens": jnp.array(targets),
           "decoder_loss_weights": jnp.array(ROWS_WEIGHTS), "decoder_segment_ids": jnp.array(ROWS_SEGMENTS)}
  for omega, rho in ((0.667, 0.25), (0.3, 1.0)):
    loss_fn = kd.make_kd_loss(_Fixed(student), {"teacher": _Fixed(teacher)}, omega=omega, rho=rho, average=average)
    loss = jax.jit(lambda b: loss_fn({}, b, None, {"teacher": {}})[0])(batch)

    def written_out(b):
      c, n = averaging_weights(b, average)
      s, y = jnp.asarray(student), b["decoder_target_tokens"]
      per_token = (1.0 - omega) * token_cross_entropy(s, y) + omega * soft_cross_entropy(
          kd.teacher_distribution(jnp.asarray(teacher), rho), s)
      return jnp.sum(per_token * c) / jnp.maximum(n, 1.0)

    assert np.asarray(loss).tobytes() == np.asarray(jax.jit(written_out)(batch)).tobytes()
    per = [_hand(student[r], teacher[r], targets[r], omega, rho) for r in range(2)]
    want = ((np.mean(per[0][0:3]) + per[0][3] + np.mean(per[1][0:2])) / 3 if average == "sequence"
            else (per[0][0:4].sum() + per[1][0:2].sum()) / 6)
    assert float(loss) == pytest.approx(want, rel=1e-6)
