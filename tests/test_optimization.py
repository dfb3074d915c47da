"""Schedules at chosen steps, gradient accumulation = full batch, clipping, weight-decay mask, and the chunked
output head + cross-entropy = the plain formula."""
import dataclasses
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bliss_jax.data.synthetic import SyntheticBatches
from bliss_jax.losses.lm import CHUNK_TOKENS, head_cross_entropy, make_lm_loss, token_correct, token_cross_entropy
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer, head_logits, head_weight
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


@pytest.mark.parametrize("name,dtype", [("tiny_neox", "float32"), ("tiny_mqa", "float32"), ("tiny_mqa", "bfloat16")])
@pytest.mark.parametrize("average", ["token", "sequence"])
def test_chunked_lm_loss_equals_the_plain_formula(name, dtype, average):
  # untied (tiny_neox) and tied (tiny_mqa, whose head runs in the compute dtype) heads; chunks of 1 position, of 3
  # (which do not divide T = 17) and of the whole batch; packed rows and unweighted positions
  cfg = preset(name, vocab_size=96, dtype=dtype)
  model = Transformer(cfg)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (3, 17), 0, 96)
  params = nn.unbox(model.init(jax.random.PRNGKey(1), tokens)["params"])
  batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": jnp.roll(tokens, -1, 1),
           "decoder_segment_ids": jnp.ones((3, 17), jnp.int32).at[1, 9:].set(2),
           "decoder_loss_weights": jnp.ones((3, 17), jnp.int32).at[0, :4].set(0).at[2, 15:].set(0)}
  grad = lambda chunk: jax.value_and_grad(make_lm_loss(model, average=average, chunk_tokens=chunk), has_aux=True)(
      params, batch, None)
  (loss, metrics), grads = grad(0)  # the model's full logits
  tol = dict(rtol=2e-5, atol=1e-7) if dtype == "float32" else dict(rtol=2e-2, atol=1e-4)
  for chunk in (3, 9, 3 * 17):
    (c_loss, c_metrics), c_grads = grad(chunk)
    np.testing.assert_allclose(c_loss, loss, **tol)
    for k in metrics:
      np.testing.assert_allclose(c_metrics[k], metrics[k], **tol)
    for a, b in zip(jax.tree.leaves(c_grads), jax.tree.leaves(grads)):
      np.testing.assert_allclose(a, b, rtol=tol["rtol"], atol=tol["rtol"] * float(np.max(np.abs(b))))


def test_the_default_chunk_comes_from_the_environment(monkeypatch):
  cfg = preset("tiny_neox", vocab_size=96)
  model = Transformer(cfg)
  tokens = jnp.zeros((2, 8), jnp.int32)
  params = nn.unbox(model.init(jax.random.PRNGKey(1), tokens)["params"])
  batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": tokens,
           "decoder_loss_weights": jnp.ones((2, 8), jnp.int32)}
  program = lambda **kw: str(jax.make_jaxpr(lambda p: make_lm_loss(model, **kw)(p, batch, None)[0])(params))
  monkeypatch.delenv("BLISS_JAX_LOSS_CHUNK", raising=False)
  assert program() == program(chunk_tokens=CHUNK_TOKENS) != program(chunk_tokens=0)
  monkeypatch.setenv("BLISS_JAX_LOSS_CHUNK", "0")
  assert program() == program(chunk_tokens=0)
  assert program(chunk_tokens=4) != program(chunk_tokens=0)  # an explicit chunk wins
  monkeypatch.setenv("BLISS_JAX_LOSS_CHUNK", "-1")
  with pytest.raises(ValueError, match="BLISS_JAX_LOSS_CHUNK='-1'"):
    make_lm_loss(model)


def test_head_cross_entropy_by_hand_and_its_coefficient_gradient():
  cfg = preset("tiny_neox", vocab_size=8)
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(2, 5, cfg.d_model)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(cfg.d_model, 8)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 8, (2, 5)), jnp.int32)
  c = jnp.asarray(rng.uniform(size=(2, 5)), jnp.float32)
  logits = np.asarray(hidden, np.float64) @ np.asarray(weight, np.float64)
  ce = np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, np.asarray(targets)[..., None], -1)[..., 0]
  total, got_ce, correct = head_cross_entropy(cfg, weight, hidden, targets, c, chunk_tokens=4)
  np.testing.assert_allclose(got_ce, ce, rtol=1e-5)
  np.testing.assert_array_equal(correct, logits.argmax(-1) == np.asarray(targets))
  np.testing.assert_allclose(total, (ce * np.asarray(c)).sum(), rtol=1e-5)
  # d/dc Σ c ℓ = ℓ; d/dweight and d/dhidden equal those of the plain formula
  plain = lambda w, h, c: jnp.sum(token_cross_entropy(head_logits(cfg, w, h), targets) * c)
  fused = lambda w, h, c: head_cross_entropy(cfg, w, h, targets, c, chunk_tokens=4)[0]
  for a, b in zip(jax.grad(fused, (0, 1, 2))(weight, hidden, c), jax.grad(plain, (0, 1, 2))(weight, hidden, c)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert head_weight(cfg, {"lm_head": {"kernel": weight}}) is weight
  # a bfloat16 head (ModelConfig.head_dtype): the chunked loss's values and gradients are those of the plain formula
  half = dataclasses.replace(cfg, head_dtype="bfloat16")
  plain = lambda w, h, c: jnp.sum(token_cross_entropy(head_logits(half, w, h), targets) * c)
  fused = lambda w, h, c: head_cross_entropy(half, w, h, targets, c, chunk_tokens=4)[0]
  np.testing.assert_allclose(fused(weight, hidden, c), plain(weight, hidden, c), rtol=1e-6)
  assert abs(float(fused(weight, hidden, c)) - float((ce * np.asarray(c)).sum())) > 1e-5  # bfloat16, not float32
  # the weight's gradient: each chunk's share is rounded to bfloat16 and the shares summed in float32, where the plain
  # formula rounds the one sum
  for a, b in zip(jax.grad(fused, (0, 1, 2))(weight, hidden, c), jax.grad(plain, (0, 1, 2))(weight, hidden, c)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-2 * np.abs(b).max())


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


def test_token_correct_is_the_target_attaining_the_max_logit():
  logits = jnp.array([[1.0, 3.0, 3.0], [0.5, -1.0, 0.2]])
  np.testing.assert_array_equal(token_correct(logits, jnp.array([2, 0])), [1.0, 1.0])  # a tie counts (argmax: 1)
  np.testing.assert_array_equal(token_correct(logits, jnp.array([0, 2])), [0.0, 0.0])


def test_the_differentiated_head_has_no_index_carrying_reduction():
  """The accuracy term comes from the log-sum-exp's max: the compiled gradient of the chunked head has no variadic
  (value, index) reduce over the vocabulary (argmax's, 8 ms per pythia-14m chunk); the old code had one."""
  cfg = preset("tiny_neox", vocab_size=96)
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(2, 8, cfg.d_model)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(cfg.d_model, 96)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 96, (2, 8)), jnp.int32)
  def fused(w, h):  # the loss and, as the train step logs it, the accuracy
    total, _, correct = head_cross_entropy(cfg, w, h, targets, jnp.ones((2, 8)), chunk_tokens=8)
    return total, jnp.mean(correct)
  text = jax.jit(jax.grad(fused, (0, 1), has_aux=True)).lower(weight, hidden).compile().as_text()
  assert not re.findall(r"\(f32\[[\d,]*\]\{[\d,]*\}, s32\[[\d,]*\]\{[\d,]*\}\) reduce\(", text)


def test_the_differentiated_head_exponentiates_each_chunks_logits_once():
  """The chunk's CE and its gradient (softmax − onehot) share one max, one exponential and one sum: the compiled
  gradient has a single exponential over a chunk's [B, length, V] logits (with two log-sum-exps it had two)."""
  cfg = preset("tiny_neox", vocab_size=96)
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(2, 8, cfg.d_model)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(cfg.d_model, 96)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 96, (2, 8)), jnp.int32)
  c = jnp.ones((2, 8), jnp.float32)
  fused = lambda w, h: head_cross_entropy(cfg, w, h, targets, c, chunk_tokens=8)[0]
  text = jax.jit(jax.grad(fused, (0, 1))).lower(weight, hidden).compile().as_text()
  exps = re.findall(r"f32\[[\d,]*96\]\{[\d,]*\} exponential\(", text)  # over a chunk's logits (V = 96 last)
  assert len(exps) == 1, exps
