"""Tests for scripts/train_tokenizer.py: per-file and per-glob inputs, its errors."""
import importlib.util
import json
import pathlib

import pytest
from pydoc_data import topics

from bliss_jax.data import vocabulary

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('train_tokenizer', REPO / 'scripts' / 'train_tokenizer.py')
train_tokenizer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_tokenizer)

TEXTS = [text for _, text in sorted(topics.topics.items())][:12]


@pytest.fixture
def corpus(tmp_path):
  """books/*.txt: paragraphs of six topics; qa.jsonl: six more as {"title", "body"} records."""
  (tmp_path / 'books').mkdir()
  for i, text in enumerate(TEXTS[:6]):
    (tmp_path / 'books' / f'{i}.txt').write_text(text)
  with open(tmp_path / 'qa.jsonl', 'w') as f:
    for text in TEXTS[6:]:
      title, _, body = text.partition('\n')
      f.write(json.dumps({'title': title, 'body': body}) + '\n')
  return tmp_path


def test_per_glob_and_per_file_inputs_train_on_those_texts(corpus, tmp_path, capsys):
  out = tmp_path / 'entries.model'
  train_tokenizer.main([
      '--input', json.dumps({'glob': str(corpus / 'books' / '*.txt'), 'format': 'blank_line'}),
      '--input', json.dumps({'path': str(corpus / 'qa.jsonl'), 'text_fields': ['title', 'body']}),
      '--vocab_size', '300', '--output', str(out)])
  assert '300 pieces' in capsys.readouterr().out
  paragraphs = [p for text in TEXTS[:6] for p in text.split('\n\n') if p.strip()]
  texts = paragraphs + [f'{t.partition(chr(10))[0]}\n\n{t.partition(chr(10))[2]}' for t in TEXTS[6:]]
  expected = vocabulary.train_sentencepiece(texts, str(tmp_path / 'expected.model'), 300)
  assert out.read_bytes() == pathlib.Path(expected).read_bytes()


def test_input_errors_name_the_input(corpus, tmp_path, capsys):
  with pytest.raises(SystemExit):
    train_tokenizer.main(['--input', json.dumps({'glob': str(corpus / '*.md')}), '--vocab_size', '300',
                          '--output', str(tmp_path / 'x.model')])
  assert "glob '" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    train_tokenizer.main(['--input', '{"path": ', '--vocab_size', '300', '--output', str(tmp_path / 'x.model')])
  assert 'is not a JSON object' in capsys.readouterr().err


def test_a_missing_field_names_the_flag_to_use(corpus, tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    train_tokenizer.main(['--input', str(corpus / 'qa.jsonl'), '--vocab_size', '300', '--output',
                          str(tmp_path / 'x.model')])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "qa.jsonl:1: record has no field 'text' (its fields: title, body)" in err
  assert '--text_field title --text_field body' in err and '"text_fields": ["title", "body"]' in err


CODE = 'def f(x):\n    if x:\n\treturn  x  # two spaces\n\n        pass\n'


def test_keep_whitespace_round_trips_code_with_its_indentation(tmp_path, capsys):
  """T5's normaliser gives back code on one line; --keep_whitespace gives back its line breaks, tabs and indents."""
  import glob  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(os.path.dirname(inspect.__file__), 'json', '*.py')))
  inputs = [a for f in files for a in ('--input', json.dumps({'path': f, 'format': 'blank_line'}))]
  decoded = {}
  for flag in ([], ['--keep_whitespace']):
    out = str(tmp_path / f'code{len(flag)}.model')
    train_tokenizer.main(inputs + ['--vocab_size', '400', '--output', out] + flag)
    vocab = vocabulary.load_vocabulary(out)
    decoded[bool(flag)] = vocab.decode(vocab.encode(CODE))
  assert decoded[True] == CODE
  assert decoded[False] == 'def f(x): if x: return x # two spaces pass'
  capsys.readouterr()
