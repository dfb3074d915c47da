"""Tests for bliss_jax.data.vocabulary."""
import os

import pytest
from pydoc_data import topics

from bliss_jax import cache_dir
from bliss_jax.data import vocabulary


def _texts():
  """About 54 kB of English: the first 20 pydoc topics."""
  return [text for _, text in sorted(topics.topics.items())][:20]


@pytest.fixture(scope='session')
def small_model(tmp_path_factory):
  return vocabulary.train_sentencepiece(_texts(), str(tmp_path_factory.mktemp('spm') / 'small.model'), 300)


def test_t5_conventions_and_sentinels(small_model):
  vocab = vocabulary.load_vocabulary(small_model)
  sp = vocab.tokenizer
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id, sp.bos_id()) == (0, 1, 2, -1)
  assert [sp.id_to_piece(i) for i in range(3)] == ['<pad>', '</s>', '<unk>']
  assert vocab.vocab_size == 300 + 100
  assert vocab.encode('<extra_id_0>')[0] == 399 and vocab.encode('<extra_id_99>')[0] == 300
  assert vocabulary.load_vocabulary(small_model, extra_ids=0).vocab_size == 300
  text = 'The assert statement is a convenient way to insert debugging assertions.'
  ids = vocab.encode(text)
  assert all(2 < i < 300 for i in ids) and vocab.decode(ids) == text


def test_training_is_deterministic_and_atomic(small_model, tmp_path):
  (tmp_path / 'sub').mkdir()
  out = tmp_path / 'sub' / 'again.model'
  out.write_bytes(b'stale')  # Replaced, not appended to.
  assert vocabulary.train_sentencepiece(iter(_texts()), str(out), 300) == str(out)
  with open(small_model, 'rb') as a, open(out, 'rb') as b:
    assert a.read() == b.read()
  assert os.listdir(out.parent) == ['again.model']  # No temporary file left behind.


def test_long_lines_are_cut_not_dropped(tmp_path):
  # SentencePiece drops sentences over max_sentence_length bytes; one 10 kB line would leave no data at all.
  line = ' '.join(' '.join(_texts()).split())
  assert len(line.encode()) > 50_000
  path = vocabulary.train_sentencepiece([line], str(tmp_path / 'long.model'), 120)
  assert vocabulary.load_vocabulary(path, extra_ids=0).vocab_size == 120


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='missing.model'):
    vocabulary.load_vocabulary(str(tmp_path / 'missing.model'))
  # SentencePiece's own defaults (unk=0, bos=1, eos=2, no pad) are not T5's.
  path = vocabulary.train_sentencepiece(
      _texts(), str(tmp_path / 'spm_defaults.model'), 300, pad_id=-1, unk_id=0, bos_id=1, eos_id=2)
  with pytest.raises(ValueError, match='T5 conventions'):
    vocabulary.load_vocabulary(path)
  data = open(path, 'rb').read()
  for name, content in (('truncated', data[:len(data) // 2]), ('empty', b''), ('text', b'not a model\n' * 40)):
    bad = tmp_path / f'{name}.model'
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=rf'{name}\.model: not a SentencePiece model'):
      vocabulary.load_vocabulary(str(bad))


def test_a_corrupt_cached_default_vocabulary_is_trained_again(tmp_path_factory, monkeypatch, caplog):
  cache = tmp_path_factory.getbasetemp() / 'bliss_jax_cache'  # Shared with test_seqio_tasks.
  monkeypatch.setenv(cache_dir.CACHE_ENV_VAR, str(cache))
  path = vocabulary.default_vocabulary_path()
  good = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(good[:1000])
  assert vocabulary.default_vocabulary_path() == path
  assert open(path, 'rb').read() == good  # the same model: training it is deterministic
  assert 'cached default vocabulary is unreadable' in caplog.text


def test_default_vocabulary_is_trained_once_and_cached(tmp_path_factory, monkeypatch):
  cache = tmp_path_factory.getbasetemp() / 'bliss_jax_cache'  # Shared with test_seqio_tasks.
  monkeypatch.setenv(cache_dir.CACHE_ENV_VAR, str(cache))
  path = vocabulary.default_vocabulary_path()
  assert os.path.dirname(path) == str(cache)
  assert os.path.basename(path).startswith(f'embedded_spm{vocabulary.DEFAULT_VOCAB_SIZE}_')
  mtime = os.stat(path).st_mtime_ns
  vocab = vocabulary.default_vocabulary()
  assert vocab.sentencepiece_model_file == path and os.stat(path).st_mtime_ns == mtime
  assert vocab.vocab_size == vocabulary.DEFAULT_VOCAB_SIZE + vocabulary.DEFAULT_EXTRA_IDS
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  text = 'Return a new list containing all items from the iterable in ascending order.'
  ids = vocab.encode(text)
  assert vocab.decode(ids) == text and len(ids) < len(text) / 3
  assert sorted(os.listdir(cache)) == [os.path.basename(path)]
