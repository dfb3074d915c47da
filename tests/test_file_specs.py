"""Tests for bliss_jax.data.file_specs: per-file and per-glob entries, labels, id prefixes and their errors."""
import gzip
import json

import pytest

from bliss_jax.data import file_specs


@pytest.fixture
def corpus(tmp_path):
  """books/{a,b}.txt (paragraphs), pubmed.jsonl.gz (title + abstract), web.txt (lines), other/web.txt."""
  (tmp_path / 'books').mkdir()
  (tmp_path / 'books' / 'a.txt').write_text('para one\nline two\n\npara two\n')
  (tmp_path / 'books' / 'b.txt').write_text('only para\n')
  with gzip.open(tmp_path / 'pubmed.jsonl.gz', 'wt') as f:
    f.write(json.dumps({'id': 'p7', 'title': 'Title', 'abstract': 'Abstract.'}) + '\n')
  (tmp_path / 'web.txt').write_text('web one\nweb two\n')
  (tmp_path / 'other').mkdir()
  (tmp_path / 'other' / 'web.txt').write_text('other web\n')
  return tmp_path


def _docs(entries, **defaults):
  return list(file_specs.read_documents(file_specs.expand(entries, **defaults)))


def test_per_file_and_per_glob_formats_fields_and_labels(corpus):
  entries = [{'glob': str(corpus / 'books' / '*.txt'), 'format': 'blank_line', 'source': 'books'},
             {'path': str(corpus / 'pubmed.jsonl.gz'), 'format': 'jsonl', 'text_fields': ('title', 'abstract'),
              'source': 'pubmed'},
             str(corpus / 'web.txt')]
  files = file_specs.expand(entries)
  assert [(f.label, f.prefix, f.format) for f in files] == [
      ('books', 'books:a', 'blank_line'), ('books', 'books:b', 'blank_line'), ('pubmed', 'pubmed', 'jsonl'),
      ('web', 'web', 'text')]
  assert _docs(entries) == [('books:a:0', 'para one\nline two'), ('books:a:1', 'para two'), ('books:b:0', 'only para'),
                            ('pubmed:p7', 'Title\n\nAbstract.'), ('web:0', 'web one'), ('web:1', 'web two')]


def test_plain_paths_keep_their_stem_ids_and_the_task_wide_format(corpus):
  assert _docs([str(corpus / 'web.txt'), str(corpus / 'books' / 'a.txt')], format='blank_line') == [
      ('web:0', 'web one\nweb two'), ('a:0', 'para one\nline two'), ('a:1', 'para two')]
  # format=None: each file by its name
  assert [f.format for f in file_specs.expand([str(corpus / 'pubmed.jsonl.gz'), str(corpus / 'web.txt')],
                                              format=None)] == ['jsonl', 'text']
  assert file_specs.expand(str(corpus / 'web.txt'))[0].prefix == 'web'  # one entry alone


def test_a_glob_matching_nothing_is_an_error_naming_it(corpus):
  with pytest.raises(FileNotFoundError, match=r"glob '.*/books/\*\.md' matches no file"):
    file_specs.expand([{'glob': str(corpus / 'books' / '*.md')}])
  with pytest.raises(FileNotFoundError, match='nope.txt'):
    file_specs.expand([str(corpus / 'nope.txt')])


def test_files_sharing_a_stem_are_refused_naming_both_unless_given_sources(corpus):
  a, b = str(corpus / 'web.txt'), str(corpus / 'other' / 'web.txt')
  with pytest.raises(ValueError, match=f"{a} and {b} would give documents the same ids .*'source' names"):
    file_specs.expand([a, b])
  assert [i for i, _ in _docs([{'path': a, 'source': 'web_a'}, {'path': b, 'source': 'web_b'}])] == [
      'web_a:0', 'web_a:1', 'web_b:0']
  # one source over both files: the stem tells them apart, and here the stems clash again
  with pytest.raises(ValueError, match="same ids \\('web:web'"):
    file_specs.expand([{'path': a, 'source': 'web'}, {'path': b, 'source': 'web'}])
  with pytest.raises(ValueError, match='listed twice'):
    file_specs.expand([a, {'glob': str(corpus / '*.txt')}])


@pytest.mark.parametrize('entry, message', [
    ({'path': 'x', 'glob': 'y'}, 'exactly one of'),
    ({'format': 'text'}, 'exactly one of'),
    ({'path': 'x', 'fields': ('a',)}, r"unknown key\(s\) \['fields'\]"),
    ({'path': 'x', 'source': 'a:b'}, 'source .* must be letters'),
    (3, 'expected a path or a dict'),
])
def test_malformed_entries_are_refused(entry, message):
  with pytest.raises(ValueError, match=message):
    file_specs.expand([entry])


def test_jsonl_settings_on_a_text_file_and_unknown_formats_are_refused(corpus):
  with pytest.raises(ValueError, match='text_fields and template apply to jsonl files'):
    file_specs.expand([{'path': str(corpus / 'web.txt'), 'text_fields': ('a',)}])
  with pytest.raises(ValueError, match="format='csv'"):
    file_specs.expand([{'path': str(corpus / 'web.txt'), 'format': 'csv'}])
  # a single field given as a string is that field, not its letters
  assert file_specs.expand([{'path': str(corpus / 'pubmed.jsonl.gz'), 'text_fields': 'title'}],
                           format=None)[0].text_fields == ('title',)
