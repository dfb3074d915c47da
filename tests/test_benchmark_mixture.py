"""Tests for bliss_jax.data.benchmark, bliss_jax.data.data_dir, tasks/benchmark.py and scripts/selection_report.py.

Tests that read ../shared/data take the ``shared_data`` fixture (they skip without it). Fractions that come from
hashing document ids are binomial: a fraction p over n documents is checked to 4.5 standard errors,
4.5 sqrt(p (1 - p) / n) (a two-sided normal tail of 7e-6; the hashes are fixed, so the checks are deterministic).
"""
import ast
import collections
import importlib.util
import json
import math
import os
import pathlib
import random
import subprocess
import sys

import pytest

from bliss_jax.data import composition
from bliss_jax.data import data_dir as data_dir_lib
from bliss_jax.data.benchmark import catalog as catalog_lib
from bliss_jax.data.benchmark import corruptions, cutters, documents
from bliss_jax.data.benchmark import mixture as mixture_lib
from bliss_jax.data.benchmark import reports

REPO = pathlib.Path(__file__).resolve().parents[1]
Z = 4.5


# ------------------------------------------------------------------------------------------------------------
# Cutting files into documents (no data needed).


def test_merge_units_keeps_units_whole_and_in_order():
  units = ['a' * 5, '', 'b' * 3, 'c' * 10, 'd' * 2, 'e']
  texts = cutters.merge_units(units, min_chars=8, joiner='|')
  assert texts == ['aaaaa|bbb', 'cccccccccc', 'dd|e']
  assert cutters.merge_units([], 5) == []


def test_wikitext_articles_split_at_top_level_titles():
  text = ' \n = First = \n \n Body one . \n \n = = Section = = \n Body two . \n = Second = \n Body three . \n'
  assert cutters.wikitext_articles(text) == [' = First = \n Body one . \n = = Section = = \n Body two . ',
                                        ' = Second = \n Body three . ']


def test_tinystories_documents_start_at_once_upon_a_time():
  text = 'tail of a story.\n\nOnce upon a time, A.\n\nThen B.\n\nOnce upon a time, C.\n'
  assert cutters.tinystories_documents(text) == ['tail of a story.', 'Once upon a time, A.\n\nThen B.',
                                            'Once upon a time, C.']


def test_c_blocks_end_at_column_zero_braces():
  text = ('#include <x.h>\n\nint f(void)\n{\n\tif (x) {\n\t}\n\treturn 0;\n}\n\n'
          'static struct s = {\n\t1,\n};\n/* end */\n')
  assert cutters.c_blocks(text) == ['#include <x.h>\n\nint f(void)\n{\n\tif (x) {\n\t}\n\treturn 0;\n}',
                               'static struct s = {\n\t1,\n};', '/* end */']


def test_group_lines_and_normalize():
  assert cutters.group_lines(['a', ' ', 'b', 'c', 'd'], 2) == ['a b', 'c d']
  assert cutters.group_lines(['你', '好', '吗'], 2, '') == ['你好', '吗']
  assert cutters.normalize_text('\ufeffa\r\nb\rc') == 'a\nb\nc'


# ------------------------------------------------------------------------------------------------------------
# Synthetic variants.

TEXT = ('The quick brown fox jumps over the lazy dog. It was not amused.\n'
        'A second line follows here, with more words in it.\n'
        'And a third line closes the little document.')


@pytest.mark.parametrize('kind', corruptions.SYNTHETIC_KINDS)
def test_synthetic_variants_are_pure_functions_of_text_and_seed(kind):
  fn = corruptions.SYNTHETIC_FUNCTIONS[kind]
  a = fn(TEXT, random.Random(1))
  assert a == fn(TEXT, random.Random(1))
  assert a != TEXT and a != fn(TEXT, random.Random(2))


def test_synthetic_variant_properties():
  shuffled = corruptions.shuffle_words(TEXT, random.Random(0))
  assert [sorted(l.split()) for l in shuffled.split('\n')] == [sorted(l.split()) for l in TEXT.split('\n')]
  assert corruptions.char_noise(TEXT, random.Random(0), rate=0.0) == TEXT
  noisy = corruptions.char_noise(TEXT * 20, random.Random(0), rate=0.15)
  # Each of the m non-space characters is hit with p = 0.15; a hit changes the length by -1 (p 1/4), +1 (1/4)
  # or 0, so the length change has mean 0 and variance 0.15 * 0.5 * m: 4.5 standard errors.
  m = sum(not c.isspace() for c in TEXT * 20)
  assert abs(len(noisy) - len(TEXT * 20)) <= Z * math.sqrt(0.075 * m)
  spam = corruptions.repeat_lines(TEXT, random.Random(0))
  lines = spam.split('\n')
  assert len(set(lines)) <= 3 and set(lines) <= set(TEXT.split('\n')) and len(spam) >= len(TEXT)
  fragments = corruptions.truncate_fragments(TEXT * 10, random.Random(0))
  assert len(fragments) < len(TEXT * 10) and fragments[:20] in TEXT * 10


# ------------------------------------------------------------------------------------------------------------
# Reports (no data needed).


def _entry(doc_id, domain, quality, split, n_chars):
  return {'doc_id': doc_id, 'domain': domain, 'quality': quality, 'split': split, 'n_chars': n_chars,
          'target': documents.is_target(domain, quality)}


SMALL_CATALOG = [
    _entry('a', 'books', 'clean', 'pool', 100),
    _entry('b', 'books', 'synthetic_char_noise', 'pool', 100),
    _entry('c', 'web', 'raw', 'pool', 200),
    _entry('d', 'math', 'clean', 'pool', 600),
    _entry('e', 'math', 'clean', 'train', 50),
]


def test_selection_report_by_hand():
  report = reports.selection_report(['a', 'd', 'd', 'e', 'zzz'], SMALL_CATALOG)
  assert report['n_selected'] == 3 and report['n_duplicates'] == 1 and report['unknown_ids'] == ['zzz']
  assert report['selected_splits'] == {'pool': 2, 'train': 1} and report['n_base'] == 4
  # Selected: 750 chars, all target. Pool: 1000 chars, 700 target.
  assert report['target'] == {'selected': 1.0, 'base': 0.7, 'lift': pytest.approx(1 / 0.7)}
  math_row = report['by_domain']['math']
  assert math_row['selected'] == {'docs': 2, 'doc_fraction': 2 / 3, 'chars': 650, 'char_fraction': 650 / 750}
  assert math_row['base'] == {'docs': 1, 'doc_fraction': 0.25, 'chars': 600, 'char_fraction': 0.6}
  assert math_row['lift'] == pytest.approx((650 / 750) / 0.6)
  assert report['by_domain']['web']['selected']['docs'] == 0 and report['by_domain']['web']['lift'] == 0.0
  assert report['by_quality']['raw']['base']['char_fraction'] == 0.2
  text = reports.format_selection_report(report)
  assert '| math | 2 | 66.7 | 86.7 | 25.0 | 60.0 | 1.44 |' in text
  assert 'unknown ids (first 1): zzz' in text
  whole = reports.selection_report([], SMALL_CATALOG, base_split=None)
  assert whole['n_base'] == 5 and whole['target'] == {'selected': None, 'base': 750 / 1050, 'lift': None}
  assert 'target-like clean English: - of selected' in reports.format_selection_report(whole)


def test_read_ids_accepts_lines_and_json(tmp_path):
  (tmp_path / 'ids.txt').write_text('a\n\n b \nc\n')
  (tmp_path / 'ids.json').write_text(json.dumps(['x', 'y']))
  assert catalog_lib.read_ids(str(tmp_path / 'ids.txt')) == ['a', 'b', 'c']
  assert catalog_lib.read_ids(str(tmp_path / 'ids.json')) == ['x', 'y']


def test_missing_data_dir_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv(data_dir_lib.DATA_DIR_ENV_VAR, str(tmp_path / 'nowhere'))
  assert not data_dir_lib.data_dir_available()
  with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere' / 'corpus'}.*BLISS_JAX_DATA_DIR"):
    data_dir_lib.resolve_data_dir()
  (tmp_path / 'elsewhere' / 'corpus').mkdir(parents=True)
  assert data_dir_lib.resolve_data_dir(str(tmp_path / 'elsewhere')) == str(tmp_path / 'elsewhere')  # The argument wins.
  with pytest.raises(FileNotFoundError, match='wikitext2_valid.txt'):  # A corpus/ without the files.
    documents.make_documents(documents.BenchmarkConfig(data_dir=str(tmp_path / 'elsewhere')))


@pytest.mark.integration
def test_importing_tasks_without_the_data_registers_no_benchmark(tmp_path):
  code = ('import seqio, tasks; names = seqio.MixtureRegistry.names(); '
          'assert "benchmark" not in names and "embedded_default_ul2" in names, names; print("ok")')
  env = {**os.environ, data_dir_lib.DATA_DIR_ENV_VAR: str(tmp_path / 'nowhere'), 'TF_CPP_MIN_LOG_LEVEL': '3',
         'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0 and result.stdout.strip().endswith('ok'), result.stderr[-2000:]


def test_gin_file_rates_are_the_default_rates():
  text = (REPO / 'gin_configs' / 'data' / 'benchmark_mixture.gin').read_text()
  start = text.index('benchmark_mixture.rates = ') + len('benchmark_mixture.rates = ')
  assert ast.literal_eval(text[start:text.index('}', start) + 1]) == mixture_lib.DEFAULT_RATES
  assert mixture_lib.component_rates(None, None) == mixture_lib.DEFAULT_RATES
  assert mixture_lib.component_rates({'books': 1.0, 'web': 0.0}, None) == {'books': 1.0}
  with pytest.raises(ValueError, match='unknown components'):
    mixture_lib.component_rates({'bookz': 1.0}, None)


# ------------------------------------------------------------------------------------------------------------
# The real benchmark (../shared/data).


@pytest.fixture(scope='module')
def config(shared_data):
  return documents.BenchmarkConfig(data_dir=str(shared_data))


@pytest.fixture(scope='module')
def catalog(config):
  return [d.catalog_entry() for d in documents.benchmark_documents(config)]


def _binomial_ok(hits, n, p):
  return abs(hits / n - p) <= Z * math.sqrt(p * (1 - p) / n)


def test_catalog_labels(catalog):
  ids = [e['doc_id'] for e in catalog]
  assert len(ids) == len(set(ids)) > 10_000
  assert {e['component'] for e in catalog} == set(mixture_lib.COMPONENTS)
  assert {e['domain'] for e in catalog} == {*documents.TARGET_DOMAINS, 'code_c', 'code_python', 'french', 'german',
                                            'spanish', 'russian', 'chinese', 'web'}
  assert {e['quality'] for e in catalog} == {'clean', 'raw', *(f'synthetic_{k}' for k in corruptions.SYNTHETIC_KINDS)}
  by_id = {e['doc_id']: e for e in catalog}
  for e in catalog:
    assert e['n_chars'] > 0
    assert e['target'] == (e['domain'] in documents.TARGET_DOMAINS and e['quality'] == 'clean')
    assert (e['quality'] == 'raw') == (e['domain'] == 'web')
    if e['quality'].startswith('synthetic_'):
      origin = by_id[e['origin']]
      assert e['doc_id'] == f"{e['quality']}:{e['origin']}" and e['component'] == e['quality']
      assert origin['target'] and e['domain'] == origin['domain']
    else:
      assert e['origin'] == e['doc_id']
  counts = collections.Counter(e['source'] for e in catalog if e['quality'] == 'clean')
  assert counts['gsm8k'] == 7473 and counts['mbpp'] == 974  # One document per row.
  assert counts['flores_deu'] == 100 and counts['wikitext2_valid'] > 50
  assert sum(e['source'] == 'commoncrawl' for e in catalog) == 697 - 27  # Empty records skipped.


def test_splits_never_overlap_and_follow_the_rules(catalog, config):
  by_id = {e['doc_id']: e for e in catalog}
  assert {e['split'] for e in catalog} == set(documents.SPLITS)
  originals = [e for e in catalog if e['origin'] == e['doc_id']]
  for e in catalog:
    if e['split'] == 'validation':
      assert e['target'] and e['source'] != 'wikitext2_test'
    if e['source'] == 'wikitext2_test':
      assert e['split'] == 'test'
    if e['origin'] != e['doc_id']:
      assert e['split'] == by_id[e['origin']]['split'] != 'validation'
  hashed = [e for e in originals if e['source'] != 'wikitext2_test']
  n = len(hashed)
  assert _binomial_ok(sum(e['split'] == 'train' for e in hashed), n, config.train_fraction)
  assert _binomial_ok(sum(e['split'] == 'pool' for e in hashed), n, config.pool_fraction)
  held_target = [e for e in hashed if e['target'] and e['split'] in ('validation', 'test')]
  assert _binomial_ok(sum(e['split'] == 'validation' for e in held_target), len(held_target),
                      config.validation_share)
  eligible = [e for e in originals if e['target'] and e['split'] != 'validation']
  synthetic = [e for e in catalog if e['origin'] != e['doc_id']]
  assert _binomial_ok(len(synthetic), len(eligible), config.synthetic_fraction)
  kinds = collections.Counter(e['quality'] for e in synthetic)
  for kind in corruptions.SYNTHETIC_KINDS:
    assert _binomial_ok(kinds[f'synthetic_{kind}'], len(synthetic), 1 / len(corruptions.SYNTHETIC_KINDS))


def test_catalog_is_deterministic_and_seeded(catalog, config, tmp_path):
  again = [d.catalog_entry() for d in documents.make_documents(config)]  # Not the cached copy.
  assert again == catalog
  other = catalog_lib.build_catalog(config.data_dir, seed=1)
  originals = lambda c: {e['doc_id']: e['split'] for e in c if e['origin'] == e['doc_id']}
  splits, other_splits = originals(catalog), originals(other)
  assert splits.keys() == other_splits.keys()
  assert sum(other_splits[i] != s for i, s in splits.items()) > len(splits) / 3  # Another seed, other splits.
  path = catalog_lib.write_catalog(catalog, str(tmp_path / 'cat' / 'catalog.jsonl'))
  assert catalog_lib.read_catalog(path) == catalog


def test_selection_report_on_the_pool(catalog):
  pool = [e['doc_id'] for e in catalog if e['split'] == 'pool']
  report = reports.selection_report(pool, catalog)
  assert report['n_selected'] == report['n_base'] == len(pool) and report['n_unknown'] == 0
  assert all(row['lift'] == pytest.approx(1.0) for row in report['by_domain'].values())
  clean = [e['doc_id'] for e in catalog if e['split'] == 'pool' and e['target']]
  report = reports.selection_report(clean, catalog)
  assert report['target']['selected'] == 1.0 and 0.3 < report['target']['base'] < 0.8
  assert report['by_quality']['raw']['selected']['docs'] == 0


def test_selection_report_script(catalog, tmp_path, capsys):
  spec = importlib.util.spec_from_file_location('selection_report', REPO / 'scripts' / 'selection_report.py')
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  ids = [e['doc_id'] for e in catalog if e['split'] == 'pool' and e['domain'] == 'math'][:50]
  (tmp_path / 'ids.json').write_text(json.dumps(ids))
  catalog_lib.write_catalog(catalog, str(tmp_path / 'catalog.jsonl'))
  script.main(['--ids', str(tmp_path / 'ids.json'), '--catalog', str(tmp_path / 'catalog.jsonl')])
  out = capsys.readouterr().out
  assert out.startswith('selected 50 documents') and '| math | 50 | 100.0 | 100.0 |' in out


def test_benchmark_tasks_and_mixture(config):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import vocabulary  # pylint: disable=g-import-not-at-top

  mixture = mixture_lib.register_benchmark_tasks('bm_test', config, vocabulary.default_vocabulary(),
                                        {'books': 3.0, 'web': 1.0, 'synthetic_char_noise': 1.0})
  assert sorted(t.name for t in mixture.tasks) == ['bm_test_books', 'bm_test_synthetic_char_noise', 'bm_test_web']
  assert mixture.get_rate(seqio.get_mixture_or_task('bm_test_books')) == 3.0
  assert tuple(seqio.get_mixture_or_task('bm_test_books').splits) == documents.SPLITS
  assert 'validation' not in seqio.get_mixture_or_task('bm_test_web').splits
  # The reference set: every example of the validation split is clean target-like English, with its labels.
  task = seqio.get_mixture_or_task('bm_test_all')
  examples = list(task.get_dataset({'targets': 64}, split='validation', shuffle=False).take(200)
                  .as_numpy_iterator())
  assert {x['quality'] for x in examples} == {b'clean'}
  assert {x['domain'].decode() for x in examples} <= set(documents.TARGET_DOMAINS)
  assert all(len(x['targets']) <= 64 and x['doc_id'] for x in examples)
  reference = seqio.get_mixture_or_task('bm_test_reference')
  ref_ids = {x['doc_id'].decode() for x in reference.get_dataset({'targets': 64}, split='train', shuffle=False)
             .take(300).as_numpy_iterator()}
  assert ref_ids <= {d.doc_id for d in documents.benchmark_documents(config) if d.split == 'validation'}
  # Packed decoder batches from the mixture; the metadata is dropped by the feature converter.
  batch = next(pipeline.get_dataset('bm_test', 'train', 64, 4, shuffle=True, seed=0, repeat=True)
               .as_numpy_iterator())
  assert sorted(batch) == ['decoder_input_tokens', 'decoder_loss_weights', 'decoder_positions',
                           'decoder_segment_ids', 'decoder_target_tokens']
  assert batch['decoder_target_tokens'].shape == (4, 64) and np.all(batch['decoder_segment_ids'][:, 0] == 1)


@pytest.mark.integration
def test_train_cli_on_the_benchmark_mixture(shared_data, tmp_path):
  """data/benchmark_mixture.gin over data/seqio.gin trains a tiny model on the benchmark mixture."""
  cmd = [sys.executable, str(REPO / 'scripts' / 'train.py'), '--gin_file=base.gin', '--gin_file=models/tiny.gin',
         '--gin_file=data/seqio.gin', '--gin_file=data/benchmark_mixture.gin', f"--gin.MODEL_DIR='{tmp_path}'",
         f"--gin.benchmark_mixture.data_dir='{shared_data}'", '--gin.NUM_STEPS=4', '--gin.SEQUENCE_LENGTH=32',
         '--gin.BATCH_SIZE=4', '--gin.TrainSpec.eval_every=2', '--gin.train.eval_batches=2',
         '--gin.OptimizerConfig.warmup_steps=1']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', XLA_FLAGS='--xla_force_host_platform_device_count=1')
  result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'finished step 4' in result.stdout


def test_selection_report_accepts_chunk_keys():
  catalog = [{'doc_id': 'a:1', 'split': 'pool', 'domain': 'books', 'quality': 'clean', 'n_chars': 10, 'target': True},
             {'doc_id': 'b:2', 'split': 'pool', 'domain': 'web', 'quality': 'raw', 'n_chars': 30, 'target': False}]
  report = reports.selection_report(['a:1#0', 'a:1#3'], catalog)
  assert report['n_selected'] == 1 and report['n_unknown'] == 0
  assert report['target'] == {'selected': 1.0, 'base': 0.25, 'lift': 4.0}


def test_composition_under_the_catalog_labellers_counts_examples_not_documents():
  catalog = [{'doc_id': 'a:0', 'domain': 'books', 'quality': 'clean', 'target': True},
             {'doc_id': 'b:0', 'domain': 'web', 'quality': 'raw', 'target': False}]
  labellers = catalog_lib.catalog_labellers(catalog)
  c = composition.composition(['a:0#0', 'a:0#1', 'a:0#2', 'b:0#0'], labellers)
  assert c == {'n': 4, 'by_domain': {'books': 0.75, 'web': 0.25}, 'by_quality': {'clean': 0.75, 'raw': 0.25},
               'target_fraction': 0.75}
  with pytest.raises(KeyError, match='c:9'):
    composition.composition(['c:9#0'], labellers)


def test_benchmark_selection_reporter(catalog, config):
  reporter = reports.selection_reporter(config.data_dir)
  pool = [e['doc_id'] for e in catalog if e['split'] == 'pool']
  keys = [f'{d}#0' for d in pool[:40]] + [f'{pool[0]}#1']
  report, markdown = reporter.document_report(keys, 'pool')
  assert report == reports.selection_report(keys, catalog, base_split='pool') and report['n_selected'] == 40
  assert markdown == reports.format_selection_report(report)
  assert composition.composition(keys, reporter.labellers()) == composition.composition(
      keys, catalog_lib.catalog_labellers(catalog))


def _source_ids(task_name, split):
  """The document ids a registered benchmark task's source serves in ``split`` (untokenized, in order)."""
  import seqio  # pylint: disable=g-import-not-at-top
  source = seqio.get_mixture_or_task(task_name).source
  return [x['doc_id'].decode() for x in source.get_dataset(split, shuffle=False).as_numpy_iterator()]


@pytest.mark.parametrize('domain', documents.TARGET_DOMAINS)
def test_reference_of_one_domain_and_held_out_documents_of_the_others(config, domain):
  """``benchmark_reference_<D>``: train holds D's reference-set documents only, validation D's clean held-out
  documents; ``benchmark_heldout_except_<D>``: the clean held-out documents of the other target domains, none of
  D, none in (or copied into) train or pool."""
  from bliss_jax.data import vocabulary  # pylint: disable=g-import-not-at-top
  mixture_lib.register_benchmark_tasks('bm_ref', config, vocabulary.default_vocabulary())
  docs = documents.benchmark_documents(config)
  by_id = {d.doc_id: d for d in docs}
  reference, own_heldout = _source_ids(f'bm_ref_reference_{domain}', 'train'), _source_ids(
      f'bm_ref_reference_{domain}', 'validation')
  others = _source_ids(f'bm_ref_heldout_except_{domain}', 'validation')
  assert reference == [d.doc_id for d in docs if d.split == 'validation' and d.domain == domain and d.target]
  assert own_heldout == [d.doc_id for d in docs if d.split == 'test' and d.domain == domain and d.target]
  assert others == [d.doc_id for d in docs if d.split in ('validation', 'test') and d.target and d.domain != domain]
  assert reference and own_heldout and others
  assert not set(reference) & set(own_heldout) and not set(reference) & set(others)
  assert {by_id[i].domain for i in others} == set(documents.TARGET_DOMAINS) - {domain}
  assert all(by_id[i].quality == 'clean' for i in reference + own_heldout + others)
  trained_or_candidates = [d for d in docs if d.split in ('train', 'pool')]
  assert not {d.origin for d in trained_or_candidates} & set(reference + own_heldout + others)
  # The tasks tokenize: examples carry the documents' labels.
  import seqio  # pylint: disable=g-import-not-at-top
  examples = list(seqio.get_mixture_or_task(f'bm_ref_heldout_except_{domain}')
                  .get_dataset({'targets': 64}, split='validation', shuffle=False).take(20).as_numpy_iterator())
  assert examples and {x['quality'] for x in examples} == {b'clean'}
  assert tuple(seqio.get_mixture_or_task(f'bm_ref_heldout_except_{domain}').splits) == ('validation',)


def test_reference_task_kinds_are_checked(config):
  with pytest.raises(ValueError, match="domain='web'"):
    mixture_lib.benchmark_source(config, task_kind='reference', domain='web')
  with pytest.raises(ValueError, match='needs the domain'):
    mixture_lib.benchmark_source(config, task_kind='heldout_except')
  with pytest.raises(ValueError, match="task_kind='nope'"):
    mixture_lib.benchmark_source(config, task_kind='nope')


def test_small_comparison_reads_one_distribution_for_stream_and_candidates(catalog):
  """compare/small.gin: the stream and the candidate pool are the same split, so their compositions are the same by
  construction; the reference domain's documents are neither, and the held-out sets are disjoint from both."""
  text = (REPO / 'gin_configs' / 'compare' / 'small.gin').read_text()
  binding = lambda key: ast.literal_eval(text.split(f'\ncompare.{key} = ', 1)[1].split('\ncompare.', 1)[0].strip())
  assert binding('train_task') == binding('pool_task') == 'benchmark_all' and binding('pool_split') == 'train'
  stream = [e['doc_id'] for e in catalog if e['split'] == 'train']
  labellers = catalog_lib.catalog_labellers(catalog)
  assert composition.composition(stream, labellers) == composition.composition(
      [e['doc_id'] for e in catalog if e['split'] == binding('pool_split')], labellers)
  assert binding('reference_task') == 'benchmark_reference_books'
  assert binding('eval_sets') == {'other_domains': 'benchmark_heldout_except_books:validation',
                                  'books': 'benchmark_reference_books:validation'}
