"""docs/DATA_AND_EVAL.md's "Compare the methods on your own data": its gin example parses (every binding and every
method option exists), builds its models' TrainSpecs and, over small files at its paths, registers its tasks."""
import gzip
import inspect
import json
import pathlib

import gin
import pytest
import seqio
from pydoc_data import topics

from bliss_jax import cli
from bliss_jax.data import vocabulary

REPO = pathlib.Path(__file__).resolve().parents[1]
SECTION = '## Compare the methods on your own data'


def _section() -> str:
  text = (REPO / 'docs' / 'DATA_AND_EVAL.md').read_text()
  return text.split(SECTION + '\n', 1)[1].split('\n## ', 1)[0]


def _example_gin() -> str:
  return _section().split('```gin\n', 1)[1].split('```', 1)[0]


def test_the_readme_links_the_section():
  assert 'docs/DATA_AND_EVAL.md#compare-the-methods-on-your-own-data' in (REPO / 'README.md').read_text()


@pytest.fixture
def data(tmp_path):
  """Small files at the example's /data/ paths, under tmp_path/data."""
  d = tmp_path / 'data'
  texts = [text for _, text in sorted(topics.topics.items())][:12]
  for sub in ('books', 'web', 'code/pkg', 'curated', 'heldout'):
    (d / sub).mkdir(parents=True)
  (d / 'books' / 'a.txt').write_text(texts[0])
  (d / 'books' / 'b.txt').write_text(texts[1])
  record = lambda i: json.dumps({'title': f'topic {i}', 'abstract': texts[i][:400], 'text': texts[i][:300]}) + '\n'
  with gzip.open(d / 'pubmed.jsonl.gz', 'wt') as f:
    f.writelines(record(i) for i in range(2, 5))
  with gzip.open(d / 'web' / 'crawl.jsonl.gz', 'wt') as f:
    f.writelines(record(i) for i in range(5, 7))
  (d / 'code' / 'pkg' / 'm.py').write_text(inspect.getsource(json.dumps))
  (d / 'curated' / 'c.jsonl').write_text(''.join(record(i) for i in range(7, 9)))
  (d / 'heldout' / 'h.jsonl').write_text(''.join(record(i) for i in range(9, 12)))
  vocabulary.train_sentencepiece(texts, str(d / 'mine.model'), 300, keep_whitespace=True)
  return d


def test_the_example_parses_builds_and_registers_its_tasks(data, tmp_path):
  config = tmp_path / 'my_compare.gin'
  config.write_text(_example_gin().replace("'/data/", f"'{data}/"))
  gin.clear_config()
  try:
    registered = cli.register_tasks(cli.parse_args([f'--gin_file={config}']))
    assert sorted(registered) == ['mine', 'mine_heldout', 'mine_reference']
    # every method option is a parameter of its pipeline's run
    for pipeline in ('rho1', 'salt', 'miniplm', 'bliss'):
      options = gin.query_parameter(f'%{pipeline.upper()}')
      assert set(options) <= set(inspect.signature(gin.get_configurable(pipeline)).parameters), pipeline
    assert str(gin.query_parameter('%MINIPLM')['reference_task']) == '%REFERENCE'
    specs = {}
    for scope in ('target', 'small', 'large'):
      with gin.config_scope(scope):
        specs[scope] = gin.get_configurable('TrainSpec')()
    assert (specs['target'].num_steps, specs['target'].batch_size, specs['target'].sequence_length) == (2000, 16, 256)
    assert [specs[s].model_config.d_model for s in ('target', 'small', 'large')] == [128, 64, 192]
  finally:
    gin.clear_config()
  from bliss_jax import configurables  # pylint: disable=g-import-not-at-top
  reporter = configurables.selection_reporter('local_mixture', 'mine')
  assert sorted(t.name for t in seqio.get_mixture_or_task('mine').tasks) == [
      'mine_books', 'mine_code', 'mine_pubmed', 'mine_web']
  assert reporter.labellers()['target']('pubmed:3') == 'yes' and reporter.labellers()['target']('web:0') == 'no'
  heldout = seqio.get_mixture_or_task('mine_heldout').get_dataset({'targets': 256}, split='validation', shuffle=False)
  assert {x['doc_id'].decode() for x in heldout.as_numpy_iterator()} == {'h:0', 'h:1', 'h:2'}
