"""MATES: the oracle against closed forms on a linear model (SGD, a scheduled LR, Adam from a non-zero state) and
against the trainer's own step on a tiny LM, the seeded Gumbel-top-k selection, the probe's FLOPs by hand, and
(integration) one round's probe → fit → score stages on a tiny target and proxy."""
import dataclasses
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bliss_jax.losses.bilevel import reference_objective
from bliss_jax.losses.lm import make_lm_loss
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.pipelines import mates
from bliss_jax.selection import rules
from bliss_jax.training import trainer
from bliss_jax.training.train_state import create_train_state
from bliss_jax.training.train_step import make_train_step


def _linear_problem(seed=0, n=5, d=3, m=2, b=4):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=d).astype(np.float32)
  cand = {"x": rng.normal(size=(n, d)).astype(np.float32), "y": rng.normal(size=n).astype(np.float32)}
  ref = {"x": rng.normal(size=(m, b, d)).astype(np.float32), "y": rng.normal(size=(m, b)).astype(np.float32)}
  return w, cand, ref


def _squared_loss(w, batch):
  """½ mean (w·x − y)² over the batch's rows."""
  return 0.5 * jnp.mean((batch["x"] @ w - batch["y"]) ** 2)


def _reference_loss(w_new, ref):
  """The label's closed form: ½ mean (w'·x_ref − y_ref)² (equal-sized reference batches: the mean over all rows)."""
  return 0.5 * np.mean((ref["x"].astype(np.float64) @ w_new - ref["y"]) ** 2)


def _advance(tx, w, grads):
  """The optimizer state after updates with `grads` (one per update), as a checkpoint mid-run holds it."""
  state = tx.init(w)
  for g in grads:
    _, state = tx.update(jnp.asarray(g, jnp.float32), state, w)
  return state


@pytest.mark.parametrize("lr, warm_updates, lr_at_step", [(0.3, 0, 0.3), (lambda count: 0.1 * (count + 1), 4, 0.5)])
def test_oracle_equals_the_closed_form_after_one_sgd_step(lr, warm_updates, lr_at_step):
  """w' = w − η(w·x − y)x; with a schedule, η is the schedule at the state's step count (4 updates done → η(4))."""
  w, cand, ref = _linear_problem()
  tx = optax.sgd(lr)
  state = _advance(tx, w, [np.zeros_like(w)] * warm_updates)
  labels = np.asarray(mates.oracle_labels(_squared_loss, _squared_loss, tx, w, state, cand, ref))
  w64 = w.astype(np.float64)
  expected = [_reference_loss(w64 - lr_at_step * (w64 @ x - y) * x, ref) for x, y in zip(cand["x"], cand["y"])]
  np.testing.assert_allclose(labels, expected, rtol=2e-5)
  assert len(set(np.round(labels, 6))) == len(labels)  # the candidates' labels differ


def test_oracle_equals_the_closed_form_after_one_adam_step_from_a_nonzero_state():
  """From count c and moments (μ, ν): μ' = β1μ + (1−β1)g, ν' = β2ν + (1−β2)g², t = c + 1,
  w' = w − η (μ'/(1−β1^t)) / (√(ν'/(1−β2^t)) + ε)."""
  w, cand, ref = _linear_problem(seed=1)
  eta, b1, b2, eps = 0.05, 0.9, 0.95, 1e-8
  tx = optax.adam(eta, b1=b1, b2=b2, eps=eps)
  state = _advance(tx, w, np.random.default_rng(2).normal(size=(3, w.size)))
  adam = state[0]
  mu, nu, c = (np.asarray(adam.mu, np.float64), np.asarray(adam.nu, np.float64), int(adam.count))
  assert c == 3 and np.abs(mu).min() > 0
  labels = np.asarray(mates.oracle_labels(_squared_loss, _squared_loss, tx, w, state, cand, ref))
  w64, t, expected = w.astype(np.float64), c + 1, []
  for x, y in zip(cand["x"], cand["y"]):
    g = (w64 @ x - y) * x
    m1, v1 = b1 * mu + (1 - b1) * g, b2 * nu + (1 - b2) * g * g
    w_new = w64 - eta * (m1 / (1 - b1 ** t)) / (np.sqrt(v1 / (1 - b2 ** t)) + eps)
    expected.append(_reference_loss(w_new, ref))
  np.testing.assert_allclose(labels, expected, rtol=2e-5)


def test_oracle_takes_the_trainers_step_on_a_tiny_lm():
  """On an LM mid-run (3 AdamW steps done, warmup + cosine, clipping): each label equals the reference loss after
  the trainer's own train step (`make_train_step` with the target's tx) on that candidate alone."""
  L, V = 16, 64
  cfg = preset("tiny", vocab_size=V, num_layers=1, d_model=32, num_heads=2, num_kv_heads=1, d_ff=64)
  model = Transformer(cfg)
  rng = np.random.default_rng(0)

  def batch(b):
    tokens = rng.integers(1, V, size=(b, L)).astype(np.int32)
    return {"decoder_input_tokens": np.concatenate([np.zeros((b, 1), np.int32), tokens[:, :-1]], 1),
            "decoder_target_tokens": tokens, "decoder_loss_weights": np.ones((b, L), np.int32),
            "decoder_segment_ids": np.ones((b, L), np.int32),
            "decoder_positions": np.tile(np.arange(L, dtype=np.int32), (b, 1))}

  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, L), jnp.int32))["params"])
  tx, _ = trainer.make_tx(trainer.OptimizerConfig(peak_lr=3e-2, warmup_steps=2, clip_norm=0.5), 10)
  lm_loss = make_lm_loss(model)
  step = jax.jit(make_train_step(lm_loss, tx))
  state, key = create_train_state(params, tx), jax.random.PRNGKey(1)
  for _ in range(3):  # on one row, as the probes step: one compilation
    state, _ = step(state, batch(1), key)
  cand, refs = batch(3), [batch(4) for _ in range(2)]
  ref = {k: np.stack([r[k] for r in refs]) for k in refs[0]}
  labels = mates.oracle_labels(lambda p, b: lm_loss(p, b, None)[0], lambda p, b: reference_objective(model, p, b),
                               tx, state.params, state.opt_state, cand, ref)
  reference_loss = jax.jit(lambda p, b: reference_objective(model, p, b))
  expected = []
  for i in range(3):
    after, _ = step(state, {k: v[i:i + 1] for k, v in cand.items()}, key)
    expected.append(np.mean([float(reference_loss(after.params, r)) for r in refs]))
  np.testing.assert_allclose(np.asarray(labels), expected, rtol=1e-5)
  assert np.ptp(expected) > 0


def test_selection_is_a_seeded_gumbel_top_k_of_the_negated_prediction():
  predicted = np.random.default_rng(0).normal(size=103)  # predicted reference losses
  scores, k = -predicted, int(np.floor(0.2 * 103))
  scorer = mates.MatesScorer()
  chosen = scorer.select(scores, 0.2, seed=7)
  assert len(chosen) == k == 20 and len(set(chosen.tolist())) == k and chosen.min() >= 0 and chosen.max() < 103
  np.testing.assert_array_equal(chosen, scorer.select(scores, 0.2, seed=7))
  assert set(chosen.tolist()) != set(scorer.select(scores, 0.2, seed=8).tolist())
  np.testing.assert_array_equal(chosen, rules.gumbel_top_k(scores, k, temperature=1.0, seed=7))
  # sampling favours low predicted loss; as the temperature vanishes it is the k lowest predictions
  picks = np.concatenate([scorer.select(scores, 0.2, seed=s) for s in range(50)])
  assert predicted[picks].mean() < predicted.mean() - 0.5
  cold = dataclasses.replace(scorer, temperature=1e-6).select(scores, 0.2, seed=7)
  np.testing.assert_array_equal(cold, np.argsort(predicted, kind="stable")[:k])


def test_probe_sample_is_seeded_uniform_and_in_key_order():
  keys = [f"d:{i}#0" for i in range(50)]
  sample = mates.probe_sample(keys, 10, (0, 1))
  assert len(sample) == len(set(sample)) == 10 and sample == [k for k in keys if k in set(sample)]
  assert sample == mates.probe_sample(keys, 10, (0, 1)) and sample != mates.probe_sample(keys, 10, (0, 2))
  assert mates.probe_sample(keys, 80, 0) == keys


def test_probe_flops_equal_a_hand_count():
  """`tiny` (2 layers, d 64, 4 heads of 16, 2 kv heads, SwiGLU d_ff 256, RMSNorm, untied, V = 512): 123,200 matmul
  parameters without the head + 64·512 head; a forward per token 2N + 4·2·4·16·T; at T = 32 one probe = a train step
  (3 forwards) on 32 tokens + a forward over 8 reference rows of 32 tokens."""
  fwd = 2 * (123_200 + 64 * 512) + 4 * 2 * 4 * 16 * 32
  assert fwd == 328_320
  assert mates.probe_flops(preset("tiny"), 32, 8) == 3 * fwd * 32 + fwd * 8 * 32 == 115_568_640


@pytest.mark.integration
def test_one_round_probes_fits_and_scores_the_whole_pool(tmp_path):
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import pipeline as data_pipeline, seqio_tasks, vocabulary  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.keyed import example_keys  # pylint: disable=g-import-not-at-top
  from bliss_jax.pipelines import common, rounds  # pylint: disable=g-import-not-at-top
  from bliss_jax.pipelines.stages import run_stage  # pylint: disable=g-import-not-at-top
  from bliss_jax.selection import score_store  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top

  L = 32
  texts = [t for _, t in sorted(topics.topics.items())][:20]
  vocab = vocabulary.load_vocabulary(vocabulary.train_sentencepiece(texts, str(tmp_path / "s.model"), 300))
  docs = [(f"d:{i}", texts[i % 20][: 150 + 40 * (i % 5)]) for i in range(36)]
  seqio_tasks.register_document_task("mates_fixture_pool", lambda: docs, vocab, validation_fraction=0.0)
  seqio_tasks.register_document_task("mates_fixture_ref", lambda: [(f"r:{i}", texts[i]) for i in range(8)], vocab,
                                     validation_fraction=0.0)
  target = trainer.TrainSpec(model_config=preset("tiny", vocab_size=None), num_steps=4, batch_size=8,
                             sequence_length=L, optimizer=trainer.OptimizerConfig(warmup_steps=1), checkpoint_every=2)
  proxy = target.replace(model_config=preset("tiny", vocab_size=None, num_layers=1, d_model=32, num_heads=2,
                                             num_kv_heads=1, d_ff=64), num_steps=2)
  target_dir = str(tmp_path / "target")
  common.train_on_task(target_dir, target, "mates_fixture_pool", progress_bar=False, keep_checkpoints=None)
  proxy_dir = common.train_on_task(str(tmp_path / "proxy"), proxy, "mates_fixture_pool",
                                   progress_bar=False)["model_dir"]
  pool_keys = example_keys("mates_fixture_pool", "train", L)
  root = str(tmp_path / "rounds")
  ctx = rounds.RoundContext(
      method="mates", round=1, pool_chunks=lambda: common.pool_store(root, "mates_fixture_pool", "train", L),
      pool_path="", pool_keys=pool_keys, target_dir=target_dir, target_step=2, target_spec=target,
      proxy_dir=proxy_dir, reference=data_pipeline.seqio_batch_source("mates_fixture_ref", batch_size=4,
                                                                      sequence_length=L, pack=False),
      reference_name="mates_fixture_ref:train:decoder", previous=None, sequence_length=L, seed=0, progress_bar=False,
      stage=lambda suffix, fn, inputs: run_stage(root, f"mates_r1_{suffix}", fn, inputs))
  scorer = mates.MatesScorer(num_probe=20, probe_chunk=8, reference_batches=2, fit_steps=20, fit_batch_size=8,
                             score_batch_size=8)
  out = scorer.score(ctx)

  probe, fit = out["stages"]["probe"], out["stages"]["fit"]
  assert probe["restored_step"] == 2 and probe["n_probe"] == 20 and probe["reference_rows"] == 8
  labels = json.load(open(probe["labels"]))
  assert len(labels) == 20 and set(labels) <= set(pool_keys) and probe["label_std"] > 0
  assert fit["n_fit"] == 18 and fit["n_holdout"] == 2 and fit["mse_last"] < fit["mse_first"]
  table = score_store.read_scores(out["store"])
  assert out["column"] == "mates" and table.keys() == pool_keys and np.isfinite(table.columns["mates"]).all()
  V = ModelDir(target_dir).read_model_config().vocab_size
  f_target = 2 * (123_200 + 64 * V) + 4 * 2 * 4 * 16 * L
  f_score = 2 * 9_312 + 4 * 1 * 2 * 16 * L + 2 * 32 / L  # the proxy's backbone without head + Linear(32, 1)
  assert out["aux_flops"]["probe"] == pytest.approx(20 * (3 * f_target * L + f_target * 8 * L), rel=1e-12)
  assert out["aux_flops"]["fit"] == pytest.approx(3 * f_score * 20 * 8 * L + f_score * 2 * L, rel=1e-12)
  assert out["aux_flops"]["predict"] == pytest.approx(f_score * int(table.num_tokens.sum()), rel=1e-12)
  assert out["state"] is None
  chosen = scorer.select(table.columns["mates"], 0.2, seed=0)
  assert len(chosen) == int(np.floor(0.2 * len(pool_keys)))

  marks = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(root, "*", "stage.json"))}
  assert len(marks) == 3
  assert scorer.score(ctx)["store"] == out["store"]
  assert {p: os.stat(p).st_mtime_ns for p in marks} == marks
