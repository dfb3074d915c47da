"""Tests for bliss_jax.data.ul2: UL2 denoisers, their statistics, reconstruction, mixtures and packed features.

Statistics are measured on thousands of generated examples with short sequences and seqio's ByteVocabulary
(259 ids + extra ids, no training). Two kinds of tolerance:

* Noise density and mean span length are deterministic functions of the chunk lengths (T5's design: a chunk of n
  tokens gets exactly k = round(r n) noise tokens in S = round(k / mu) spans), so the tests check (k, S) per
  example exactly and bound the aggregates by the rounding: |k_i - r n_i| <= 1/2 (1 - r n_i when the clip to
  k >= 1 applies), |S_i - k_i / mu| <= 1/2 (1 - k_i / mu when S >= 1 applies), summed over examples.
* The prefix length, the span placement and the mixture's choice of task are random, so their tolerances are
  4.5 standard errors of the CLT (two-sided normal tail 7e-6; the seeds are fixed, so the tests are
  deterministic): the prefix length s_i is uniform on 2 w_i + 1 integers around c_i, variance w_i (w_i + 1) / 3;
  a mixture sample of N examples is multinomial, each rate's count binomial with variance N p (1 - p).
"""
import collections
import itertools
import math

import numpy as np
import pytest
import seqio
import tensorflow as tf

from bliss_jax.data import pipeline
from bliss_jax.data import ul2

EXTRA_IDS = 40
VOCAB = seqio.ByteVocabulary(extra_ids=EXTRA_IDS)
V = VOCAB.vocab_size  # 299
FEATURES = ul2.ul2_output_features(VOCAB)
Z = 4.5  # standard errors


def _token_docs(n_docs, min_len, max_len, seed=0):
  """Random documents of token ids in [3, 200): never EOS, padding or a sentinel."""
  rng = np.random.default_rng(seed)
  return [rng.integers(3, 200, size=n).tolist() for n in rng.integers(min_len, max_len + 1, size=n_docs)]


def _denoise(denoiser, docs, sequence_length, seed=0, **kwargs):
  """The examples of ``ul2.denoise`` (before EOS) over ``docs``, in order."""
  ds = tf.data.Dataset.from_tensor_slices({
      'targets': tf.ragged.constant(docs, dtype=tf.int32),
      'doc_id': [str(i) for i in range(len(docs))]}).map(dict)
  with seqio.utils.map_seed_manager(seed):
    ds = ul2.denoise(ds, sequence_length, FEATURES, denoiser, **kwargs)
  return list(ds.as_numpy_iterator())


def _is_sentinel(t, mode_ids=None):
  return t >= V - ul2.num_sentinels(VOCAB, mode_ids)


# ------------------------------------------------------------------------------------------------------------
# Closed forms.


def test_span_counts_and_prefix_bounds_by_hand():
  assert ul2.span_counts(1, 0.15, 3) == (0, 0)
  assert ul2.span_counts(2, 0.15, 3) == (1, 1)  # round(0.3) = 0, clipped to 1.
  assert ul2.span_counts(20, 0.15, 3) == (3, 1)
  assert ul2.span_counts(100, 0.15, 3) == (15, 5)
  assert ul2.span_counts(30, 0.15, 3) == (4, 1)  # round(4.5) = 4: half to even, as tf.round.
  assert ul2.span_counts(250, 0.5, 32) == (125, 4)
  assert ul2.span_counts(3, 0.5, 1, t5_edges=True) == (2, 1)  # 2 spans need 2 clean tokens with T5's edges.
  assert ul2.span_counts(3, 0.5, 1) == (2, 2)  # ...but only 1 with free edges: [x] c [x].
  assert ul2.prefix_bounds(1, 0.25) == (0, 0)
  assert ul2.prefix_bounds(2, 0.25) == (1, 1)
  assert ul2.prefix_bounds(40, 0.25) == (1, 19)  # c = 10, w = 9: mean 10 = 40 / 4.
  assert ul2.prefix_bounds(40, 0.75) == (21, 39)  # c = 30, w = 9.
  assert ul2.prefix_bounds(40, 0.5) == (1, 39)  # T5's random_prefix_noise_mask.


def test_chunk_length_by_hand():
  lengths = {'inputs': 32, 'targets': 32}  # example_length 32
  # Causal: m + n + 1 <= 32.
  assert ul2.chunk_length(ul2.CAUSAL_LM, lengths) == 31
  assert ul2.chunk_length(ul2.CAUSAL_LM, lengths, num_mode_tokens=1) == 30
  assert ul2.chunk_length(ul2.CAUSAL_LM, lengths, example_length=64) == 31  # targets + EOS <= 32.
  # Prefix: total n + 1 <= 32 and targets n - lo + 1 <= 32.
  assert ul2.chunk_length(ul2.PREFIX_LM, lengths) == 31
  # Span (0.15, 3): n = 29 -> k = 4, S = 1, total 29 + 1 + 2 = 32; n = 30 -> k = round(4.5) = 4, total 33.
  assert ul2.chunk_length(ul2.SPAN_CORRUPTION, lengths) == 29
  # Extreme (0.5, 32) with the full row: n = 61 -> k = round(30.5) = 30, S = 1: inputs 32, targets 32, total 64;
  # n = 62 -> k = 31: targets 33 > 32.
  assert ul2.chunk_length(ul2.EXTREME_SPAN_CORRUPTION, lengths, example_length=64) == 61
  assert ul2.output_lengths(ul2.EXTREME_SPAN_CORRUPTION, 61) == (32, 32, 1)
  assert ul2.example_total_length(ul2.EXTREME_SPAN_CORRUPTION, 61) == 64
  # Sentinel budget: at most 2 spans -> k / 3 rounds to <= 2 -> k <= 7 -> n <= 49 (k = round(7.35) = 7).
  assert ul2.chunk_length(ul2.SPAN_CORRUPTION, {'inputs': 64, 'targets': 64}, max_sentinels=2) == 49
  with pytest.raises(ValueError, match="'inputs' and 'targets'"):
    ul2.chunk_length(ul2.CAUSAL_LM, {'targets': 32})


def test_random_segmentation_is_a_composition():
  for seed, (items, segments) in enumerate([(1, 1), (10, 1), (10, 10), (37, 5), (100, 33)]):
    lengths = ul2.random_segmentation(items, segments, tf.constant([seed, 1])).numpy()
    assert lengths.shape == (segments,) and lengths.sum() == items and lengths.min() >= 1


@pytest.mark.parametrize('t5_edges', [False, True])
def test_noise_mask_has_exact_counts(t5_edges):
  for n in (2, 3, 5, 17, 64, 201):
    for r, mu in ((0.15, 3.0), (0.5, 32.0), (0.5, 1.0)):
      k, spans = ul2.span_counts(n, r, mu, t5_edges)
      for seed in range(5):
        mask = ul2.random_spans_noise_mask(n, k, spans, tf.constant([[seed, 0], [seed, 1]]), t5_edges).numpy()
        runs = np.sum(mask & ~np.concatenate([[False], mask[:-1]]))
        assert mask.shape == (n,) and mask.sum() == k and runs == spans
        if t5_edges:
          assert not mask[0] and mask[-1]


def test_noise_spans_to_sentinels_and_back():
  tokens = tf.constant([10, 11, 12, 13, 14, 15, 16, 17])
  mask = tf.constant([True, False, False, True, True, False, False, True])
  inputs, targets = ul2.noise_spans_to_sentinels(tokens, mask, V)
  s0, s1, s2 = V - 1, V - 2, V - 3
  assert inputs.numpy().tolist() == [s0, 11, 12, s1, 15, 16, s2]
  assert targets.numpy().tolist() == [s0, 10, s1, 13, 14, s2, 17]
  assert ul2.fill_in_sentinels(inputs, list(targets.numpy()) + [1], V, EXTRA_IDS) == list(range(10, 18))
  assert ul2.fill_in_sentinels([5, 6], [7, 1], V, EXTRA_IDS) == [5, 6, 7]
  with pytest.raises(ValueError):
    ul2.fill_in_sentinels([5, s1], [s0, 7], V, EXTRA_IDS)


def test_mode_tokens_and_sentinels_do_not_collide():
  assert ul2.mode_token_ids(VOCAB, None) is None
  ids = ul2.mode_token_ids(VOCAB, 'extra_ids')
  assert ids == {'R': V - EXTRA_IDS, 'S': V - EXTRA_IDS + 1, 'X': V - EXTRA_IDS + 2}
  assert ul2.num_sentinels(VOCAB, ids) == EXTRA_IDS - 3
  assert min(ul2.sentinel_id(V, i) for i in range(EXTRA_IDS - 3)) > max(ids.values())
  assert ul2.num_sentinels(VOCAB, {'R': 5, 'S': 6, 'X': V - 3}) == 2  # An explicit id among the extras.
  with pytest.raises(ValueError):
    ul2.mode_token_ids(VOCAB, 'tokens')


# ------------------------------------------------------------------------------------------------------------
# Statistics on thousands of examples.


def _span_stats(examples, mode_ids=None):
  """Per example (n, k, S) read off the outputs, checking the sentinel order on the way."""
  out = []
  for x in examples:
    inputs, targets = x['inputs'].tolist(), x['targets'].tolist()
    sentinels_in = [t for t in inputs if _is_sentinel(t, mode_ids)]
    sentinels_out = [t for t in targets if _is_sentinel(t, mode_ids)]
    assert sentinels_in == sentinels_out == [V - 1 - i for i in range(len(sentinels_in))]
    spans = len(sentinels_out)
    k = len(targets) - spans
    out.append((len(inputs) - spans + k, k, spans))
  return np.array(out)


@pytest.mark.parametrize('denoiser,lengths', [
    (ul2.SPAN_CORRUPTION, {'inputs': 64, 'targets': 64}),
    (ul2.EXTREME_SPAN_CORRUPTION, {'inputs': 256, 'targets': 256}),
])
def test_span_corruption_density_and_span_length(denoiser, lengths):
  r, mu = denoiser.noise_density, denoiser.mean_noise_span_length
  n_max = ul2.chunk_length(denoiser, lengths, 0, EXTRA_IDS)
  docs = _token_docs(600, 2, 6 * n_max, seed=1)
  stats = _span_stats(_denoise(denoiser, docs, lengths))
  n, k, spans = stats.T
  assert len(stats) > 2000
  assert n.max() == n_max
  # Exact per example.
  assert [tuple(s) for s in stats[:, 1:]] == [ul2.span_counts(int(m), r, mu) for m in n]
  # Aggregates within the rounding bounds.
  b = np.where(n < 2, r * n, np.where(r * n >= 0.5, 0.5, 1 - r * n))
  assert abs(k.sum() / n.sum() - r) <= b.sum() / n.sum()
  corrupted = n >= 2
  c = np.where(k / mu >= 0.5, 0.5, 1 - k / mu)[corrupted].sum()
  expected_spans = k.sum() / mu
  assert k.sum() / (expected_spans + c) <= k.sum() / spans.sum() <= k.sum() / (expected_spans - c)
  # For full chunks the realised values are the configured ones up to one rounding.
  full = n == n_max
  assert abs(k[full].mean() / n_max - r) <= 0.5 / n_max
  print(f'{denoiser.name}: {len(stats)} examples, density {k.sum() / n.sum():.4f} (r={r}), mean span '
        f'{k.sum() / spans.sum():.2f} (mu={mu}), n_max={n_max}')


@pytest.mark.parametrize('t5_edges', [False, True])
def test_span_placement(t5_edges):
  """T5's edges: the chunk starts clean and ends in noise. Free edges: placement is mirror-symmetric, so the mean
  relative position of the noise is 1/2 (CLT on the per-example means), and a span starts at the first token
  (ends at the last) with probability S / (n - k + 1): the outer runs are 2 of the n - k + 1 gaps between clean
  tokens that the S spans occupy uniformly (binomial counts, CLT)."""
  lengths = {'inputs': 64, 'targets': 64}
  examples = _denoise(ul2.EXTREME_SPAN_CORRUPTION, _token_docs(800, 60, 61, seed=2), lengths,
                      t5_edges=t5_edges, example_length=64)
  positions, first, last = [], [], []
  for x in examples:
    mask = []
    for t in x['inputs']:  # A sentinel stands for its span.
      mask.extend([True] * len(_span_of(x['targets'], t)) if _is_sentinel(t) else [False])
    mask = np.array(mask)
    positions.append(np.flatnonzero(mask).mean() / (len(mask) - 1))
    first.append(mask[0])
    last.append(mask[-1])
  n, k, spans = _span_stats(examples).T
  if t5_edges:
    assert all(last) and not any(first)
    return
  positions = np.array(positions)
  assert abs(positions.mean() - 0.5) <= Z * positions.std() / math.sqrt(len(positions))
  p = spans / (n - k + 1)
  for hits in (first, last):
    assert abs(np.sum(hits) - p.sum()) <= Z * math.sqrt(np.sum(p * (1 - p)))


def _span_of(targets, sentinel):
  targets = list(targets)
  start = targets.index(sentinel) + 1
  end = next((j for j in range(start, len(targets)) if _is_sentinel(targets[j])), len(targets))
  return targets[start:end]


def test_prefix_fraction():
  lengths = {'inputs': 64, 'targets': 64}
  f = ul2.PREFIX_LM.prefix_fraction
  examples = _denoise(ul2.PREFIX_LM, _token_docs(700, 2, 400, seed=3), lengths)
  s = np.array([len(x['inputs']) for x in examples])
  n = s + np.array([len(x['targets']) for x in examples])
  bounds = np.array([ul2.prefix_bounds(int(m), f) for m in n])
  lo, hi = bounds.T
  assert len(examples) > 2000
  assert np.all((lo <= s) & (s <= hi))
  c, w = (lo + hi) / 2, (hi - lo) / 2
  clt = Z * math.sqrt(np.sum(w * (w + 1) / 3))
  rounding = np.sum(np.where(n < 2, f * n, np.where(f * n >= 0.5, 0.5, 1 - f * n)))
  assert abs(s.sum() - c.sum()) <= clt
  assert abs(s.sum() / n.sum() - f) <= (clt + rounding) / n.sum()
  full = n == n.max()
  assert s[full].min() == lo[full].min() and s[full].max() == hi[full].max()  # The whole range is used.
  print(f'prefix fraction {s.sum() / n.sum():.4f} (f={f}) +- {(clt + rounding) / n.sum():.4f}')


def test_causal_lm_keeps_everything_as_targets():
  examples = _denoise(ul2.CAUSAL_LM, _token_docs(50, 1, 100, seed=4), {'inputs': 16, 'targets': 16},
                      mode_tokens='extra_ids')
  assert all(x['inputs'].tolist() == [V - EXTRA_IDS + 1] for x in examples)  # [S]
  assert max(len(x['targets']) for x in examples) == 14  # 1 + 14 + EOS = 16 = example_length.


# ------------------------------------------------------------------------------------------------------------
# Registered tasks and mixtures.

WORDS = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho'.split()


def _text_docs(n=120):
  return [(f'w:{i}', ' '.join(f'{WORDS[(i * 5 + j * 3) % len(WORDS)]}{(i + j) % 7}' for j in range(1 + (i * 11) % 90)))
          for i in range(n)]


@pytest.fixture(scope='module')
def mixture():
  return ul2.register_ul2_mixture('test_ul2', _text_docs, VOCAB, mode_tokens='extra_ids', validation_fraction=0.1)


def test_register_ul2_mixture(mixture):
  assert sorted(t.name for t in mixture.tasks) == sorted(f'test_ul2_{d.name}' for d in ul2.SALT_DENOISERS)
  assert [mixture.get_rate(seqio.get_mixture_or_task(f'test_ul2_{d.name}')) for d in ul2.SALT_DENOISERS] == [
      0.6, 0.2, 0.1, 0.1]
  assert sorted(mixture.output_features) == ['inputs', 'targets']
  with pytest.raises(ValueError, match='one rate per denoiser'):
    ul2.register_ul2_mixture('bad', _text_docs, VOCAB, rates=(1, 1))


@pytest.mark.parametrize('denoiser', ul2.SALT_DENOISERS, ids=lambda d: d.name)
def test_targets_reconstruct_the_documents(mixture, denoiser):
  del mixture
  lengths = {'inputs': 24, 'targets': 24}
  task = seqio.get_mixture_or_task(f'test_ul2_{denoiser.name}')
  mode = ul2.mode_token_ids(VOCAB, 'extra_ids')[denoiser.mode]
  chunks = collections.defaultdict(dict)
  for x in task.get_dataset(lengths, split='train', shuffle=False, seed=5).as_numpy_iterator():
    inputs, targets = x['inputs'].tolist(), x['targets'].tolist()
    assert inputs[0] == mode and targets[-1] == VOCAB.eos_id
    assert len(inputs) <= 24 and len(targets) <= 24 and len(inputs) + len(targets) <= 24
    chunks[x['doc_id'].decode()][int(x['chunk_index'])] = ul2.fill_in_sentinels(
        inputs[1:], targets, V, EXTRA_IDS - 3)
  docs = {doc_id: text for doc_id, text in _text_docs() if seqio_split(doc_id) == 'train'}
  assert sorted(chunks) == sorted(docs)
  for doc_id, text in docs.items():
    pieces = chunks[doc_id]
    assert sorted(pieces) == list(range(len(pieces)))
    assert sum((pieces[i] for i in range(len(pieces))), []) == VOCAB.encode(text)


def seqio_split(doc_id):
  from bliss_jax.data import seqio_tasks  # pylint: disable=g-import-not-at-top
  return seqio_tasks.split_of(doc_id, 0.1)


def test_mixture_rates(mixture):
  n = 4000
  ds = mixture.get_dataset({'inputs': 24, 'targets': 24}, split='train', shuffle=True, seed=6, num_epochs=None,
                           passthrough_features=[ul2.DENOISER_FEATURE])
  counts = collections.Counter(x[ul2.DENOISER_FEATURE].decode()
                               for x in itertools.islice(ds.as_numpy_iterator(), n))
  for denoiser, p in zip(ul2.SALT_DENOISERS, (0.6, 0.2, 0.1, 0.1)):
    assert abs(counts[denoiser.name] / n - p) <= Z * math.sqrt(p * (1 - p) / n), (denoiser.name, counts)


def _packed_rows(length, feature_converter, batches=12, rows=8):
  """Checks every packed segment of the test mixture's batches; returns ([(segment length, objective)],
  non-padding fraction, largest position)."""
  ds = pipeline.get_dataset('test_ul2', 'train', length, rows, shuffle=True, seed=7, repeat=True,
                            feature_converter=feature_converter)
  corpus = b'\n'.join(VOCAB.decode(VOCAB.encode(t)).encode() for _, t in _text_docs())
  mode_ids = ul2.mode_token_ids(VOCAB, 'extra_ids')
  span_modes = {mode_ids['R'], mode_ids['X']}
  segments, filled, largest = [], 0, 0
  for batch in itertools.islice(ds.as_numpy_iterator(), batches):
    for row in range(rows):
      x = {k: v[row] for k, v in batch.items()}
      seg = x['decoder_segment_ids']
      ids = seg[seg > 0]
      assert np.all(np.diff(ids) >= 0) and ids[0] == 1 and set(ids) == set(range(1, ids.max() + 1))
      assert np.all(seg[len(ids):] == 0)  # Padding only at the end.
      filled += len(ids)
      largest = max(largest, int(x['decoder_positions'].max()))
      for s in range(1, ids.max() + 1):
        where = np.flatnonzero(seg == s)
        tokens = x['decoder_target_tokens'][where]
        loss = x['decoder_loss_weights'][where]
        causal = x['decoder_causal_attention'][where]
        width = int(np.argmax(loss))  # Inputs = the positions before the first loss position.
        assert np.array_equal(x['decoder_positions'][where], np.arange(len(where)))
        assert np.array_equal(loss, (np.arange(len(where)) >= width).astype(int))
        assert np.array_equal(causal, (np.arange(len(where)) <= width).astype(int))  # Inputs + 1 position.
        assert np.array_equal(x['decoder_input_tokens'][where], np.concatenate([[0], tokens[:-1]]))
        assert tokens[-1] == VOCAB.eos_id and tokens[0] in mode_ids.values()
        text = ul2.fill_in_sentinels(tokens[1:width], tokens[width:], V, EXTRA_IDS - 3)
        assert VOCAB.decode(text).encode() in corpus  # The cut between inputs and targets is the real one.
        # [S] alone is a causal-LM example's inputs; [S] + a prefix a prefix-LM example's.
        objective = 'span_corruption' if tokens[0] in span_modes else 'causal_lm' if width == 1 else 'prefix_lm'
        segments.append((len(where), objective))
      assert np.all(x['decoder_loss_weights'][len(ids):] == 0)
  return segments, filled / (batches * rows * length), largest


def test_packed_prefix_lm_features_are_consistent(mixture):
  """seqio's split of the row (inputs <= L/2, targets <= L/2): examples of at most L/2 tokens, two to a row."""
  del mixture
  length = 48
  segments, filled, largest = _packed_rows(length, 'prefix_lm')
  assert len(segments) > 150
  assert max(n for n, _ in segments) <= length // 2 and largest < length // 2
  assert filled > 0.9  # Two examples fill a row (example_length = L / 2).


def test_shared_row_examples_fill_the_row(mixture):
  """The UL2 layout ('prefix_lm_shared'): a causal-LM chunk fills the whole row, prefix-LM and span-corruption
  examples are longer than half the row (up to the row), and every position of the row is trained."""
  del mixture
  length = 48
  segments, filled, largest = _packed_rows(length, 'prefix_lm_shared')
  assert len(segments) > 60 and largest == length - 1
  longest = {objective: max(n for n, o in segments if o == objective) for objective in ul2.OBJECTIVES}
  assert longest['causal_lm'] == length  # [S] + 46 tokens + EOS.
  assert all(longest[o] > length // 2 for o in ('prefix_lm', 'span_corruption'))
  assert max(n for n, _ in segments) <= length
  lengths = {'inputs': length, 'targets': length}
  for denoiser in ul2.SALT_DENOISERS:  # The longest chunk's example fills the row up to a span's 2 sentinels.
    n = ul2.chunk_length(denoiser, lengths, num_mode_tokens=1, max_sentinels=EXTRA_IDS - 3)
    assert length - 2 <= ul2.example_total_length(denoiser, n, num_mode_tokens=1) <= length
  print(f'shared row: {filled:.3f} of the tokens are not padding')


def test_shared_row_converter_refuses_an_example_longer_than_the_row():
  ds = tf.data.Dataset.from_tensors({'inputs': tf.constant([5, 6, 7]), 'targets': tf.constant([8, 9, 1])})
  converter = pipeline.make_feature_converter('prefix_lm_shared')
  (x,) = converter(ds, {'inputs': 6, 'targets': 6}).as_numpy_iterator()
  assert x['decoder_target_tokens'].tolist() == [5, 6, 7, 8, 9, 1]
  assert x['decoder_loss_weights'].tolist() == [0, 0, 0, 1, 1, 1]
  with pytest.raises(tf.errors.InvalidArgumentError, match='longer than the shared row'):
    list(converter(ds, {'inputs': 5, 'targets': 5}).as_numpy_iterator())


def test_denoising_is_deterministic_per_seed():
  docs = _token_docs(40, 2, 120, seed=8)
  lengths = {'inputs': 32, 'targets': 32}
  a = _denoise(ul2.SPAN_CORRUPTION, docs, lengths, seed=1)
  b = _denoise(ul2.SPAN_CORRUPTION, docs, lengths, seed=1)
  c = _denoise(ul2.SPAN_CORRUPTION, docs, lengths, seed=2)
  key = lambda xs: [(x['inputs'].tolist(), x['targets'].tolist()) for x in xs]
  assert key(a) == key(b) and key(a) != key(c)


def test_chunk_length_needs_a_sentinel_for_span_corruption():
  with pytest.raises(ValueError, match='at least one sentinel'):
    ul2.chunk_length(ul2.SPAN_CORRUPTION, {'inputs': 32, 'targets': 32}, max_sentinels=0)


@pytest.mark.integration
def test_train_cli_with_ul2_gin(tmp_path):
  """The gin switch: data/ul2.gin over data/seqio.gin trains a tiny model on embedded_default_ul2."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, os.path.join(repo, 'scripts', 'train.py'), '--gin_file=base.gin',
         '--gin_file=models/tiny.gin', '--gin_file=data/seqio.gin', '--gin_file=data/ul2.gin',
         f"--gin.MODEL_DIR='{tmp_path}'", '--gin.NUM_STEPS=4', '--gin.SEQUENCE_LENGTH=32', '--gin.BATCH_SIZE=4',
         '--gin.TrainSpec.eval_every=2', '--gin.train.eval_batches=2', '--gin.OptimizerConfig.warmup_steps=1']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', XLA_FLAGS='--xla_force_host_platform_device_count=1')
  result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'finished step 4' in result.stdout
  config = (tmp_path / 'config.gin').read_text()
  assert "feature_converter = 'prefix_lm_shared'" in config and "base = %UL2_BASE" in config
