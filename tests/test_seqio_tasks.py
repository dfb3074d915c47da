"""Tests for bliss_jax.data.seqio_tasks, tasks/ and tasks/local_files.py."""
import collections

import gin
import pytest
import seqio
import tensorflow as tf
from pydoc_data import topics

from bliss_jax import cache_dir
from bliss_jax.data import seqio_tasks
from bliss_jax.data import vocabulary


@pytest.fixture(scope='session')
def small_vocab(tmp_path_factory):
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  path = vocabulary.train_sentencepiece(texts, str(tmp_path_factory.mktemp('spm') / 'small.model'), 300)
  return vocabulary.load_vocabulary(path)


def _documents(n=40):
  """n documents with distinct ids, of 1 to ~60 words."""
  words = 'the statement of a value is assigned to each name in the list when the loop ends'.split()
  return [(f'toy:{i}', ' '.join(words[(i + j) % len(words)] for j in range(1 + (7 * i) % 60)))
          for i in range(n)]


def test_split_of_is_a_deterministic_hash_split():
  ids = [f'doc:{i}' for i in range(20_000)]
  splits = [seqio_tasks.split_of(i, 0.05) for i in ids]
  assert splits == [seqio_tasks.split_of(i, 0.05) for i in ids]
  assert 0.045 < splits.count('validation') / len(ids) < 0.055
  assert {seqio_tasks.split_of(i, 0.0) for i in ids[:100]} == {'train'}
  assert {seqio_tasks.split_of(i, 1.0) for i in ids[:100]} == {'validation'}
  # A larger fraction only moves documents from train to validation.
  assert all(seqio_tasks.split_of(i, 0.2) == 'validation' for i, s in zip(ids, splits) if s == 'validation')


def _source_docs(source, split, **kwargs):
  ds = source.get_dataset(split=split, **kwargs)
  return [(x['doc_id'].decode(), x['text'].decode()) for x in ds.as_numpy_iterator()]


def test_document_source_splits_are_disjoint_and_complete():
  docs = _documents(200)
  source = seqio_tasks.document_source(lambda: docs, validation_fraction=0.2)
  assert tuple(source.splits) == ('train', 'validation')
  train = _source_docs(source, 'train', shuffle=False)
  validation = _source_docs(source, 'validation', shuffle=False)
  assert not {i for i, _ in train} & {i for i, _ in validation}
  assert sorted(train + validation) == sorted(docs)
  assert train == [d for d in docs if d in train]  # Original order kept.
  assert 20 < len(validation) < 60
  shuffled = _source_docs(source, 'train', shuffle=True, seed=3)
  assert shuffled == _source_docs(source, 'train', shuffle=True, seed=3)
  assert shuffled != train and sorted(shuffled) == sorted(train)


def _ragged_dataset(token_lists, doc_ids):
  return tf.data.Dataset.from_tensor_slices({
      'targets': tf.ragged.constant(token_lists, dtype=tf.int32), 'doc_id': doc_ids}).map(dict)


def test_split_tokens_reconstructs_documents_exactly():
  token_lists = [list(range(3, 13)), [7], [], list(range(20, 27))]
  ds = seqio_tasks.split_tokens(_ragged_dataset(token_lists, ['a', 'b', 'c', 'd']), {'targets': 4})
  assert ds.element_spec['targets'] == tf.TensorSpec([None], tf.int32)
  examples = list(ds.as_numpy_iterator())
  assert [(x['doc_id'], int(x['chunk_index']), x['targets'].tolist()) for x in examples] == [
      (b'a', 0, [3, 4, 5]), (b'a', 1, [6, 7, 8]), (b'a', 2, [9, 10, 11]), (b'a', 3, [12]),
      (b'b', 0, [7]),
      (b'd', 0, [20, 21, 22]), (b'd', 1, [23, 24, 25]), (b'd', 2, [26])]
  # Each chunk's token offsets in its document.
  assert [(int(x['chunk_start']), int(x['chunk_end'])) for x in examples] == [
      (0, 3), (3, 6), (6, 9), (9, 10), (0, 1), (0, 3), (3, 6), (6, 7)]
  whole = seqio_tasks.split_tokens(_ragged_dataset(token_lists, ['a', 'b', 'c', 'd']), None)
  assert [x['targets'].tolist() for x in whole.as_numpy_iterator()] == [t for t in token_lists if t]


def test_split_prefix_cuts_within_bounds():
  tokens = [list(range(3, 3 + n)) for n in (1, 2, 5, 11, 15)]
  ds = _ragged_dataset(tokens, [str(n) for n in range(5)])
  with seqio.utils.map_seed_manager(7):
    out = list(seqio_tasks.split_prefix(ds, sequence_length={'inputs': 8, 'targets': 8}).as_numpy_iterator())
  for original, x in zip(tokens, out):
    inputs, targets = x['inputs'].tolist(), x['targets'].tolist()
    assert inputs + targets == original
    assert len(inputs) <= 8 and len(targets) <= 7 and len(targets) >= 1
    assert len(inputs) >= 1 or len(original) == 1
  assert [len(x['inputs']) for x in out][-1] == 8  # 15 tokens: the only fitting cut is 8 + 7.
  with seqio.utils.map_seed_manager(7):
    unbounded = list(seqio_tasks.split_prefix(ds).as_numpy_iterator())
  assert all(x['inputs'].tolist() + x['targets'].tolist() == t for t, x in zip(tokens, unbounded))
  assert all(len(x['targets']) >= 1 and (len(x['inputs']) >= 1 or len(t) == 1) for t, x in zip(tokens, unbounded))


def _examples(task_name, split, length, objective='lm'):
  lengths = {'targets': length} if objective == 'lm' else {'inputs': length, 'targets': length}
  ds = seqio.get_mixture_or_task(task_name).get_dataset(lengths, split=split, shuffle=False)
  return list(ds.as_numpy_iterator())


def test_document_task_chunks_and_eos(small_vocab):
  docs = _documents()
  seqio_tasks.register_document_task('toy_lm', lambda: docs, small_vocab, validation_fraction=0.25)
  length = 16
  chunks = collections.defaultdict(list)
  for split in ('train', 'validation'):
    for x in _examples('toy_lm', split, length):
      assert x['targets'][-1] == 1 and 2 <= len(x['targets']) <= length and 1 not in x['targets'][:-1]
      chunks[x['doc_id'].decode()].append((int(x['chunk_index']), x['targets'][:-1].tolist()))
  assert sorted(chunks) == sorted(i for i, _ in docs)
  for doc_id, text in docs:
    parts = [tokens for _, tokens in sorted(chunks[doc_id])]
    assert [i for i, _ in sorted(chunks[doc_id])] == list(range(len(parts)))
    assert sum(parts, []) == small_vocab.encode(text)
    assert all(len(p) == length - 1 for p in parts[:-1])


def test_prefix_lm_task(small_vocab):
  docs = _documents()
  seqio_tasks.register_document_task('toy_prefix', lambda: docs, small_vocab, objective='prefix_lm')
  texts = dict(docs)
  by_doc = collections.defaultdict(list)
  for x in _examples('toy_prefix', 'train', 8, objective='prefix_lm'):
    assert len(x['inputs']) <= 8 and len(x['targets']) <= 8 and x['targets'][-1] == 1
    by_doc[x['doc_id'].decode()].append((int(x['chunk_index']), x['inputs'].tolist() + x['targets'][:-1].tolist()))
  for doc_id, parts in by_doc.items():
    assert sum([p for _, p in sorted(parts)], []) == small_vocab.encode(texts[doc_id])


def test_registration_is_idempotent(small_vocab):
  docs = _documents(10)
  first = seqio_tasks.register_document_task('toy_again', lambda: docs, small_vocab)
  second = seqio_tasks.register_document_task('toy_again', lambda: docs[:3], small_vocab)
  assert seqio.get_mixture_or_task('toy_again') is second is not first
  assert {x['doc_id'] for x in _examples('toy_again', 'train', 64)} <= {b'toy:0', b'toy:1', b'toy:2'}
  mixture = seqio_tasks.register_mixture('toy_mix', [('toy_again', 1.0), ('toy_lm', 2.0)])
  assert seqio_tasks.register_mixture('toy_mix', [('toy_again', 1.0), ('toy_lm', 2.0)]) is not mixture


def test_c4_task_registers_without_reading_data(small_vocab):
  task = seqio_tasks.register_tfds_c4_task('c4_test', vocabulary=small_vocab, tfds_data_dir='/nonexistent')
  assert isinstance(task.source, seqio.TfdsDataSource)
  assert task.source.tfds_dataset.name == 'c4/en:3.1.0'
  assert sorted(task.source.splits) == ['train', 'validation']
  assert list(task.output_features) == ['targets']
  seqio_tasks.register_tfds_c4_task('c4_test', vocabulary=small_vocab)  # Idempotent too.


def test_tasks_package_registers_default_tasks(tmp_path_factory, monkeypatch):
  cache = tmp_path_factory.getbasetemp() / 'bliss_jax_cache'  # Shared with test_vocabulary.
  monkeypatch.setenv(cache_dir.CACHE_ENV_VAR, str(cache))
  import tasks  # pylint: disable=g-import-not-at-top
  for name in (tasks.EMBEDDED_DEFAULT, tasks.EMBEDDED_DEFAULT_PREFIX_LM, tasks.C4_EN):
    assert name in seqio.TaskRegistry.names()
  assert gin.get_configurable('register_local_files_task')
  task = seqio.get_mixture_or_task(tasks.EMBEDDED_DEFAULT)
  assert task.output_features['targets'].vocabulary.vocab_size == 2048 + 100
  first = next(iter(task.get_dataset({'targets': 64}, split='validation', shuffle=False)))
  assert first['doc_id'].numpy().decode().startswith('pydoc:')
  assert 2 <= len(first['targets']) <= 64 and first['targets'][-1] == 1
  assert isinstance(seqio.get_mixture_or_task(tasks.C4_EN).source, seqio.TfdsDataSource)


def _register_from_gin(bindings, vocab) -> str:
  """``register_local_files_task()`` under the gin ``bindings`` (lines), in ``vocab``, nothing held out."""
  from tasks import local_files  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    gin.parse_config(list(bindings) + [
        f"register_local_files_task.vocabulary_path = '{vocab.sentencepiece_model_file}'",
        'register_local_files_task.validation_fraction = 0.0'])
    return local_files.register_local_files_task()
  finally:
    gin.clear_config()


def test_local_files_task_from_gin(tmp_path, small_vocab):
  from tasks import local_files  # pylint: disable=g-import-not-at-top
  (tmp_path / 'a.txt').write_text('first line document\nsecond line document\n')
  (tmp_path / 'b.jsonl').write_text('{"q": "two plus two", "a": "is four"}\n')
  assert _register_from_gin([
      "register_local_files_task.name = 'toy_local'",
      f"register_local_files_task.paths = ['{tmp_path / 'b.jsonl'}']",
      "register_local_files_task.format = 'jsonl'",
      "register_local_files_task.text_fields = ('q', 'a')",
  ], small_vocab) == 'toy_local'
  (example,) = _examples('toy_local', 'train', 64)
  assert example['doc_id'] == b'b:0'
  assert small_vocab.decode(example['targets'][:-1].tolist()) == 'two plus two is four'
  local_files.register_local_files_task(
      'toy_local_text', [str(tmp_path / 'a.txt')], vocabulary_path=small_vocab.sentencepiece_model_file,
      validation_fraction=0.0)
  assert [x['doc_id'] for x in _examples('toy_local_text', 'train', 64)] == [b'a:0', b'a:1']
  with pytest.raises(FileNotFoundError, match='missing.txt'):
    local_files.register_local_files_task('toy_missing', [str(tmp_path / 'missing.txt')])
  assert 'toy_missing' not in seqio.TaskRegistry.names()
  (tmp_path / 'empty.txt').write_text('\n  \n')
  with pytest.raises(ValueError, match=r"empty\.txt: no documents in it .*'toy_empty'"):
    local_files.register_local_files_task('toy_empty', [str(tmp_path / 'a.txt'), str(tmp_path / 'empty.txt')])
  assert 'toy_empty' not in seqio.TaskRegistry.names()


def test_continuation_task_puts_loss_on_the_continuation_and_keeps_the_context_end(small_vocab):
  """LAMBADA-style items: with the prefix-LM converter only the continuation's tokens carry loss, and a context
  longer than the inputs budget loses its START (the words next to the continuation stay)."""
  from bliss_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  words = ' '.join(f'w{i}' for i in range(200))
  items = [(f'c:{i}', f'{words} the answer is', ' module') for i in range(6)]
  seqio_tasks.register_continuation_task('continuation_fixture', lambda: items, small_vocab, validation_fraction=0.0)
  ds = pipeline.get_dataset('continuation_fixture', 'train', 64, 6, shuffle=False, seed=0, pack=False,
                            repeat=False, feature_converter='prefix_lm')
  b = next(ds.as_numpy_iterator())
  for i in range(6):
    w, t = b['decoder_loss_weights'][i], b['decoder_target_tokens'][i]
    assert small_vocab.decode(t[w > 0].tolist()) == 'module'
    assert w.sum() == len(small_vocab.encode(' module'))
    context = small_vocab.decode(t[:w.argmax()].tolist())
    assert context.endswith('the answer is') and not context.startswith('w0 ')
    assert b['decoder_causal_attention'][i][:w.argmax()].all()  # the context is the bidirectional prefix


def _docstring_gin(module) -> str:
  """The indented gin block after the first ``::`` of a module's docstring."""
  block = module.__doc__.split('::\n', 1)[1].lstrip('\n').split('\n\n', 1)[0]
  assert all(line.startswith('  ') for line in block.splitlines())
  return '\n'.join(line[2:] for line in block.splitlines())


def test_local_files_docstring_example_registers_as_written(tmp_path, small_vocab):
  """The module docstring's gin lines, with its /data/ files made here, parse and register the task they describe."""
  import gzip  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from tasks import local_files  # pylint: disable=g-import-not-at-top
  (tmp_path / 'books').mkdir()
  (tmp_path / 'books' / 'war.txt').write_text('para one\nline two\n\npara two\n')
  (tmp_path / 'books' / 'peace.txt').write_text('a paragraph\n')
  with gzip.open(tmp_path / 'pubmed.jsonl.gz', 'wt') as f:
    f.write(json.dumps({'title': 'T', 'abstract': 'A.'}) + '\n')
  (tmp_path / 'web.txt').write_text('web page\n')
  text = _docstring_gin(local_files).replace("'/data/", f"'{tmp_path}/")
  assert "TASK = @register_local_files_task()" in text.splitlines()
  assert _register_from_gin(text.splitlines(), small_vocab) == 'my_corpus'
  ids = sorted(x['doc_id'].decode() for x in _examples('my_corpus', 'train', 64))
  assert ids == ['books:peace:0', 'books:war:0', 'books:war:1', 'pubmed:0', 'web:0']


def test_local_files_task_with_per_file_entries_from_gin(tmp_path, small_vocab):
  from tasks import local_files  # pylint: disable=g-import-not-at-top
  (tmp_path / 'a.txt').write_text('p one\np one b\n\np two\n')
  (tmp_path / 'b.jsonl').write_text('{"q": "two plus two", "a": "is four"}\n')
  assert _register_from_gin([
      "register_local_files_task.name = 'toy_entries'",
      f"register_local_files_task.paths = [{{'path': '{tmp_path / 'a.txt'}', 'format': 'blank_line'}}, "
      f"{{'glob': '{tmp_path}/*.jsonl', 'format': 'jsonl', 'text_fields': ('q', 'a'), 'source': 'qa'}}]",
  ], small_vocab) == 'toy_entries'
  texts = {x['doc_id'].decode(): small_vocab.decode(x['targets'][:-1].tolist())
           for x in _examples('toy_entries', 'train', 64)}
  assert texts == {'a:0': 'p one p one b', 'a:1': 'p two', 'qa:0': 'two plus two is four'}
  with pytest.raises(FileNotFoundError, match=r"glob '.*\*\.csv' matches no file"):
    local_files.register_local_files_task('toy_glob', [{'glob': str(tmp_path / '*.csv')}])
  with pytest.raises(ValueError, match=r"no field 'text' \(its fields: q, a\): bind .*text_fields = \('q', 'a'\)"):
    local_files.register_local_files_task('toy_fields', [str(tmp_path / 'b.jsonl')], format='jsonl')
  assert list(local_files.read_documents([{'path': str(tmp_path / 'a.txt'), 'source': 'x'}])) == [
      ('x:0', 'p one'), ('x:1', 'p one b'), ('x:2', 'p two')]
