"""The embedded mixture: every document labelled, held-out prose disjoint from everything trained on, corrupted
copies deterministic, a Python without licence or test files still served; its SeqIO tasks and reporter."""
import hashlib
import random

import pytest

from bliss_jax.data import embedded_mixture as em
from bliss_jax.data.benchmark import corruptions

TRAINED_ON = ('train', 'validation', 'reference')


@pytest.fixture(scope='module')
def docs():
  return em.embedded_mixture_documents()


def test_every_document_is_labelled_and_split(docs):
  ids = [d.doc_id for d in docs]
  assert len(set(ids)) == len(ids)
  qualities = {em.CLEAN, *(f'synthetic_{k}' for k in em.SYNTHETIC_KINDS)}
  for d in docs:
    assert d.domain in em.DOMAINS and d.quality in qualities and d.split in em.SPLITS, d.catalog_entry()
    assert d.text.strip() and d.doc_id.startswith(f'{d.domain}:' if d.quality == em.CLEAN else f'{d.quality}:')
    assert d.target == (d.domain == em.DOCS and d.quality == em.CLEAN)
  present = {(d.domain, d.quality) for d in docs}
  assert {(em.DOCS, em.CLEAN), (em.CODE, em.CLEAN), (em.LICENCE, em.CLEAN)} <= present
  assert {(em.DOCS, f'synthetic_{k}') for k in em.SYNTHETIC_KINDS} <= present
  train = [d for d in docs if d.split == 'train']
  assert 0.3 < sum(len(d.text) for d in train if d.target) / sum(len(d.text) for d in train) < 0.7
  catalog = em.catalog()
  assert [e['doc_id'] for e in catalog] == ids and set(catalog[0]) >= {'domain', 'quality', 'target', 'split'}


def test_reference_and_heldout_are_clean_prose_and_heldout_is_never_trained_on(docs):
  heldout = [d for d in docs if d.split == 'heldout']
  reference = [d for d in docs if d.split == 'reference']
  assert len(heldout) > 100 and len(reference) > 100
  assert all(d.target for d in heldout + reference)
  trained = [d for d in docs if d.split in TRAINED_ON]
  # whole sources (pydoc topics, standard-library files) are held out: none of their text, code or copies is elsewhere
  assert not {d.source for d in heldout} & {d.source for d in trained}
  assert not {d.doc_id for d in heldout} & {d.origin for d in trained}
  everything_trained = '\x00'.join(d.text for d in trained)
  assert not [d.doc_id for d in heldout if d.text in everything_trained]
  # the reference set's files are not in the stream either
  assert not {d.source for d in reference} & {d.source for d in docs if d.split in ('train', 'validation')}


def test_corrupted_copies_are_deterministic_and_made_from_stream_documents(docs):
  by_id = {d.doc_id: d for d in docs}
  copies = [d for d in docs if d.quality != em.CLEAN]
  assert len(copies) > 100
  for d in copies[:50]:
    original = by_id[d.origin]
    kind = d.quality[len('synthetic_'):]
    assert original.split == d.split and original.split in ('train', 'validation') and original.target
    seed = int.from_bytes(hashlib.sha256(f'0:{kind}:{original.doc_id}'.encode()).digest()[:8], 'big')
    assert d.text == corruptions.SYNTHETIC_FUNCTIONS[kind](original.text, random.Random(seed))
    assert d.text != original.text or kind == 'repeated_lines'
  again = em.make_documents(em.EmbeddedMixtureConfig())  # not the cached tuple
  assert [(d.doc_id, d.text, d.split) for d in again] == [(d.doc_id, d.text, d.split) for d in docs]
  other = em.make_documents(em.EmbeddedMixtureConfig(seed=1))
  assert {d.doc_id for d in other if d.split == 'heldout'} != {d.doc_id for d in docs if d.split == 'heldout'}


def _fake_stdlib(tmp_path, with_extras):
  lib = tmp_path / 'lib'
  lib.mkdir()
  long_doc = 'The function returns the value of the thing it was given. ' * 5
  for i in range(40):
    (lib / f'mod{i}.py').write_text(f'def f{i}(x):\n  """{long_doc}"""\n  return x\n\n\ndef g(y):\n  return y + {i}\n')
  if with_extras:
    (lib / 'LICENSE.txt').write_text('A. HISTORY OF THE SOFTWARE\n\nPython was created.\n\nB. TERMS\n\nUse it.\n')
    (lib / 'test' / 'data').mkdir(parents=True)
    (lib / 'test' / 'data' / 'msg.txt').write_text('From: a@b.c\nSubject: hi\n\nHello.\n')
    (lib / 'test' / 'data' / 'blob.txt').write_bytes(b'\x00\x01binary')
  return str(lib)


@pytest.mark.parametrize('with_extras', [True, False])
def test_a_python_without_licence_or_test_files_still_gives_a_mixture(tmp_path, with_extras):
  config = em.EmbeddedMixtureConfig(stdlib_dir=_fake_stdlib(tmp_path, with_extras), synthetic_fraction=1.0)
  docs = em.make_documents(config)
  domains = {d.domain for d in docs}
  assert {em.DOCS, em.CODE} <= domains
  assert (em.TEST_DATA in domains) == with_extras
  licence = [d.doc_id for d in docs if d.domain == em.LICENCE]
  assert any(i.startswith('licence:LICENSE.txt:') for i in licence) == with_extras
  assert [d.doc_id for d in docs if d.domain == em.TEST_DATA] == (
      ['test_data:test/data/msg.txt:0'] if with_extras else [])  # binary files are skipped
  code = [d for d in docs if d.domain == em.CODE]
  assert code and all(em.docs_split(d.source, config) in ('train', 'validation') for d in code)
  assert all(d.quality != em.CLEAN for d in docs if d.doc_id.startswith('synthetic_'))
  assert len([d for d in docs if d.quality != em.CLEAN]) == len(
      [d for d in docs if d.target and d.split in ('train', 'validation')])


def test_code_and_test_data_are_capped(tmp_path):
  lib = _fake_stdlib(tmp_path, True)
  full = [d for d in em.make_documents(em.EmbeddedMixtureConfig(stdlib_dir=lib)) if d.domain == em.CODE]
  capped = [d for d in em.make_documents(em.EmbeddedMixtureConfig(stdlib_dir=lib, code_chars=1)) if d.domain == em.CODE]
  assert len(capped) == 1 and len(full) > 10 and capped[0].doc_id in {d.doc_id for d in full}


def test_tasks_serve_the_splits_with_labels(tmp_path):
  import seqio  # pylint: disable=import-outside-toplevel
  from bliss_jax.data import vocabulary  # pylint: disable=import-outside-toplevel
  config = em.EmbeddedMixtureConfig(stdlib_dir=_fake_stdlib(tmp_path, True))
  mixture, reference = em.register_embedded_mixture_tasks('emb_test', config, vocabulary.default_vocabulary())
  docs = em.make_documents(config)

  def served(task, split):
    ds = seqio.get_mixture_or_task(task).get_dataset({'targets': 32}, split=split, shuffle=False)
    return [(x['doc_id'].decode(), x['domain'].decode(), x['quality'].decode()) for x in ds.as_numpy_iterator()]
  for task, split, doc_split in ((mixture, 'train', 'train'), (mixture, 'validation', 'validation'),
                                 (reference, 'train', 'reference'), (reference, 'validation', 'heldout')):
    got = served(task, split)
    want = {(d.doc_id, d.domain, d.quality) for d in docs if d.split == doc_split}
    assert sorted(set(got)) == sorted(want), (task, split)


def test_selection_reporter_labels_and_texts(docs):
  reporter = em.selection_reporter()
  labels = reporter.labellers()
  doc = next(d for d in docs if d.quality == 'synthetic_char_noise')
  assert (labels['domain'](doc.doc_id), labels['quality'](doc.doc_id), labels['target'](doc.doc_id)) == (
      'docs', 'synthetic_char_noise', 'no')
  assert reporter.document_text(doc.doc_id) == doc.text and reporter.document_text('nope') is None
  keys = [f'{d.doc_id}#0' for d in docs if d.split == 'train'][:20]
  report, markdown = reporter.document_report(keys, 'train')
  assert report['n_selected'] == 20 and 'target-like' in markdown
