"""Tests for bliss_jax.data.sources and bliss_jax.data.embedded."""
import gzip
import json

import pytest

from bliss_jax.data import embedded
from bliss_jax.data import sources


def _write(path, text, compress=False):
  opener = gzip.open if compress else open
  with opener(path, 'wt', encoding='utf-8', newline='') as f:
    f.write(text)
  return str(path)


# ------------------------------------------------------------------------------------------------ text files


def test_text_one_document_per_nonempty_line(tmp_path):
  path = _write(tmp_path / 'lines.txt', 'first doc\n\n  \nsecond doc  \r\nthird\n')
  assert list(sources.read_text_documents(path)) == [
      ('lines:0', 'first doc'), ('lines:1', 'second doc  '), ('lines:2', 'third')]


def test_text_blank_line_paragraphs(tmp_path):
  text = '\n\npara one\nline two\n\n\n \t\npara two\n\npara three, no final newline'
  path = _write(tmp_path / 'paras.txt', text)
  assert list(sources.read_text_documents(path, doc_separator='blank_line')) == [
      ('paras:0', 'para one\nline two'), ('paras:1', 'para two'), ('paras:2', 'para three, no final newline')]


def test_text_gz_is_transparent_and_ids_use_the_stem(tmp_path):
  text = 'alpha\nbeta\n\ngamma\n'
  plain = _write(tmp_path / 'corpus.txt', text)
  packed = _write(tmp_path / 'corpus.txt.gz', text, compress=True)
  assert list(sources.read_text_documents(packed)) == list(sources.read_text_documents(plain)) == [
      ('corpus:0', 'alpha'), ('corpus:1', 'beta'), ('corpus:2', 'gamma')]
  assert [i for i, _ in sources.read_text_documents(plain, source_name='web')] == ['web:0', 'web:1', 'web:2']


def test_text_errors(tmp_path):
  missing = str(tmp_path / 'nope.txt')
  with pytest.raises(FileNotFoundError, match='nope.txt'):
    list(sources.read_text_documents(missing))
  path = _write(tmp_path / 'a.txt', 'x\n')
  with pytest.raises(ValueError, match='doc_separator'):
    list(sources.read_text_documents(path, doc_separator='page'))


def test_source_name_from_path():
  assert sources.source_name_from_path('/d/war_and_peace.txt') == 'war_and_peace'
  assert sources.source_name_from_path('/d/sample.jsonl.gz') == 'sample'
  assert sources.source_name_from_path('eng_Latn.dev') == 'eng_Latn'


# ------------------------------------------------------------------------------------------------ JSONL files


def _jsonl(records):
  return ''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in records)


def test_jsonl_text_field_own_ids_and_row_indices(tmp_path):
  records = [{'id': 'a7', 'text': 'one'}, {'text': 'two'}, '', {'id': 'x9', 'text': '  '}, {'text': 'four'}]
  path = _write(tmp_path / 'docs.jsonl', _jsonl(records))
  # Blank lines are not rows; records with empty text are kept (they tokenize to nothing downstream).
  assert list(sources.read_jsonl_documents(path)) == [
      ('docs:a7', 'one'), ('docs:1', 'two'), ('docs:x9', '  '), ('docs:3', 'four')]
  assert [i for i, _ in sources.read_jsonl_documents(path, id_field=None)] == [
      'docs:0', 'docs:1', 'docs:2', 'docs:3']


def test_jsonl_joined_fields_template_and_gz(tmp_path):
  records = [{'question': 'What is 2+3?', 'answer': '#### 5'}, {'question': 'Q2', 'answer': 'A2'}]
  path = _write(tmp_path / 'math.jsonl.gz', _jsonl(records), compress=True)
  assert list(sources.read_jsonl_documents(path, text_fields=('question', 'answer'))) == [
      ('math:0', 'What is 2+3?\n\n#### 5'), ('math:1', 'Q2\n\nA2')]
  assert list(sources.read_jsonl_documents(path, template='Question: {question}\nAnswer: {answer}')) == [
      ('math:0', 'Question: What is 2+3?\nAnswer: #### 5'), ('math:1', 'Question: Q2\nAnswer: A2')]


def test_jsonl_errors_name_file_and_line(tmp_path):
  path = _write(tmp_path / 'bad.jsonl', '{"text": "ok"}\n\n{"text": "broken\n{"text": "after"}\n')
  with pytest.raises(ValueError, match=r'bad\.jsonl:3: invalid JSON'):
    list(sources.read_jsonl_documents(path))
  path = _write(tmp_path / 'nofield.jsonl', '{"text": "ok"}\n{"body": "x"}\n')
  with pytest.raises(ValueError, match=r"nofield\.jsonl:2: record has no field 'text'"):
    list(sources.read_jsonl_documents(path))
  path = _write(tmp_path / 'array.jsonl', '[1, 2]\n')
  with pytest.raises(ValueError, match=r'array\.jsonl:1: expected a JSON object'):
    list(sources.read_jsonl_documents(path))
  with pytest.raises(FileNotFoundError, match='missing.jsonl'):
    list(sources.read_jsonl_documents(str(tmp_path / 'missing.jsonl')))


def test_binary_and_truncated_gzip_files_are_named(tmp_path):
  binary = tmp_path / 'image.txt'
  binary.write_bytes(b'fine line\n' + bytes(range(128, 256)) * 40 + b'\n')
  with pytest.raises(ValueError, match=r'image\.txt:\d+: not UTF-8 text .*binary file'):
    list(sources.read_text_documents(str(binary)))
  with pytest.raises(ValueError, match=r'image\.txt:\d+: not UTF-8 text'):
    list(sources.read_jsonl_documents(str(binary)))
  whole = tmp_path / 'whole.jsonl.gz'
  with gzip.open(whole, 'wt', encoding='utf-8') as f:
    f.writelines(json.dumps({'text': f'document {i} ' * 20}) + '\n' for i in range(2000))
  data = whole.read_bytes()
  truncated = tmp_path / 'cut.jsonl.gz'
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match=r'cut\.jsonl\.gz: a corrupt or truncated gzip file after line \d+'):
    list(sources.read_jsonl_documents(str(truncated)))
  not_gzip = _write(tmp_path / 'plain.txt.gz', 'not compressed\n')
  with pytest.raises(ValueError, match=r'plain\.txt\.gz: a corrupt or truncated gzip file after line 0'):
    list(sources.read_text_documents(not_gzip))
  assert len(list(sources.read_jsonl_documents(str(whole)))) == 2000


# ------------------------------------------------------------------------------------------------ real files


def test_real_gsm8k(shared_data):
  path = str(shared_data / 'corpus' / 'gsm8k_train.jsonl')
  docs = list(sources.read_jsonl_documents(path, text_fields=('question', 'answer')))
  assert len(docs) == 7473
  assert [d[0] for d in docs[:2]] == ['gsm8k_train:0', 'gsm8k_train:1']
  assert docs[-1][0] == 'gsm8k_train:7472'
  assert docs[0][1].startswith('Natalia sold clips to 48 of her friends in April')
  assert docs[0][1].endswith('#### 72')
  assert docs == list(sources.read_jsonl_documents(path, text_fields=('question', 'answer')))


def test_real_commoncrawl_uses_record_ids(shared_data):
  path = str(shared_data / 'corpus' / 'commoncrawl_sample.jsonl.gz')
  docs = list(sources.read_jsonl_documents(path))
  assert len(docs) == 697
  assert docs[0][0] == 'commoncrawl_sample:blj5uzvcoa4iybpd5o6kom5nir6ngmoj'
  assert docs[0][1].startswith('A New Home?')
  assert len({d[0] for d in docs}) == 697
  assert sum(not text for _, text in docs) == 27  # Empty pages stay, so ids and counts match the file.


def test_real_mbpp_and_text_files(shared_data):
  corpus = shared_data / 'corpus'
  mbpp = list(sources.read_jsonl_documents(str(corpus / 'mbpp.jsonl'), ('text', 'code'), id_field='task_id'))
  # The shared README says 973 rows; the file holds task_ids 1..974 (973 newlines, no final one).
  assert len(mbpp) == 974
  assert (mbpp[0][0], mbpp[-1][0]) == ('mbpp:1', 'mbpp:974')
  assert mbpp[0][1].startswith('Write a function to find the minimum cost path') and 'def min_cost' in mbpp[0][1]
  flores = list(sources.read_text_documents(str(corpus / 'flores_dev' / 'eng_Latn.dev')))
  assert len(flores) == 997 and flores[0][0] == 'eng_Latn:0'
  stories = list(sources.read_text_documents(str(corpus / 'tinystories_valid_head.txt'), 'blank_line'))
  assert len(stories) > 100 and all(text.strip() for _, text in stories)


# ------------------------------------------------------------------------------------------------ embedded corpus


def test_stdlib_docstrings_parse_without_importing(tmp_path):
  lib = tmp_path / 'lib'
  (lib / 'pkg').mkdir(parents=True)
  (lib / 'test').mkdir()
  (lib / 'pkg' / '__pycache__').mkdir()
  long_doc = 'word ' * 50
  module = (f'"""{long_doc}module."""\nraise SystemExit("imported!")\n'
            f'class Outer:\n  """{long_doc}class."""\n  def method(self):\n    """{long_doc}method."""\n'
            f'  def short(self):\n    """too short."""\nasync def coro():\n  """{long_doc}coro."""\n')
  (lib / 'pkg' / 'mod.py').write_text(module)
  (lib / 'a.py').write_text(f'def f():\n  """{long_doc}f."""\n')
  (lib / 'broken.py').write_text('def (:\n')
  (lib / 'test' / 'test_x.py').write_text(f'"""{long_doc}"""\n')
  (lib / 'pkg' / '__pycache__' / 'c.py').write_text(f'"""{long_doc}"""\n')
  docs = embedded.stdlib_docstring_documents(str(lib))
  assert [d[0] for d in docs] == [
      'stdlib:a.py:f', 'stdlib:pkg/mod.py:<module>', 'stdlib:pkg/mod.py:Outer',
      'stdlib:pkg/mod.py:Outer.method', 'stdlib:pkg/mod.py:coro']
  assert docs[3][1] == long_doc + 'method.'


def test_embedded_corpus():
  docs = embedded.embedded_documents()
  ids = [d[0] for d in docs]
  assert len(set(ids)) == len(ids)
  topics = [d for d in docs if d[0].startswith('pydoc:')]
  docstrings = [d for d in docs if d[0].startswith('stdlib:')]
  assert len(topics) + len(docstrings) == len(docs)
  assert 'pydoc:assert' in ids and 'stdlib:json/__init__.py:<module>' in ids
  assert len(topics) >= 50 and sum(len(t) for _, t in topics) > 300_000
  assert len(docstrings) >= 1000 and all(len(t) >= embedded.MIN_DOCSTRING_CHARS for _, t in docstrings)
  files = [i.split(':')[1] for i in ids[len(topics):]]
  assert files == sorted(files)
  assert not any(part in embedded.SKIPPED_DIRS for f in files for part in f.split('/'))
  assert embedded.embedded_documents() == docs
  assert embedded.corpus_fingerprint(docs) == embedded.corpus_fingerprint(list(docs))
  assert embedded.corpus_fingerprint(docs[:-1]) != embedded.corpus_fingerprint(docs)
