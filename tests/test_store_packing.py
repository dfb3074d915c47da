"""Packing a chunk store's selection as seqio packs it: hand-computed rows, the same features as seqio's converter (a
tokenizer whose id 0 is a token and with a bos included), the store source's batches equal to the selection's
registered SeqIO task batch for batch (packed and unpacked, shuffled with a seed or in order), two processes reading
the halves of the single-process batch, and a resume reading only the records of the batch it yields."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from bliss_jax.data import chunk_store, hf_tokenizer, packing, pipeline, seqio_tasks
from bliss_jax.data.store_source import store_batch_source
from bliss_jax.selection.selected_task import register_selected_task, selected_store_source
from test_hf_token_ids import _byte_bpe  # noqa: E402  (a byte-level tokenizer.json with its config)

L, B = 16, 4


def test_window_row_starts_is_next_fit_in_order():
  # 3 | 3+4=7 | 7+2 > 8: row 2 starts at 2 | 2+5=7 | 7+1=8 | 8+1 > 8: row 3 at 5 | 1+8 > 8: row 4 at 6
  assert packing.window_row_starts([3, 4, 2, 5, 1, 1, 8], 8) == [0, 2, 5, 6]
  assert packing.window_row_starts([8, 8], 8) == [0, 1]
  with pytest.raises(ValueError, match="does not fit"):
    packing.window_row_starts([9], 8)


def test_packed_rows_close_at_every_window_end():
  lengths = lambda t0, t1: np.ones(t1 - t0, np.int32)  # endless one-token examples: 4 fit a row
  assert packing.PackedRows(lengths, 4, window=4).spans(0, 3) == [(0, 4), (4, 8), (8, 12)]
  assert packing.PackedRows(lengths, 4, window=3).spans(1, 3) == [(3, 6), (6, 9)]  # closed at 3 tokens
  finite = packing.PackedRows(lambda t0, t1: np.ones(max(0, min(t1, 10) - t0), np.int32), 4, window=4)
  assert finite.spans(1, 5) == [(4, 8), (8, 10), (0, 0), (0, 0)] and finite.num_rows() == 3


def test_decoder_rows_by_hand_with_a_shift_and_a_bos():
  ids = pipeline.DecoderIds(shift=1, bos_id=8)  # id 0 a token, start id 7 (8 shifted)
  x = packing.decoder_rows([[np.array([5, 0, 6]), np.array([0, 4])]], 2, 6, ids, packed=True)
  assert x["decoder_target_tokens"].tolist() == [[5, 0, 6, 0, 4, 0], [0] * 6]
  assert x["decoder_input_tokens"].tolist() == [[7, 5, 0, 7, 0, 7], [0] * 6]
  assert x["decoder_segment_ids"].tolist() == [[1, 1, 1, 2, 2, 0], [0] * 6]
  assert x["decoder_positions"].tolist() == [[0, 1, 2, 0, 1, 0], [0] * 6]
  assert x["decoder_loss_weights"].tolist() == [[1, 1, 1, 1, 1, 0], [0] * 6]
  seqio_ids = packing.decoder_rows([[np.array([5, 3, 6])]], 1, 5, pipeline.DecoderIds(0, 0), packed=False)
  assert seqio_ids["decoder_input_tokens"].tolist() == [[0, 5, 3, 6, 0]]  # unpacked: shifted across the row
  assert seqio_ids["decoder_segment_ids"].tolist() == [[1, 1, 1, 0, 0]]


def _byte_tokenizer(directory):
  """A byte-level tokenizer whose id 0 is "!" (a token), eos <|endoftext|>, adding the bos <|im_start|>."""
  specials = ["<|endoftext|>", "<|im_start|>"]
  return hf_tokenizer.load_tokenizer(_byte_bpe(directory, specials, False, {
      "eos_token": specials[0], "bos_token": specials[1], "add_bos_token": True, "pad_token": None,
      "unk_token": None}))


def _rows_of(examples, vocab, pack):
  """seqio's converter (`pipeline.model_features`) over `examples` (lists of ids), every row."""
  ds = tf.data.Dataset.from_generator(lambda: ({"targets": np.asarray(e, np.int32)} for e in examples),
                                      output_signature={"targets": tf.TensorSpec([None], tf.int32)})
  ds = pipeline.model_features(ds, {"targets": L}, vocab, "decoder", pack)
  rows = list(ds.as_numpy_iterator())
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("kind", ["bytes", "id0_token_with_bos"])
@pytest.mark.parametrize("pack", [True, False])
def test_rows_equal_seqios_converter(tmp_path, kind, pack):
  rng = np.random.default_rng(0)
  if kind == "bytes":
    vocab = seqio.ByteVocabulary()
    examples = [rng.integers(3, 200, rng.integers(1, L + 1)).tolist() for _ in range(40)]
  else:
    vocab = _byte_tokenizer(tmp_path / "tok")
    assert vocab.id0_is_token and vocab.start_id is not None
    examples = [rng.integers(0, 4, rng.integers(1, L + 1)).tolist() for _ in range(40)]  # many 0s
  expected = _rows_of(examples, vocab, pack)
  ids = pipeline.decoder_ids(vocab)
  lengths = np.array([len(packing.kept_tokens(e, L, ids.shift)) for e in examples])
  plan = packing.PackedRows(lambda t0, t1: lengths[t0:t1], L, window=L)
  spans = plan.spans(0, plan.num_rows()) if pack else [(t, t + 1) for t in range(len(examples))]
  got = packing.decoder_rows([[np.asarray(e) for e in examples[s:e]] for s, e in spans], len(spans), L, ids, pack)
  assert sorted(got) == sorted(expected)
  for k in expected:
    np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
  if pack:
    assert expected["decoder_segment_ids"].max() > 2  # rows do hold several examples


@pytest.fixture(scope="module")
def store(tmp_path_factory):
  words = "a value is set to each name in the list as it ends".split()  # chunks of 2 to 16 bytes
  docs = [(f"p:{i}", " ".join(words[(i + j) % len(words)] for j in range(1 + (5 * i) % 9))) for i in range(40)]
  seqio_tasks.register_document_task("store_pack_lm", lambda: docs, seqio.ByteVocabulary(), validation_fraction=0.0)
  directory = str(tmp_path_factory.mktemp("chunks") / "store")
  chunk_store.write_chunk_store(directory, "store_pack_lm", "train", L, num_shards=2)
  return directory


@pytest.mark.parametrize("pack,shuffle", [(True, True), (True, False), (False, True)])
def test_the_store_source_gives_the_registered_tasks_batches(store, pack, shuffle):
  reader = chunk_store.ChunkStore(store)
  keys = reader.keys()
  selection = [keys[i] for i in np.random.default_rng(1).permutation(len(keys))[:25]]
  register_selected_task("store_pack_selected", "store_pack_lm", selection, sequence_length=L)
  seqio_stream = pipeline.seqio_batch_source("store_pack_selected", batch_size=B, sequence_length=L, seed=7,
                                             pack=pack)("train")
  if not shuffle:
    seqio_stream = pipeline.get_dataset("store_pack_selected", "train", L, B, shuffle=False, seed=7, pack=pack,
                                        repeat=True).as_numpy_iterator()
  source = selected_store_source(store, selection, batch_size=B, seed=7, shuffle=shuffle, pack=pack, store=reader)
  straight = source("train")
  batches = []
  for _ in range(20):  # several epochs of the 25 selected chunks
    expected, got = next(seqio_stream), next(straight)
    batches.append(got)
    assert sorted(got) == sorted(expected)
    for k in expected:
      np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
  if pack:
    assert max(b["decoder_segment_ids"].max() for b in batches) > 1
  # A resume reads the records of the batch it yields only. Its own store object: ``straight`` still prefetches on
  # its read thread, which would add to a shared counter.
  counted = chunk_store.ChunkStore(store)
  for position in (3, 17):
    counted.records_read = 0
    resumed = selected_store_source(store, selection, batch_size=B, seed=7, shuffle=shuffle, pack=pack,
                                    store=counted, read_threads=0)("train", start_position=position)
    keys_read = counted.records_read  # finding the selection's indices (the store's keys, once per store object)
    got = next(resumed)
    segments = batches[position]["decoder_segment_ids"].max(axis=1).sum()
    assert counted.records_read - keys_read == segments
    for k in got:
      np.testing.assert_array_equal(got[k], batches[position][k], err_msg=k)


def test_two_processes_read_the_halves_of_the_packed_batch(store):
  one = store_batch_source(store, batch_size=4, indices=np.arange(0, 60, 2), seed=3, pack=True, read_threads=0)
  single = one("train")
  halves = [one("train", process_index=p, process_count=2) for p in (0, 1)]
  for _ in range(12):
    batch, parts = next(single), [next(h) for h in halves]
    for k in batch:
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), batch[k], err_msg=k)


def test_a_far_packed_resume_reads_one_batch_of_records(store):
  source = store_batch_source(store, batch_size=4, seed=5, pack=True, read_threads=0)
  far = source("train", start_position=3000)
  source.store.records_read = 0
  batch = next(far)
  assert source.store.records_read == batch["decoder_segment_ids"].max(axis=1).sum() >= 4
