"""RHO-1 selective language modeling: hand-computed selections and losses, exact reduction to CE at 100%, sharding,
offline = online reference losses, the offline batch source, end-to-end training, and the paper-shaped step."""
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydoc_data import topics

from bliss_jax import partitioning
from bliss_jax.counting import fraction_to_count
from bliss_jax.data import seqio_tasks, vocabulary
from bliss_jax.data.synthetic import SyntheticBatches, synthetic_source
from bliss_jax.losses.entropy import entropy
from bliss_jax.losses.lm import make_lm_loss, token_cross_entropy
from bliss_jax.losses.selective import make_selective_loss, make_token_selection, top_fraction_mask
from bliss_jax.models.config import count_params, preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.selection import offline_scoring, rules
from bliss_jax.selection.reference_losses import join_reference_values, make_reference_scorer, reference_loss_source
from bliss_jax.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- A hand-made batch: 2 x 4 target tokens (all id 0), vocabulary of 3, logits chosen per position. -------------
class FixedLogits(nn.Module):
  """A "model" whose logits are its parameters (so the test chooses them)."""
  shape: tuple

  @nn.compact
  def __call__(self, tokens, **unused):
    del unused
    return self.param("logits", nn.initializers.zeros, self.shape)


SHAPE = (2, 4, 3)
# Model: logits (z, 0, 0) at each position, so L_θ = log(e^z + 2) − z.
Z_MODEL = np.array([[0., 1., 2., 3.], [-1., 0., 1., 5.]])
MODEL_LOGITS = np.zeros(SHAPE, np.float32)
MODEL_LOGITS[..., 0] = Z_MODEL
# Reference: rows are the logits of the 8 positions (flat index 0..7; position 7 is padding).
REF_LOGITS = np.array([[2, 0, 0], [1, 0, 0], [0, 4, 0], [3, 0, 0],
                       [3, 0, 0], [3, 0, 1], [3, 0, -1], [0, 0, 0]], np.float32).reshape(SHAPE)
WEIGHTS = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.int32)  # 7 valid targets
HAND_BATCH = {"decoder_input_tokens": np.zeros((2, 4), np.int32), "decoder_target_tokens": np.zeros((2, 4), np.int32),
              "decoder_loss_weights": WEIGHTS}


def _ce(logits):  # −log softmax(logits)[0], by hand
  return np.log(np.exp(logits.astype(np.float64)).sum(-1)) - logits[..., 0]


CE = _ce(MODEL_LOGITS)          # flat: 1.0986 .5514 .2395 .0949 | 1.8620 1.0986 .5514 (.0134 pad)
REF_CE = _ce(REF_LOGITS)        # flat: .2395 .5514 4.0363 .0949 | .0949 .1698 .0659 (1.0986 pad)
DELTA = CE - REF_CE             # flat: .8591 0 −3.7964 0 | 1.7671 .9288 .4856 (pad)
_P = np.exp(REF_LOGITS) / np.exp(REF_LOGITS).sum(-1, keepdims=True)
REF_H = -(_P * np.log(_P)).sum(-1)  # flat: .6656 .9753 .1773 .3666 | .3666 .5243 .2743 (pad)


def _mask(*flat):
  m = np.zeros(8, bool)
  m[list(flat)] = True
  return m.reshape(2, 4)


# 7 valid tokens: ratio 0.5 keeps floor(3.5) = 3, 0.75 keeps 5, 0.3 keeps 2.
CASES = [
    # excess loss, highest: 4 (1.767), 5 (.929), 0 (.859)
    (dict(score="excess", ratio=0.5), _mask(0, 4, 5)),
    # then 6 (.486), and of the tied zeros at 1 and 3 the lower index
    (dict(score="excess", ratio=0.75), _mask(0, 1, 4, 5, 6)),
    # reference loss, lowest: 6 (.066), then 3 and 4 tie at .0949 -> 3 first
    (dict(score="reference_loss", ratio=0.3), _mask(3, 6)),
    (dict(score="reference_loss", ratio=0.5), _mask(3, 4, 6)),
    # reference entropy, lowest: 2 (.177), 6 (.274), then 3 and 4 tie at .3666 -> 3
    (dict(score="reference_entropy", ratio=0.5), _mask(2, 3, 6)),
    # entropy at 75% = {2, 6, 3, 4, 5}; excess at 50% = {4, 5, 0}
    (dict(score=("reference_entropy", "excess"), ratio=(0.75, 0.5), combine="intersection"), _mask(4, 5)),
    (dict(score=("reference_entropy", "excess"), ratio=(0.75, 0.5), combine="union"), _mask(0, 2, 3, 4, 5, 6)),
    # per sequence: row 0 keeps floor(0.5·4) = 2 (0, then 1 of the tied zeros), row 1 keeps floor(0.5·3) = 1 (4)
    (dict(score="excess", ratio=0.5, scope="sequence"), _mask(0, 1, 4)),
    # per sequence, entropy at 75%: row 0 keeps 3 (2, 3, 0), row 1 keeps floor(2.25) = 2 (6, 4)
    (dict(score="reference_entropy", ratio=0.75, scope="sequence"), _mask(0, 2, 3, 4, 6)),
]


def _hand_results(reference):
  """(loss, metrics) of every case of CASES, from one jitted program (one compilation)."""
  model, ref = FixedLogits(SHAPE), FixedLogits(SHAPE)
  loss_fns = [make_selective_loss(model, {"reference": ref}, reference=reference, **kw) for kw, _ in CASES]
  batch = dict(HAND_BATCH)
  if reference == "offline":  # what the offline scorer stores: the same float32 computation, 0 on padding
    w = WEIGHTS.astype(np.float32)
    batch.update(ref_loss=np.asarray(token_cross_entropy(REF_LOGITS, HAND_BATCH["decoder_target_tokens"])) * w,
                 ref_entropy=np.asarray(entropy(logits=REF_LOGITS)) * w)
  run = jax.jit(lambda p, b, f: [fn(p, b, None, f) for fn in loss_fns])
  return jax.device_get(run({"logits": MODEL_LOGITS}, batch, {"reference": {"logits": REF_LOGITS}}))


@pytest.mark.parametrize("reference", ["online", "offline"])
def test_selection_and_loss_match_hand_computation(reference):
  valid = WEIGHTS > 0
  values = {"excess": DELTA, "reference_loss": REF_CE, "reference_entropy": REF_H}
  for (kw, mask), (loss, m) in zip(CASES, _hand_results(reference)):
    assert float(m["num_tokens"]) == mask.sum(), kw
    np.testing.assert_allclose(float(loss), CE[mask].mean(), rtol=1e-6, err_msg=str(kw))  # Eq. 4
    np.testing.assert_allclose(float(m["ce_unselected"]), CE[valid & ~mask].mean(), rtol=1e-6, err_msg=str(kw))
    np.testing.assert_allclose(float(m["selected_fraction"]), mask.sum() / 7, rtol=1e-7)
    np.testing.assert_allclose(float(m["ce_all"]), CE[valid].mean(), rtol=1e-6)
    np.testing.assert_allclose(float(m["excess_loss"]), DELTA[valid].mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(m["reference_loss"]), REF_CE[valid].mean(), rtol=1e-6)
    # the mask itself, from the hand-computed scores
    scores = (kw["score"],) if isinstance(kw["score"], str) else kw["score"]
    ratios = (kw["ratio"],) * len(scores) if isinstance(kw["ratio"], float) else kw["ratio"]
    masks = [np.asarray(top_fraction_mask(jnp.asarray(values[s], jnp.float32), jnp.asarray(valid), r,
                                          largest=s == "excess", scope=kw.get("scope", "batch")))
             for s, r in zip(scores, ratios)]
    got = masks[0] if len(masks) == 1 else (np.logical_and(*masks) if kw.get("combine") == "intersection"
                                            else np.logical_or(*masks))
    np.testing.assert_array_equal(got, mask, err_msg=str(kw))


def test_batch_and_sequence_scope_differ_as_defined():
  """Batch scope: the 3 best of all 7 valid tokens; sequence scope: floor(0.5·n_b) best of each row."""
  valid = jnp.asarray(WEIGHTS > 0)
  delta = jnp.asarray(DELTA, jnp.float32)
  batch = np.asarray(top_fraction_mask(delta, valid, 0.5, scope="batch"))
  seq = np.asarray(top_fraction_mask(delta, valid, 0.5, scope="sequence"))
  np.testing.assert_array_equal(batch, _mask(0, 4, 5))
  np.testing.assert_array_equal(seq, _mask(0, 1, 4))
  assert batch.sum() == 3 and seq.sum(1).tolist() == [2, 1]


# --- A real model. ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
  cfg = preset("tiny", vocab_size=128)
  model = Transformer(cfg)
  init = jax.jit(lambda rng: nn.unbox(model.init(rng, jnp.zeros((1, 16), jnp.int32))["params"]))
  init_params = lambda seed: init(jax.random.PRNGKey(seed))
  batch = next(SyntheticBatches(vocab_size=128, batch_size=8, sequence_length=16))
  w = batch["decoder_loss_weights"].copy()
  w[1, 10:] = 0  # some padding
  w[5, :3] = 0
  return model, init_params(0), init_params(1), dict(batch, decoder_loss_weights=w)


def test_ratio_one_is_exactly_plain_cross_entropy(tiny):
  model, params, ref_params, batch = tiny
  # plain CE from the full logits, as the selective loss computes its token losses (the chunked default equals it up
  # to float summation order: tests/test_optimization.py)
  plain = jax.jit(jax.value_and_grad(make_lm_loss(model, chunk_tokens=0), has_aux=True))
  slm = jax.jit(jax.value_and_grad(make_selective_loss(model, {"reference": model}, ratio=1.0), has_aux=True))
  (l0, _), g0 = plain(params, batch, None, None)
  (l1, m1), g1 = slm(params, batch, None, {"reference": ref_params})
  # Every valid token is selected and the gradient is bitwise that of plain CE; the loss VALUE may differ in its
  # last bit, because XLA orders the sum differently once the token losses are also materialised for the ranking.
  np.testing.assert_array_max_ulp(np.float32(l1), np.float32(l0), maxulp=2)
  assert float(m1["selected_fraction"]) == 1.0 and float(m1["num_tokens"]) == batch["decoder_loss_weights"].sum()
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.integration
def test_selection_is_the_same_sharded_as_on_one_device(tiny):
  """Inside jit the batch is global: the selection on (8 x 1) and (4 x 2) meshes equals the 1-device one, and both
  equal `rules.top_k` over the valid positions (ties to the lower flat index)."""
  rng = np.random.default_rng(0)
  scores = rng.integers(-4, 4, size=(8, 16)).astype(np.float32)  # many ties
  valid = rng.random((8, 16)) < 0.8
  scopes = ("batch", "sequence")
  fn = lambda s, v: [top_fraction_mask(s, v, 0.6, scope=scope) for scope in scopes]
  one = jax.device_get(jax.jit(fn)(jax.device_put(scores, jax.devices()[0]), jax.device_put(valid, jax.devices()[0])))
  for scope, got in zip(scopes, one):
    groups = [np.arange(128)] if scope == "batch" else [np.arange(16) + 16 * b for b in range(8)]
    expected = np.zeros(128, bool)
    for g in groups:
      idx = g[valid.ravel()[g]]
      expected[idx[rules.top_k(scores.ravel()[idx], fraction_to_count(len(idx), 0.6))]] = True
    np.testing.assert_array_equal(got.ravel(), expected, err_msg=scope)
  for data, model_axis in ((8, 1), (4, 2)):
    sh = partitioning.batch_sharding(partitioning.make_mesh(data, model_axis))
    got = jax.jit(fn, in_shardings=(sh, sh), out_shardings=sh)(jax.device_put(scores, sh), jax.device_put(valid, sh))
    for scope, a, b in zip(scopes, jax.device_get(got), one):
      np.testing.assert_array_equal(a, b, err_msg=f"{scope} {data}x{model_axis}")
  # the whole loss (online reference) on a 4 x 2 mesh equals the 1-device loss
  model, params, ref_params, batch = tiny
  loss_fn = make_selective_loss(model, {"reference": model}, ratio=0.6)
  l1, m1 = jax.jit(loss_fn)(params, batch, None, {"reference": ref_params})
  mesh, rules_ = partitioning.make_mesh(4, 2), partitioning.logical_rules()
  with partitioning.mesh_context(mesh, rules_):
    gbatch = partitioning.global_batch_from_local(batch, mesh)
    l8, m8 = jax.jit(loss_fn)(params, gbatch, None, {"reference": ref_params})
  np.testing.assert_allclose(float(l8), float(l1), rtol=1e-6)
  assert float(m8["num_tokens"]) == float(m1["num_tokens"])


# --- Offline reference losses: a SeqIO task, a score store, the batch source. ----------------------------------
LENGTH = 32


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
  """A small SeqIO task, a reference model, and its per-token losses and entropies in a score store."""
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  path = vocabulary.train_sentencepiece(texts, str(tmp_path_factory.mktemp("spm") / "s.model"), 300)
  vocab = vocabulary.load_vocabulary(path)
  docs = [(f"d:{i}", " ".join(["word", "list", "value", str(i)] * (1 + 5 * i % 23))) for i in range(30)]
  seqio_tasks.register_document_task("rho1_lm", lambda: docs, vocab, validation_fraction=0.2)
  cfg = preset("tiny", vocab_size=512)
  model = Transformer(cfg)
  init = jax.jit(lambda rng: nn.unbox(model.init(rng, jnp.zeros((1, LENGTH), jnp.int32))["params"]))
  ref_params = init(jax.random.PRNGKey(1))
  store = str(tmp_path_factory.mktemp("store"))
  table = offline_scoring.score_split(make_reference_scorer(model, with_entropy=True), ref_params, task="rho1_lm",
                                      split="train", store_dir=store, sequence_length=LENGTH, batch_size=8,
                                      progress=False)
  return dict(model=model, cfg=cfg, params=init(jax.random.PRNGKey(0)), ref_params=ref_params, store=store, table=table)


def test_offline_reference_losses_give_the_online_loss(scored):
  """The stored reference losses are the online ones up to float noise, and each loss is Eq. 4 over its own selection.
  The two selections may differ only at near-ties of a score (a stored value 1e-6 off can swap two tokens at a
  threshold), so the test compares the losses through the masks rather than as two numbers."""
  model = scored["model"]
  source = reference_loss_source(scored["store"], batch_size=8, sequence_length=LENGTH, shuffle=False)
  variants = (dict(score="excess", ratio=0.6),
              dict(score=("reference_entropy", "excess"), ratio=(0.7, 0.7), combine="intersection"))
  online = [(make_token_selection(model, {"reference": model}, reference="online", **kw),
             make_selective_loss(model, {"reference": model}, reference="online", **kw)) for kw in variants]
  offline = [(make_token_selection(model, None, reference="offline", **kw),
              make_selective_loss(model, None, reference="offline", **kw)) for kw in variants]

  @jax.jit
  def both(params, batch, ref_params):
    model_batch = {k: v for k, v in batch.items() if not k.startswith("ref_")}
    frozen = {"reference": ref_params}
    return ([(s(params, model_batch, frozen), f(params, model_batch, None, frozen)) for s, f in online],
            [(s(params, batch, None), f(params, batch, None, None)) for s, f in offline])

  batches = source("train", repeat=True)
  for batch in [next(batches) for _ in range(2)]:
    assert batch["ref_loss"].shape == batch["decoder_target_tokens"].shape
    assert (batch["ref_loss"][batch["decoder_loss_weights"] == 0] == 0).all()
    weights = np.asarray(batch["decoder_loss_weights"], np.float32)
    ons, offs = jax.device_get(both(scored["params"], batch, scored["ref_params"]))
    for kw, (s_on, (l_on, m_on)), (s_off, (l_off, m_off)) in zip(variants, ons, offs):
      np.testing.assert_allclose(s_off["ref_loss"], s_on["ref_loss"] * weights, atol=5e-5)  # 0 at padding
      np.testing.assert_allclose(s_off["ce"], s_on["ce"], rtol=1e-6, atol=1e-6)
      for sel, loss in ((s_on, l_on), (s_off, l_off)):  # Eq. 4 over the selection the step made
        mask = weights * sel["selected"]
        np.testing.assert_allclose(float(loss), (sel["ce"] * mask).sum() / mask.sum(), rtol=1e-5)
      swapped = s_on["selected"] != s_off["selected"]
      if "combine" not in kw:  # one score: k tokens either way (an intersection's size moves with a swap)
        assert float(m_off["num_tokens"]) == float(m_on["num_tokens"]) == s_on["selected"].sum()
      assert swapped.sum() <= 0.02 * weights.sum(), swapped.sum()
      if swapped.any():  # only near-ties: a swapped token's online excess is within noise of another swapped one's
        e = s_on["excess"][swapped]
        assert e.max() - e.min() < 1e-3, e
      np.testing.assert_allclose(float(m_off["reference_loss"]), float(m_on["reference_loss"]), rtol=1e-5)
  with pytest.raises(KeyError, match="ref_loss"):
    jax.eval_shape(lambda p, b: offline[0][1](p, b, None, None), scored["params"],
                   {k: v for k, v in batch.items() if not k.startswith("ref_")})


def test_reference_loss_source_is_keyed_deterministic_and_resumable(scored):
  table = scored["table"]
  n = len(table)
  source = reference_loss_source(scored["store"], batch_size=4, shuffle=True, seed=3)
  first = [next(it) for it in [source("train")] for _ in range(2 * (n // 4 + 1))]
  # each row carries the store's values of its own key
  by_tokens = {}
  rows = reference_loss_source(scored["store"], batch_size=n, shuffle=False)("train", repeat=False)
  everything = next(rows)
  for i in range(n):
    by_tokens[everything["decoder_target_tokens"][i].tobytes()] = i
  for b in first[:3]:
    for t, r in zip(b["decoder_target_tokens"], b["ref_loss"]):
      i = by_tokens[t.tobytes()]
      np.testing.assert_array_equal(r, table.token_columns["loss"][i])
  np.testing.assert_array_equal(everything["ref_loss"], table.token_columns["loss"])  # split order = store order
  np.testing.assert_array_equal(everything["ref_entropy"], table.token_columns["entropy"])
  # every row exactly once per epoch (no row dropped at the boundary), epochs in different orders
  stream = np.concatenate([[by_tokens[t.tobytes()] for t in b["decoder_target_tokens"]] for b in first])
  assert sorted(stream[:n]) == list(range(n)) and sorted(stream[n:2 * n]) == list(range(n))
  assert list(stream[:n]) != list(stream[n:2 * n])
  # resumption: starting at position 5 continues with batch 5; the same seed gives the same stream
  resumed = source("train", start_position=5)
  for b in first[5:8]:
    np.testing.assert_array_equal(next(resumed)["decoder_target_tokens"], b["decoder_target_tokens"])
  assert resumed.position == 8
  again = reference_loss_source(scored["store"], batch_size=4, shuffle=True, seed=3)("train")
  other = reference_loss_source(scored["store"], batch_size=4, shuffle=True, seed=4)("train")
  np.testing.assert_array_equal(next(again)["decoder_target_tokens"], first[0]["decoder_target_tokens"])
  assert any((next(other)["decoder_target_tokens"] != b["decoder_target_tokens"]).any() for b in first[:3])
  # two processes: their slices make up the global batch
  p0, p1 = source("train", process_index=0, process_count=2), source("train", process_index=1, process_count=2)
  for b in first[:3]:
    np.testing.assert_array_equal(np.concatenate([next(p0)["ref_loss"], next(p1)["ref_loss"]]), b["ref_loss"])
  # validation: the task's own split, one pass, last batch padded with zero-weight rows, no reference columns
  val = list(source("validation", repeat=False))
  assert val and "ref_loss" not in val[0] and all(v["decoder_target_tokens"].shape == (4, LENGTH) for v in val)
  with pytest.raises(ValueError, match="sequence_length"):
    reference_loss_source(scored["store"], batch_size=4, sequence_length=LENGTH * 2)
  one_row = {"decoder_target_tokens": everything["decoder_target_tokens"][:1],
             "decoder_loss_weights": everything["decoder_loss_weights"][:1]}
  with pytest.raises(ValueError, match="no reference values"):
    join_reference_values(dict(one_row, key=np.array(["d:999#0"])), table)
  other_length = int(np.flatnonzero(table.num_tokens != table.num_tokens[0])[0])  # row 0's tokens, another key
  with pytest.raises(ValueError, match="another token count"):
    join_reference_values(dict(one_row, key=np.array([table.keys()[other_length]])), table)


# --- End to end. -----------------------------------------------------------------------------------------------
def _rows(model_dir, split="train"):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r.get("split") == split]


def test_trainer_runs_rho1_online_and_offline(tmp_path, scored):
  one = dict(mesh_data=1, devices=jax.devices()[:1])
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=128), num_steps=2, batch_size=8,
                           sequence_length=16, optimizer=trainer.OptimizerConfig(warmup_steps=1), checkpoint_every=2)
  ref = trainer.train(model_dir=str(tmp_path / "ref"), spec=spec,
                      batch_source=synthetic_source(vocab_size=128, batch_size=8, sequence_length=16),
                      progress_bar=False, **one)
  assert ref.final_step == 2
  online = trainer.train(
      model_dir=str(tmp_path / "rho1"), spec=spec.replace(num_steps=3, checkpoint_every=3, log_every=1),
      batch_source=synthetic_source(vocab_size=128, batch_size=8, sequence_length=16),
      progress_bar=False, frozen_model_dirs={"reference": ref.model_dir}, **one,
      loss_factory=functools.partial(make_selective_loss, ratio=0.6))
  rows = _rows(online.model_dir)
  assert [r["step"] for r in rows] == [1, 2, 3]
  for r in rows:
    assert r["selected_fraction"] == pytest.approx(76 / 128)  # floor(0.6 · 128) of the 8 x 16 tokens
    assert r["num_tokens"] == 76
    for k in ("ce_selected", "ce_unselected", "ce_all", "excess_loss", "reference_loss"):
      assert np.isfinite(r[k]), k

  offline = trainer.train(
      model_dir=str(tmp_path / "rho1_offline"),
      spec=spec.replace(model_config=scored["cfg"], sequence_length=LENGTH, log_every=1),
      batch_source=reference_loss_source(scored["store"], batch_size=8, sequence_length=LENGTH),
      progress_bar=False, **one,
      loss_factory=functools.partial(make_selective_loss, ratio=0.6, reference="offline"))
  rows = _rows(offline.model_dir)
  assert len(rows) == 2 and all(0.5 < r["selected_fraction"] <= 0.6 for r in rows)


def test_paper_shaped_train_step_traces_abstractly():
  """gin_configs/paper/rho1_tinyllama_1p1b.gin: TinyLlama-1.1B, 512 x 2048 tokens, 60% selection, LR 8e-5, online
  reference of the same shape; the sharded train step is traced with `jax.eval_shape` (nothing allocated)."""
  import gin
  from bliss_jax import configurables  # noqa: F401  (registers the configurables)
  gin.clear_config()
  try:
    gin.add_config_file_search_path(os.path.join(REPO, "gin_configs"))
    # skip_unknown: the data config's `benchmark_mixture` is registered by the `tasks` package, not needed here
    gin.parse_config_file(os.path.join(REPO, "gin_configs", "paper", "rho1_tinyllama_1p1b.gin"), skip_unknown=True)
    seq, batch_size = gin.query_parameter("%SEQUENCE_LENGTH"), gin.query_parameter("%BATCH_SIZE")
    assert (seq, batch_size) == (2048, 512) and seq * batch_size == 2 ** 20  # 1M tokens
    assert gin.query_parameter("selective_loss.ratio") == 0.6
    assert gin.query_parameter("selective_loss.score") == "excess"
    assert list(gin.query_parameter("train.frozen_model_dirs")) == ["reference"]
    cfg = gin.get_configurable("model_config")()
    opt = gin.get_configurable("OptimizerConfig")()
    assert opt.peak_lr == 8e-5 and cfg.vocab_size == 32000 and count_params(cfg) == 1_100_048_384
    state, metrics = trainer.abstract_train_step(
        cfg, batch_size=batch_size, sequence_length=seq, optimizer=opt, num_steps=gin.query_parameter("%NUM_STEPS"),
        loss_factory=gin.get_configurable("selective_loss"), frozen_configs={"reference": cfg},
        fsdp=gin.query_parameter("train.fsdp"))
    assert int(state.step.size) == 1
    for k in ("loss", "selected_fraction", "ce_unselected", "excess_loss", "num_tokens", "grad_norm"):
      assert metrics[k].shape == (), k
  finally:
    gin.clear_config()
