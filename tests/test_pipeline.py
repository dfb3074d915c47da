"""Tests for bliss_jax.data.pipeline."""
import collections
import itertools

import numpy as np
import pytest
import seqio
from pydoc_data import topics

from bliss_jax.data import pipeline
from bliss_jax.data import seqio_tasks
from bliss_jax.data import vocabulary

KEYS = ['decoder_input_tokens', 'decoder_loss_weights', 'decoder_positions', 'decoder_segment_ids',
        'decoder_target_tokens']


@pytest.fixture(scope='module')
def vocab(tmp_path_factory):
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  path = vocabulary.train_sentencepiece(texts, str(tmp_path_factory.mktemp('spm') / 'small.model'), 300)
  return vocabulary.load_vocabulary(path)


@pytest.fixture(scope='module')
def docs():
  """120 documents of 2 to ~60 words; the document number recurs, so no two chunks are equal."""
  words = 'the statement of a value is assigned to each name in the list when the loop ends'.split()
  return [(f'doc:{i}', f'item {i} ' + ' '.join(f'{words[(i * 3 + j) % len(words)]} {i}' for j in range(7 * i % 30)))
          for i in range(120)]


@pytest.fixture(scope='module')
def task(vocab, docs):
  seqio_tasks.register_document_task('pipe_lm', lambda: docs, vocab, validation_fraction=0.1)
  seqio_tasks.register_document_task('pipe_prefix', lambda: docs, vocab, objective='prefix_lm')
  return 'pipe_lm'


def _batches(name='pipe_lm', n=None, split='train', length=32, batch_size=4, **kwargs):
  kwargs = {'shuffle': True, 'seed': 0, 'repeat': True, **kwargs}
  ds = pipeline.get_dataset(name, split, length, batch_size, **kwargs)
  return list(itertools.islice(ds.as_numpy_iterator(), n))


def _segments(batch):
  """Splits packed rows into the target sequences of their segments."""
  out = []
  for tokens, segment_ids in zip(batch['decoder_target_tokens'], batch['decoder_segment_ids']):
    for s in range(1, segment_ids.max() + 1):
      out.append(tuple(tokens[segment_ids == s]))
  return out


def test_packed_batches_are_consistent(task):
  batches = _batches(n=6, length=64)
  for batch in batches:
    assert sorted(batch) == KEYS
    for value in batch.values():
      assert value.shape == (4, 64) and value.dtype == np.int32
    for row in range(4):
      seg = batch['decoder_segment_ids'][row]
      pos = batch['decoder_positions'][row]
      tgt = batch['decoder_target_tokens'][row]
      inp = batch['decoder_input_tokens'][row]
      used = seg > 0
      n = int(used.sum())
      assert used[:n].all() and seg[0] == 1  # Padding only at the end.
      assert set(np.diff(seg[:n]).tolist()) <= {0, 1}  # Segments 1, 2, ... in order.
      np.testing.assert_array_equal(used, tgt != 0)
      np.testing.assert_array_equal(batch['decoder_loss_weights'][row], used.astype(np.int32))
      for s in range(1, seg.max() + 1):
        idx = np.flatnonzero(seg == s)
        np.testing.assert_array_equal(pos[idx], np.arange(len(idx)))  # Restart at 0, count up.
        np.testing.assert_array_equal(inp[idx], np.concatenate([[0], tgt[idx][:-1]]))  # Shifted right.
        assert tgt[idx][-1] == 1  # Every segment is one chunk, ending with EOS.
  assert any(b['decoder_segment_ids'].max() > 1 for b in batches)  # Something was packed.


def test_packing_keeps_every_chunk_exactly_once(task):
  """One unshuffled epoch, packed: its segments are exactly the task's examples."""
  packed = _batches(shuffle=False, repeat=False, batch_size=1, seed=None)
  examples = seqio.get_mixture_or_task(task).get_dataset({'targets': 32}, split='train', shuffle=False)
  expected = [tuple(x['targets']) for x in examples.as_numpy_iterator()]
  assert [s for b in packed for s in _segments(b)] == expected


def test_unpacked_and_prefix_lm(task, vocab):
  (batch,) = _batches(n=1, pack=False)
  assert sorted(batch) == KEYS
  for row in range(4):
    n = np.count_nonzero(batch['decoder_target_tokens'][row])
    np.testing.assert_array_equal(batch['decoder_segment_ids'][row], np.arange(32) < n)
    np.testing.assert_array_equal(batch['decoder_positions'][row], np.where(np.arange(32) < n, np.arange(32), 0))
  (batch,) = _batches('pipe_prefix', n=1, feature_converter='prefix_lm')
  assert sorted(batch) == sorted(KEYS + ['decoder_causal_attention'])
  assert all(v.shape == (4, 32) for v in batch.values())
  for row in range(4):
    seg, weights = batch['decoder_segment_ids'][row], batch['decoder_loss_weights'][row]
    for s in range(1, seg.max() + 1):
      idx = np.flatnonzero(seg == s)
      num_inputs = batch['decoder_causal_attention'][row][idx].sum() - 1  # Causal reaches one past the prefix.
      assert 0 <= num_inputs <= 16 and len(idx) - num_inputs <= 16
      np.testing.assert_array_equal(weights[idx], np.arange(len(idx)) >= num_inputs)  # Loss on targets only.
  with pytest.raises(ValueError, match='prefix_lm'):
    pipeline.get_dataset('pipe_lm', 'train', 32, 4, shuffle=False, seed=0, repeat=False,
                         feature_converter='prefix_lm')


def test_same_seed_same_batches(task):
  a, b, c = (_batches(n=5, seed=s) for s in (1, 1, 2))
  for x, y in zip(a, b):
    for key in KEYS:
      np.testing.assert_array_equal(x[key], y[key])
  assert any(not np.array_equal(x['decoder_target_tokens'], z['decoder_target_tokens']) for x, z in zip(a, c))


def test_processes_read_disjoint_shards(task):
  rows = []
  for index in range(2):
    batches = _batches(repeat=False, pack=False, batch_size=1, process_index=index, process_count=2)
    rows.append(collections.Counter(tuple(b['decoder_target_tokens'][0]) for b in batches))
  everything = collections.Counter(
      tuple(b['decoder_target_tokens'][0]) for b in _batches(repeat=False, pack=False, batch_size=1))
  # Every chunk of the epoch is read exactly once, by one process (a chunk read twice would count twice).
  assert rows[0] + rows[1] == everything and len(rows[0]) > 0 and len(rows[1]) > 0
  doc_ids = [
      {x['doc_id'] for x in seqio.get_mixture_or_task(task).get_dataset(
          {'targets': 32}, split='train', shuffle=True, seed=0,
          shard_info=seqio.ShardInfo(index, 2)).as_numpy_iterator()}
      for index in range(2)]
  assert not doc_ids[0] & doc_ids[1] and abs(len(doc_ids[0]) - len(doc_ids[1])) <= 1


def test_batch_iterator_resumes_exactly(task):
  make = lambda: pipeline.get_dataset('pipe_lm', 'train', 32, 4, shuffle=True, seed=5, repeat=True)
  straight = list(itertools.islice(make().as_numpy_iterator(), 8))
  iterator = pipeline.BatchIterator(make())
  first = [next(iterator) for _ in range(5)]
  assert iterator.position == 5
  resumed = pipeline.BatchIterator(make(), start_position=iterator.position)
  rest = [next(resumed) for _ in range(3)]
  assert resumed.position == 8
  for x, y in zip(first + rest, straight):
    for key in KEYS:
      np.testing.assert_array_equal(x[key], y[key])


def test_token_unigram_entropy_matches_hand_count(task, vocab, docs):
  validation = [text for doc_id, text in docs if seqio_tasks.split_of(doc_id, 0.1) == 'validation']
  tokens = [t for text in validation for t in vocab.encode(text) + [1]]  # One chunk (one EOS) per document.
  counts = np.bincount(tokens, minlength=vocab.vocab_size)
  np.testing.assert_array_equal(pipeline.token_counts(task, 'validation'), counts)
  p = counts[counts > 0] / len(tokens)
  expected = -np.sum(p * np.log(p))
  assert pipeline.token_unigram_entropy(task, 'validation') == pytest.approx(expected, rel=1e-12)
  first_two = [t for text in validation[:2] for t in vocab.encode(text) + [1]]
  p2 = np.bincount(first_two)[np.bincount(first_two) > 0] / len(first_two)
  assert pipeline.token_unigram_entropy(task, 'validation', max_examples=2) == pytest.approx(
      -np.sum(p2 * np.log(p2)), rel=1e-12)
  # At sequence_length 8, long documents are cut into chunks: more EOS, the same other tokens.
  chunked = pipeline.token_counts(task, 'validation', sequence_length=8)
  assert chunked[1] > counts[1] and np.array_equal(np.delete(chunked, 1), np.delete(counts, 1))


def test_token_counts_of_a_randomly_split_prefix_lm_task_are_the_same_in_every_call(task):
  """The prefix-LM split point is random: counted with a fixed seed, two calls (or two processes) count the same
  targets, so a report's unigram entropy is reproducible."""
  first = pipeline.token_counts('pipe_prefix', 'train', sequence_length=32)
  assert first.sum() > 0
  np.testing.assert_array_equal(pipeline.token_counts('pipe_prefix', 'train', sequence_length=32), first)


def test_seqio_batch_source_for_the_trainer(task, vocab):
  source = pipeline.seqio_batch_source(task, batch_size=4, sequence_length=32, seed=5)
  assert pipeline.vocabulary_size(task) == vocab.vocab_size == 400
  straight = list(itertools.islice(pipeline.get_dataset(
      task, 'train', 32, 4, shuffle=True, seed=5, repeat=True).as_numpy_iterator(), 3))
  resumed = source('train', start_position=1)
  assert resumed.position == 1
  np.testing.assert_array_equal(next(resumed)['decoder_target_tokens'], straight[1]['decoder_target_tokens'])
  halves = [next(source('validation', process_index=i, process_count=2, repeat=False)) for i in range(2)]
  assert all(h['decoder_target_tokens'].shape == (2, 32) for h in halves)  # Global batch 4 over 2 processes.
  with pytest.raises(ValueError, match='divisible'):
    source('train', process_count=3)


def test_single_pass_pads_last_batch_instead_of_dropping(task):
  """Evaluation sees every token: the last partial batch is padded with zero-weight rows."""
  rows = _batches(split='validation', length=32, batch_size=1, shuffle=False, repeat=False)
  batch_size = len(rows) // 2 + 1  # one full batch and a partial one
  def batches(drop):
    ds = pipeline.get_dataset('pipe_lm', 'validation', 32, batch_size, shuffle=False, seed=0, repeat=False,
                              drop_remainder=drop)
    return list(ds.as_numpy_iterator())
  padded, dropped = batches(False), batches(True)
  assert len(padded) == 2 and len(dropped) == 1
  assert all(b['decoder_target_tokens'].shape == (batch_size, 32) for b in padded)
  weight = lambda bs: sum(int(b['decoder_loss_weights'].sum()) for b in bs)
  assert weight(padded) == weight(rows) > weight(dropped)
  assert (padded[-1]['decoder_loss_weights'].sum(-1) == 0).any()
