"""Tests for bliss_jax.data.local_mixture and tasks/local_files.py's register_local_mixture: a task per source, rates,
labels and the target-like share in the composition report (`compare.composition = 'local_mixture'`)."""
import json

import gin
import pytest
import seqio
from pydoc_data import topics

from bliss_jax.data import composition, local_mixture, vocabulary


@pytest.fixture(scope='module')
def vocab_path(tmp_path_factory):
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  return vocabulary.train_sentencepiece(texts, str(tmp_path_factory.mktemp('spm') / 'small.model'), 300)


@pytest.fixture
def corpus(tmp_path):
  """books/{war,peace}.txt (3 paragraphs), pubmed.jsonl (2 records), web.txt (4 lines)."""
  (tmp_path / 'books').mkdir()
  (tmp_path / 'books' / 'war.txt').write_text('the war began\nin the north\n\nand ended in the south\n')
  (tmp_path / 'books' / 'peace.txt').write_text('peace followed\n')
  with open(tmp_path / 'pubmed.jsonl', 'w') as f:
    for i in range(2):
      f.write(json.dumps({'id': f'p{i}', 'title': f'study {i}', 'abstract': 'the results were good'}) + '\n')
  (tmp_path / 'web.txt').write_text('click here\nbuy now\nfree offer\nsign up today\n')
  return tmp_path


def _gin_lines(corpus, vocab_path, **extra):
  lines = [
      "MIX = @register_local_mixture()",
      "register_local_mixture.name = 'mix'",
      f"register_local_mixture.paths = [{{'glob': '{corpus}/books/*.txt', 'format': 'blank_line', 'source': 'books'}},"
      f" {{'path': '{corpus}/pubmed.jsonl', 'format': 'jsonl', 'text_fields': ('title', 'abstract')}},"
      f" '{corpus}/web.txt']",
      "register_local_mixture.target_like = ('books', 'pubmed')",
      f"register_local_mixture.vocabulary_path = '{vocab_path}'",
      "register_local_mixture.validation_fraction = 0.0",
  ]
  return lines + [f'register_local_mixture.{k} = {v!r}' for k, v in extra.items()]


def _register(lines):
  from tasks import local_files  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    gin.parse_config(lines)
    return local_files.register_local_mixture()
  finally:
    gin.clear_config()


def _doc_ids(name, split='train'):
  ds = seqio.get_mixture_or_task(name).get_dataset({'targets': 64}, split=split, shuffle=False, num_epochs=1)
  return sorted(x['doc_id'].decode() for x in ds.as_numpy_iterator())


def test_a_task_per_source_mixed_by_size(corpus, vocab_path):
  assert _register(_gin_lines(corpus, vocab_path)) == 'mix'
  mixture = seqio.get_mixture_or_task('mix')
  assert sorted(t.name for t in mixture.tasks) == ['mix_books', 'mix_pubmed', 'mix_web']
  assert _doc_ids('mix_books') == ['books:peace:0', 'books:war:0', 'books:war:1']
  assert _doc_ids('mix_pubmed') == ['pubmed:p0', 'pubmed:p1']
  assert _doc_ids('mix_web') == ['web:0', 'web:1', 'web:2', 'web:3']
  chars = {'books': len('the war began\nin the north') + len('and ended in the south') + len('peace followed'),
           'pubmed': 2 * len('study 0\n\nthe results were good'),
           'web': len('click herebuy nowfree offersign up today')}
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == {f'mix_{s}': float(n) for s, n in chars.items()}
  record = local_mixture.registered('mix')
  assert record.sources == ('books', 'pubmed', 'web') and record.target_like == ('books', 'pubmed')


def test_given_rates_and_their_errors(corpus, vocab_path):
  _register(_gin_lines(corpus, vocab_path, rates={'books': 2.0, 'pubmed': 1.0, 'web': 0.0}))
  mixture = seqio.get_mixture_or_task('mix')
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == {'mix_books': 2.0, 'mix_pubmed': 1.0}
  assert 'mix_web' in seqio.TaskRegistry.names()  # registered, not mixed
  with pytest.raises(ValueError, match=r"unknown sources \['news'\]; no rate for \['pubmed', 'web'\]; the sources"):
    _register(_gin_lines(corpus, vocab_path, rates={'books': 1.0, 'news': 1.0}))
  with pytest.raises(ValueError, match=r"target_like \['novels'\] of mixture 'mix' are not among its sources"):
    _register(_gin_lines(corpus, vocab_path) + ["register_local_mixture.target_like = ('novels',)"])
  (corpus / 'my-notes.txt').write_text('a note\n')
  with pytest.raises(ValueError, match=r"sources \['my-notes'\] of mixture 'mix' cannot be part of a task name"):
    _register(_gin_lines(corpus, vocab_path) + [f"register_local_mixture.paths = ['{corpus}/my-notes.txt']",
                                                'register_local_mixture.target_like = ()'])


def test_the_composition_report_labels_by_source_with_the_target_like_share(corpus, vocab_path, monkeypatch):
  from bliss_jax import configurables  # pylint: disable=g-import-not-at-top
  from bliss_jax.pipelines import compare  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(compare, 'run', lambda **kw: calls.append(kw))
  gin.clear_config()
  try:
    gin.parse_config(_gin_lines(corpus, vocab_path) + [
        "compare.root = '/nonexistent'", 'compare.train_task = %MIX', "compare.composition = 'local_mixture'"])
    gin.get_configurable('compare')()
  finally:
    gin.clear_config()
  reporter = calls[0]['composition']
  keys = ['books:war:0#0', 'books:war:0#1', 'pubmed:p1#0', 'web:2#0']
  assert composition.composition(keys, reporter.labellers()) == {
      'n': 4, 'by_domain': {'books': 0.5, 'pubmed': 0.25, 'web': 0.25}, 'target_fraction': 0.75}
  report, markdown = reporter.document_report(keys, 'train')
  assert report['n_selected'] == 3 and report['n_base'] == 9 and 'by_quality' not in report
  # characters: books 26 + 22 + 14, pubmed 30 + 30, web 10 + 7 + 10 + 13; selected 26, 30 and 10
  assert report['target'] == {'selected': 56 / 66, 'base': 122 / 162, 'lift': pytest.approx((56 / 66) / (122 / 162))}
  assert 'target-like sources (books, pubmed): 84.8% of selected characters vs 75.3% of train' in markdown
  assert '| web | 1 |' in markdown
  assert reporter.document_text('web:2') == 'free offer'
  with pytest.raises(ValueError, match="the stream 'embedded_default' is not one"):
    configurables.selection_reporter('local_mixture', 'embedded_default')
