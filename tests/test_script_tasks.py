"""Every script that takes a task name finds a task registered only in a gin file (`--gin_file`, as train.py takes
it; `bliss_jax.cli.register_tasks`): evaluate.py --heldout, unigram_entropy.py, selection_report.py,
score_reference_losses.py."""
import importlib.util
import json
import pathlib

import gin
import jax
import jax.numpy as jnp
import pytest
import seqio
from flax import linen as nn
from pydoc_data import topics

from bliss_jax import cli
from bliss_jax.data import vocabulary

REPO = pathlib.Path(__file__).resolve().parents[1]


def _script(name):
  spec = importlib.util.spec_from_file_location(name, REPO / 'scripts' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def gin_file(tmp_path_factory):
  """A gin file registering `gin_task` (one file), `gin_reference` (in scope `ref`) and the mixture `gin_mix`."""
  d = tmp_path_factory.mktemp('gin_tasks')
  texts = [text for _, text in sorted(topics.topics.items())][:20]
  vocab = vocabulary.train_sentencepiece(texts, str(d / 'small.model'), 300)
  paragraphs = [p for t in texts for p in t.split('\n\n') if p.strip()]
  (d / 'books.txt').write_text('\n\n'.join(paragraphs[:40]) + '\n')
  (d / 'web.txt').write_text('\n'.join(p.replace('\n', ' ') for p in paragraphs[40:80]) + '\n')
  path = d / 'tasks.gin'
  path.write_text('\n'.join([
      'TASK = @register_local_files_task()',
      "register_local_files_task.name = 'gin_task'",
      f"register_local_files_task.paths = [{{'path': '{d / 'books.txt'}', 'format': 'blank_line'}}]",
      f"register_local_files_task.vocabulary_path = '{vocab}'",
      'register_local_files_task.validation_fraction = 0.5',
      'REFERENCE = @ref/register_local_files_task()',
      "ref/register_local_files_task.name = 'gin_reference'",
      f"ref/register_local_files_task.paths = ['{d / 'web.txt'}']",
      'MIX = @register_local_mixture()',
      "register_local_mixture.name = 'gin_mix'",
      f"register_local_mixture.paths = [{{'path': '{d / 'books.txt'}', 'format': 'blank_line'}}, '{d / 'web.txt'}']",
      "register_local_mixture.target_like = ('books',)",
      f"register_local_mixture.vocabulary_path = '{vocab}'",
  ]) + '\n')
  return str(path), vocab


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_register_tasks_resolves_every_registration_in_gin_scoped_or_not(gin_file, clean_gin):
  assert cli.register_tasks(cli.parse_args([f'--gin_file={gin_file[0]}'])) == ['gin_task', 'gin_reference', 'gin_mix']
  assert {'gin_task', 'gin_reference', 'gin_mix_books', 'gin_mix_web'} <= set(seqio.TaskRegistry.names())
  # the scoped registration read its own files (and, as gin scopes do, the unscoped bindings it does not override)
  ds = seqio.get_mixture_or_task('gin_reference').get_dataset({'targets': 32}, split='train', shuffle=False)
  assert {x['doc_id'].decode().split(':')[0] for x in ds.as_numpy_iterator()} == {'web'}


def test_a_failing_registration_is_a_cli_error_naming_it(gin_file, clean_gin, tmp_path):
  args = cli.parse_args([f'--gin_file={gin_file[0]}', f"--gin.ref/register_local_files_task.paths=['{tmp_path}/x']"])
  with pytest.raises(cli.CliError, match=r"registering the tasks of @ref/register_local_files_task\(\): .*x"):
    cli.register_tasks(args)


def test_unigram_entropy_finds_a_gin_task(gin_file, clean_gin, capsys):
  from bliss_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  h = _script('unigram_entropy').main([f'--gin_file={gin_file[0]}', '--task', 'gin_task', '--split', 'validation'])
  assert f'unigram entropy of gin_task:validation under its tokenizer: {h:.4f}' in capsys.readouterr().out
  assert h == pipeline.token_unigram_entropy('gin_task', 'validation')


def test_selection_report_describes_a_gin_mixture_by_source(gin_file, clean_gin, tmp_path, capsys):
  (tmp_path / 'ids.json').write_text(json.dumps(['books:0#0', 'books:1#0', 'web:3#1']))
  _script('selection_report').main(['--ids', str(tmp_path / 'ids.json'), f'--gin_file={gin_file[0]}', '--task',
                                    'gin_mix', '--json'])
  report = json.loads(capsys.readouterr().out)
  assert report['n_selected'] == 3 and report['base_split'] == 'train' and set(report['by_domain']) == {'books', 'web'}
  assert report['by_domain']['books']['selected']['docs'] == 2 and 0 < report['target']['selected'] < 1


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  """A random `tiny` model (vocab 512) at step 3, without a vocabulary record."""
  from bliss_jax.models.config import preset  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
  from bliss_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  model = Transformer(preset('tiny'))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))['params'])
  path = tmp_path_factory.mktemp('run') / 'run'
  path.mkdir()
  ModelDir(str(path)).write_model_config(model.cfg)
  checkpoints.save(checkpoints.make_manager(str(path)), 3, {'params': params}, {})
  return str(path)


def test_evaluate_heldout_finds_a_gin_task(gin_file, model_dir, clean_gin, tmp_path):
  items = [{'question': f'Which gas, case {i}?', 'distractor1': 'oxygen', 'distractor2': 'helium',
            'distractor3': 'neon', 'correct_answer': 'carbon dioxide', 'support': ''} for i in range(2)]
  (tmp_path / 'sciq.json').write_text(json.dumps(items))
  results = _script('evaluate').main([
      f'--model_dir={model_dir}', f'--output_dir={tmp_path / "eval"}', f'--vocabulary={gin_file[1]}', '--tasks=sciq',
      f'--task_file=sciq={tmp_path / "sciq.json"}', '--batch_size=4', '--max_length=32', '--data_parallel=1',
      '--no_progress', '--heldout=gin_task:validation', '--heldout_sequence_length=32', f'--gin_file={gin_file[0]}'])
  assert results['heldout']['gin_task:validation']['num_tokens'] > 0


def test_score_reference_losses_finds_a_gin_task(gin_file, model_dir, clean_gin, tmp_path, capsys):
  _script('score_reference_losses').main([
      '--reference_dir', model_dir, '--task', 'gin_task', '--split', 'validation', '--store_dir',
      str(tmp_path / 'store'), '--sequence_length', '32', '--batch_size', '8', f'--gin_file={gin_file[0]}'])
  assert 'scored by' in capsys.readouterr().out
