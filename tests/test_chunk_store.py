"""The chunk store and its training source: round trip to the SeqIO task's chunks, resumable writes, refusal of a
mismatched reuse, disjoint per-process reads in the single-process order, and O(1) exact resume."""
import os

import numpy as np
import pytest
import seqio

from bliss_jax.data import chunk_manifest, chunk_store, seqio_tasks
from bliss_jax.data.keyed import keyed_batches
from bliss_jax.data.store_source import store_batch_source

LENGTH = 16
TASK = "store_lm"


def _documents():
  words = "the statement of a value is assigned to each name in the list when the loop ends".split()
  return [(f"d:{i}", " ".join(words[j % len(words)] for j in range(i, i + 1 + (7 * i) % 23))) for i in range(30)]


@pytest.fixture(scope="module")
def task():
  seqio_tasks.register_document_task(TASK, _documents, seqio.ByteVocabulary(), validation_fraction=0.0)
  return TASK


@pytest.fixture(scope="module")
def store(task, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("chunks") / "store")
  manifest = chunk_store.write_chunk_store(directory, task, "train", LENGTH, num_shards=3)
  assert manifest["complete"]
  return directory


def _task_chunks(task):
  """key -> (targets, example) of every chunk of the task at LENGTH, read by keyed_batches (seqio's converter)."""
  out = {}
  for b in keyed_batches(task, "train", LENGTH, 8):
    for r in np.flatnonzero(b["valid"]):
      key = f"{b['doc_id'][r].decode()}#{b['chunk_index'][r]}"
      out[key] = {k: v[r] for k, v in b.items() if k.startswith("decoder_")}
  return out


def test_round_trip_equals_the_tasks_chunks_keys_included(task, store):
  reader = chunk_store.ChunkStore(store)
  chunks = reader.read(range(len(reader)))
  expected = _task_chunks(task)
  keys = reader.keys()
  assert sorted(keys) == sorted(expected) and len(set(keys)) == len(keys)
  for key, x in zip(keys, chunks):
    row = expected[key]
    n = len(x["targets"])
    tokens = row["decoder_target_tokens"]
    assert x["targets"].tolist() == tokens[:n].tolist() and not tokens[n:].any()
    assert x["source"] == task and x["chunk_end"] - x["chunk_start"] == n - 1  # the chunk's tokens + EOS
  # the global order is shard 0's chunks, then shard 1's, ...: the task's examples of source shard s of 3, in order
  by_shard = [f"{x['doc_id'].decode()}#{x['chunk_index']}" for s in range(3) for x in seqio.get_mixture_or_task(
      task).get_dataset({"targets": LENGTH}, split="train", shuffle=False, num_epochs=1,
                        shard_info=seqio.ShardInfo(s, 3)).as_numpy_iterator()]
  assert keys == by_shard
  manifest = reader.manifest
  assert manifest["num_records"] == len(expected) == sum(manifest["records_per_shard"])
  assert manifest["num_tokens"] == sum(len(x["targets"]) for x in chunks)
  assert manifest["vocabulary"]["kind"] == "ByteVocabulary" and manifest["sequence_length"] == LENGTH
  np.testing.assert_array_equal(reader.indices_of([keys[5], keys[2]]), [5, 2])


def test_killed_write_resumes_by_shard_without_rewriting_finished_shards(task, store, tmp_path, monkeypatch):
  directory = str(tmp_path / "store")
  real = chunk_store.shard_examples
  written = []

  def killed_in_shard_2(identity, shard):
    written.append(shard)
    for i, x in enumerate(real(identity, shard)):
      if shard == 2 and i == 1:
        raise KeyboardInterrupt("killed")
      yield x

  monkeypatch.setattr(chunk_store, "shard_examples", killed_in_shard_2)
  with pytest.raises(KeyboardInterrupt):
    chunk_store.write_chunk_store(directory, task, "train", LENGTH, num_shards=3)
  assert chunk_manifest.finished_shards(directory, 3) == [0, 1]
  assert not chunk_manifest.read_manifest(directory)["complete"]
  with pytest.raises(ValueError, match="incomplete"):
    chunk_store.ChunkStore(directory)
  before = {k: os.stat(chunk_manifest.shard_path(directory, k)).st_mtime_ns for k in (0, 1)}
  monkeypatch.setattr(chunk_store, "shard_examples", real)
  written.clear()
  spy = chunk_store.write_shard
  monkeypatch.setattr(chunk_store, "write_shard", lambda d, i, s: written.append(s) or spy(d, i, s))
  assert chunk_store.write_chunk_store(directory, task, "train", LENGTH, num_shards=3)["complete"]
  assert written == [2]
  assert before == {k: os.stat(chunk_manifest.shard_path(directory, k)).st_mtime_ns for k in (0, 1)}
  resumed, clean = chunk_store.ChunkStore(directory), chunk_store.ChunkStore(store)
  assert resumed.manifest == clean.manifest
  for a, b in zip(resumed.read(range(len(resumed))), clean.read(range(len(clean)))):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  written.clear()
  chunk_store.write_chunk_store(directory, task, "train", LENGTH, num_shards=3)  # complete: nothing rewritten
  assert written == []


def test_processes_split_the_shards_and_the_last_one_completes_the_store(task, store, tmp_path):
  directory = str(tmp_path / "store")
  first = chunk_store.write_chunk_store(directory, task, "train", LENGTH, num_shards=3, process_index=0,
                                        process_count=2)
  assert not first["complete"] and chunk_manifest.finished_shards(directory, 3) == [0, 2]
  second = chunk_store.write_chunk_store(directory, task, "train", LENGTH, num_shards=3, process_index=1,
                                         process_count=2)
  assert second == chunk_manifest.read_manifest(store)


def test_a_mismatched_reuse_is_refused(task, store):
  with pytest.raises(ValueError, match="sequence_length: stored 16, asked 32"):
    chunk_store.write_chunk_store(store, task, "train", 32, num_shards=3)
  with pytest.raises(ValueError, match="shards"):
    chunk_store.write_chunk_store(store, task, "train", LENGTH, num_shards=4)


def test_source_in_selection_order_equals_the_seqio_rows_of_the_selection(task, store):
  reader = chunk_store.ChunkStore(store)
  keys, expected = reader.keys(), _task_chunks(task)
  selection = np.random.default_rng(0).permutation(len(reader))[:12]
  source = store_batch_source(store, batch_size=4, indices=selection, shuffle=False)
  assert source.seqio_tasks == (task,)
  it = source("train")
  for b in range(6):  # two epochs of the 12 selected, in the selection's order
    batch = next(it)
    assert it.position == b + 1
    for r in range(4):
      row = expected[keys[selection[(4 * b + r) % 12]]]
      assert sorted(batch) == sorted(row)
      for k in row:
        np.testing.assert_array_equal(batch[k][r], row[k], err_msg=k)


def test_two_processes_read_disjoint_rows_in_the_single_process_order(store):
  selection = np.arange(1, 40, 2)
  one = store_batch_source(store, batch_size=4, indices=selection, seed=3)
  it = one("train")
  single = [next(it)["decoder_target_tokens"] for _ in range(10)]  # 40 rows: two shuffled epochs of 20
  its = [one("train", process_index=p, process_count=2) for p in (0, 1)]
  for batch in single:
    halves = [next(i)["decoder_target_tokens"] for i in its]
    np.testing.assert_array_equal(np.concatenate(halves), batch)
  reader = chunk_store.ChunkStore(store)
  targets = {tuple(np.trim_zeros(x["targets"], "b")) for x in reader.read(selection)}
  rows = [tuple(np.trim_zeros(r, "b")) for b in single[:5] for r in b]
  assert len(rows) == 20 and set(rows) <= targets  # one epoch holds the selection
  assert sorted(rows) == sorted(tuple(np.trim_zeros(x["targets"], "b")) for x in reader.read(selection))
  second_epoch = [tuple(np.trim_zeros(r, "b")) for b in single[5:] for r in b]
  assert sorted(second_epoch) == sorted(rows) and second_epoch != rows  # reshuffled


def test_resume_reads_o1_records_and_continues_exactly(store):
  source = store_batch_source(store, batch_size=4, seed=7, read_threads=0)
  it = source("train")
  straight = [next(it) for _ in range(30)]
  for position in (1, 13, 29):
    resumed = source("train", start_position=position)
    source.store.records_read = 0
    batch = next(resumed)
    assert source.store.records_read == 4 and resumed.position == position + 1
    for k in batch:
      np.testing.assert_array_equal(batch[k], straight[position][k])
  far = source("train", start_position=10_000_000)
  source.store.records_read = 0
  next(far)
  assert source.store.records_read == 4
  threaded = store_batch_source(store, batch_size=4, seed=7, read_threads=2, prefetch=2)("train", start_position=5)
  for position in range(5, 30):
    np.testing.assert_array_equal(next(threaded)["decoder_target_tokens"], straight[position]["decoder_target_tokens"])


def test_one_pass_pads_the_last_batch_and_other_splits_need_an_eval_source(store):
  source = store_batch_source(store, batch_size=8, indices=np.arange(10), shuffle=False)
  batches = list(source("train", repeat=False))
  assert len(batches) == 2 and batches[1]["decoder_target_tokens"][2:].sum() == 0
  assert batches[1]["decoder_target_tokens"][:2, 0].all()
  with pytest.raises(ValueError, match="eval_source"):
    source("validation")
