"""Offline scoring: keyed batches, exact store round trip, resumption without rescoring, scores = plain forward, and
keys scored from a chunk store by index = the same keys streamed."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydoc_data import topics

from bliss_jax import partitioning
from bliss_jax.data import chunk_store, seqio_tasks, store_source, vocabulary
from bliss_jax.data.keyed import example_keys, keyed_batches
from bliss_jax.losses.lm import token_cross_entropy
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.selection import offline_scoring, rules, score_store, scorers

LENGTH = 32


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  path = vocabulary.train_sentencepiece(texts, str(tmp_path_factory.mktemp("spm") / "s.model"), 300)
  vocab = vocabulary.load_vocabulary(path)
  docs = [(f"d:{i}", " ".join(["word", "list", "value", str(i)] * (1 + 5 * i % 23))) for i in range(40)]
  seqio_tasks.register_document_task("score_lm", lambda: docs, vocab, validation_fraction=0.0)
  return "score_lm", vocab


@pytest.fixture(scope="module")
def model_and_params(task):
  cfg = preset("tiny", vocab_size=512)
  model = Transformer(cfg)
  return model, nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, LENGTH), jnp.int32))["params"])


def test_keyed_batches_cover_every_chunk_once_and_pad(task):
  name, _ = task
  batches = list(keyed_batches(name, "train", LENGTH, 8))
  keys = [(d, c) for b in batches for d, c, v in zip(b["doc_id"], b["chunk_index"], b["valid"]) if v]
  assert len(keys) == len(set(keys))
  assert {d.decode() for d, _ in keys} == {f"d:{i}" for i in range(40)}
  last = batches[-1]
  assert last["decoder_input_tokens"].shape == (8, LENGTH)
  assert not last["valid"].all() or len(keys) % 8 == 0
  assert (last["decoder_loss_weights"][~last["valid"]] == 0).all()


def test_scores_round_trip_resume_and_equal_plain_forward(task, model_and_params, tmp_path):
  name, _ = task
  model, params = model_and_params
  base_fn = scorers.make_lm_scorer(model, with_token_losses=True)
  mesh = partitioning.make_mesh(4, 2)
  kw = dict(task=name, split="train", sequence_length=LENGTH, batch_size=8, mesh=mesh, batches_per_shard=2,
            progress=False)
  straight = offline_scoring.score_split(base_fn, params, store_dir=str(tmp_path / "straight"), **kw)
  # interrupted after one shard, then resumed: the finished shard is not rescored
  assert offline_scoring.score_split(base_fn, params, store_dir=str(tmp_path / "resumed"), stop_after_shards=1,
                                     **kw) is None
  shard0 = score_store.shard_path(str(tmp_path / "resumed"), 0, 0)
  first, first_mtime = score_store.read_shard(shard0), os.stat(shard0).st_mtime_ns
  assert not score_store.is_complete(str(tmp_path / "resumed"))
  with pytest.raises(ValueError, match="incomplete"):
    score_store.read_scores(str(tmp_path / "resumed"))
  resumed = offline_scoring.score_split(base_fn, params, store_dir=str(tmp_path / "resumed"), **kw)
  assert os.stat(shard0).st_mtime_ns == first_mtime  # not rewritten
  assert score_store.read_shard(shard0).keys() == first.keys()
  assert resumed.keys() == straight.keys()
  for c in straight.columns:
    np.testing.assert_array_equal(resumed.columns[c], straight.columns[c])
  np.testing.assert_array_equal(resumed.token_columns["loss"], straight.token_columns["loss"])
  # exact round trip: what was written is what is read
  again = score_store.read_scores(str(tmp_path / "straight"))
  np.testing.assert_array_equal(again.columns["mean_logp"], straight.columns["mean_logp"])
  assert again.keys() == straight.keys() and again.doc_id.dtype.kind == "U"
  # each score equals a plain single-example forward pass
  for b in list(keyed_batches(name, "train", LENGTH, 8))[:2]:
    for row in np.flatnonzero(b["valid"])[:3]:
      x = {k: jnp.asarray(b[k][row:row + 1]) for k in offline_scoring.MODEL_FEATURES if k in b}
      logits = model.apply({"params": params}, x["decoder_input_tokens"])
      w = x["decoder_loss_weights"][0].astype(bool)
      ce = np.asarray(token_cross_entropy(logits, x["decoder_target_tokens"]))[0][w]
      key = f"{b['doc_id'][row].decode()}#{b['chunk_index'][row]}"
      i = straight.keys().index(key)
      np.testing.assert_allclose(straight.columns["mean_logp"][i], -ce.mean(), rtol=1e-5)
      np.testing.assert_allclose(straight.columns["sum_logp"][i], -ce.sum(), rtol=1e-5)
      assert straight.num_tokens[i] == w.sum()
      np.testing.assert_allclose(straight.token_columns["loss"][i][:w.sum()], ce, rtol=1e-5)
  # selection by key, in score or original order
  idx = rules.top_k(straight.columns["mean_logp"], 5)
  by_score = score_store.select_keys(straight, idx, "score")
  assert by_score[0] == straight.keys()[int(np.argmax(straight.columns["mean_logp"]))]
  assert score_store.select_keys(straight, idx, "original") == [straight.keys()[i] for i in sorted(idx)]


def test_selected_task_serves_exactly_the_selection_in_order(task):
  from bliss_jax.selection.selected_task import register_selected_task
  import seqio
  name, _ = task
  ds = seqio.get_mixture_or_task(name).get_dataset({"targets": LENGTH}, split="train", shuffle=False, num_epochs=1)
  all_examples = {f"{e['doc_id'].decode()}#{e['chunk_index']}": e["targets"] for e in ds.as_numpy_iterator()}
  keys = sorted(all_examples)[::7][::-1]  # any subset, in a chosen order
  register_selected_task("score_lm_selected", name, keys, sequence_length=LENGTH, epochs=2)
  got = list(seqio.get_mixture_or_task("score_lm_selected").get_dataset(
      {"targets": LENGTH}, split="train", shuffle=False, num_epochs=1).as_numpy_iterator())
  assert [f"{e['doc_id'].decode()}#{e['chunk_index']}" for e in got] == keys * 2
  for e in got[:len(keys)]:
    np.testing.assert_array_equal(e["targets"], all_examples[f"{e['doc_id'].decode()}#{e['chunk_index']}"])
  with pytest.raises(ValueError, match="not in score_lm:train"):
    register_selected_task("bad", name, ["d:999#0"], sequence_length=LENGTH)


def test_difference_score_hand_computed():
  lp_t = jnp.array([[-1.0, -2.0, -0.5, 0.0], [-3.0, -1.0, 0.0, 0.0]])
  lp_r = jnp.array([[-2.0, -2.5, -0.5, 0.0], [-1.0, -1.0, 0.0, 0.0]])
  w = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]])
  # row 0: (1 + 0.5 + 0) = 1.5 over 3 tokens; row 1: (-2 + 0) = -2 over 2 tokens
  np.testing.assert_allclose(scorers.difference_score(lp_t, lp_r, w, "sum"), [1.5, -2.0])
  np.testing.assert_allclose(scorers.difference_score(lp_t, lp_r, w, "mean"), [0.5, -1.0])


def test_difference_scorer_equals_two_plain_forwards(task, model_and_params):
  name, _ = task
  model, params = model_and_params
  cfg2 = preset("tiny", vocab_size=512, num_layers=1)
  ref = Transformer(cfg2)
  ref_params = nn.unbox(ref.init(jax.random.PRNGKey(5), jnp.zeros((1, LENGTH), jnp.int32))["params"])
  b = next(keyed_batches(name, "train", LENGTH, 4))
  x = {k: jnp.asarray(b[k]) for k in offline_scoring.MODEL_FEATURES if k in b}
  out = jax.jit(scorers.make_difference_scorer(model, ref))((params, ref_params), x)
  w = np.asarray(x["decoder_loss_weights"], bool)
  for row in range(4):
    ce_t = np.asarray(token_cross_entropy(model.apply({"params": params}, x["decoder_input_tokens"][row:row + 1]),
                                          x["decoder_target_tokens"][row:row + 1]))[0][w[row]]
    ce_r = np.asarray(token_cross_entropy(ref.apply({"params": ref_params}, x["decoder_input_tokens"][row:row + 1]),
                                          x["decoder_target_tokens"][row:row + 1]))[0][w[row]]
    # score = loss_ref − loss_teacher (per-token mean)
    np.testing.assert_allclose(out["difference"][row], ce_r.mean() - ce_t.mean(), rtol=1e-5, atol=1e-6)
  sel = rules.top_fraction(np.asarray(out["difference"]), 0.5)
  np.testing.assert_array_equal(sel, np.argsort(-np.asarray(out["difference"]), kind="stable")[:2])


@pytest.fixture(scope="module")
def chunks(task, tmp_path_factory):
  name, _ = task
  directory = str(tmp_path_factory.mktemp("chunks") / "store")
  chunk_store.write_chunk_store(directory, name, "train", LENGTH, num_shards=3)
  return chunk_store.ChunkStore(directory)


def _valid_rows(batches):
  rows = [{k: b[k][i] for k in b} for b in batches for i in np.flatnonzero(b["valid"])]
  return [(f"{r['doc_id'].decode() if isinstance(r['doc_id'], bytes) else r['doc_id']}#{r['chunk_index']}", r)
          for r in rows]


def test_keyed_store_batches_are_the_keyed_batches_of_the_keys(task, chunks):
  """A subset of the split's keys, read from its chunk store by index: the same rows (features, keys) as the split
  streamed with those keys, in the keys' order; two processes' rows, global batch by global batch, are that too."""
  name, _ = task
  keys = example_keys(name, "train", LENGTH)
  subset = [keys[i] for i in sorted(np.random.default_rng(0).permutation(len(keys))[:21])]
  streamed = _valid_rows(keyed_batches(name, "train", LENGTH, 8, keys=set(subset)))
  batches = list(store_source.keyed_store_batches(chunks, subset, 8))
  stored = _valid_rows(batches)
  assert [k for k, _ in stored] == [k for k, _ in streamed] == subset
  for (_, a), (_, b) in zip(stored, streamed):
    assert sorted(a) == sorted(b)
    for k in offline_scoring.MODEL_FEATURES:
      if k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert len(batches) == 3 and batches[-1]["valid"].sum() == 5
  assert (batches[-1]["decoder_loss_weights"][~batches[-1]["valid"]] == 0).all()
  halves = [list(store_source.keyed_store_batches(chunks, subset, 4, process_index=p, process_count=2))
            for p in (0, 1)]
  assert len(halves[0]) == len(halves[1]) == 3
  assert [k for b in range(3) for p in (0, 1) for k, _ in _valid_rows([halves[p][b]])] == subset
  later = store_source.keyed_store_batches(chunks, subset, 8, start_batch=2)
  assert [k for k, _ in _valid_rows(later)] == subset[16:]


def test_scoring_keys_from_the_chunk_store_equals_streaming_them(task, model_and_params, chunks, tmp_path):
  name, _ = task
  model, params = model_and_params
  fn = scorers.make_lm_scorer(model, with_token_losses=True)
  keys = example_keys(name, "train", LENGTH)[::3]
  kw = dict(task=name, split="train", sequence_length=LENGTH, batch_size=8, batches_per_shard=2, progress=False,
            keys=keys)
  streamed = offline_scoring.score_split(fn, params, store_dir=str(tmp_path / "streamed"), **kw)
  assert offline_scoring.score_split(fn, params, store_dir=str(tmp_path / "stored"), chunks=chunks,
                                     stop_after_shards=1, **kw) is None  # interrupted, then resumed
  stored = offline_scoring.score_split(fn, params, store_dir=str(tmp_path / "stored"), chunks=chunks, **kw)
  assert stored.keys() == streamed.keys() == keys
  for c in streamed.columns:
    np.testing.assert_array_equal(stored.columns[c], streamed.columns[c], err_msg=c)
  np.testing.assert_array_equal(stored.num_tokens, streamed.num_tokens)
  np.testing.assert_array_equal(stored.token_columns["loss"], streamed.token_columns["loss"])
  with pytest.raises(ValueError, match="holds score_lm:train at 32 tokens, not score_lm:train at 64"):
    offline_scoring.score_split(fn, params, store_dir=str(tmp_path / "bad"), chunks=chunks,
                                **dict(kw, sequence_length=64))
