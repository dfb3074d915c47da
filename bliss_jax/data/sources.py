"""Document readers: local text and JSONL files as ``(doc_id, text)`` pairs in a deterministic order.

Every document gets a stable id ``f'{source_name}:{key}'``, where ``source_name`` defaults to the file stem
(``war_and_peace.txt`` -> ``war_and_peace``, ``sample.jsonl.gz`` -> ``sample``) and ``key`` is the document's
index in the file (0-based, counting documents, not lines) or, for JSONL records that carry one, their own
``id`` field. Reading the same file twice gives the same ids in the same order, so scores and selections
computed on ids map back to documents.
"""
import gzip
import json
import os
import zlib
from typing import Any, Iterator, Mapping, Optional, Sequence, Tuple

from bliss_jax.choices import check_choice

Document = Tuple[str, str]
DOC_SEPARATORS = ('line', 'blank_line')


def source_name_from_path(path: str) -> str:
  """Returns the file name without its directory and its ``.gz``, ``.jsonl``, ``.json``, ``.txt`` suffixes."""
  name = os.path.basename(path)
  if name.endswith('.gz'):
    name = name[:-len('.gz')]
  for suffix in ('.jsonl', '.json', '.txt'):
    if name.endswith(suffix):
      return name[:-len(suffix)]
  return os.path.splitext(name)[0]


def _text_lines(path: str) -> Iterator[Tuple[int, str]]:
  """``(line number, line)`` of a UTF-8 text file, read through gzip when its name ends in ``.gz``; a file that is
  not UTF-8 text or not (complete) gzip raises ``ValueError`` naming the file and line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'document file not found: {path}')
  opener = gzip.open if path.endswith('.gz') else open
  line_number = 0
  try:
    with opener(path, 'rt', encoding='utf-8', newline='') as f:
      for line_number, line in enumerate(f, start=1):
        yield line_number, line
  except UnicodeDecodeError as e:
    raise ValueError(f'{path}:{line_number + 1}: not UTF-8 text ({e.reason} at byte {e.start} of the line or '
                     'block); is it a binary file?') from None
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise ValueError(f'{path}: a corrupt or truncated gzip file after line {line_number} ({e})') from None


def _strip_line_end(line: str) -> str:
  return line.rstrip('\r\n')


def read_text_documents(path: str,
                        doc_separator: str = 'line',
                        source_name: Optional[str] = None) -> Iterator[Document]:
  """Yields the documents of a text file (optionally ``.gz``) as ``(doc_id, text)``.

  Args:
    path: a ``.txt`` (or any text) file, gzip-compressed when its name ends in ``.gz``.
    doc_separator: ``'line'``: each non-empty line (without its line end) is a document; ``'blank_line'``:
      maximal runs of non-blank lines are documents (paragraphs), joined with ``'\\n'``. Lines containing
      only whitespace count as blank; a line's own leading/trailing spaces are kept.
    source_name: the id prefix; defaults to the file stem.

  Yields:
    ``(f'{source_name}:{i}', text)`` for the i-th document (0-based).

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: unknown ``doc_separator``; the file is not UTF-8 text or a complete gzip file (naming file and line).
  """
  check_choice('doc_separator', doc_separator, DOC_SEPARATORS)
  source_name = source_name or source_name_from_path(path)
  index = 0
  lines = (_strip_line_end(line) for _, line in _text_lines(path))
  if doc_separator == 'line':
    for line in lines:
      if line.strip():
        yield f'{source_name}:{index}', line
        index += 1
    return
  paragraph = []
  for line in lines:
    if line.strip():
      paragraph.append(line)
    elif paragraph:
      yield f'{source_name}:{index}', '\n'.join(paragraph)
      index += 1
      paragraph = []
  if paragraph:
    yield f'{source_name}:{index}', '\n'.join(paragraph)


class MissingFieldError(ValueError):
  """A JSONL record lacks a text field: ``path``, ``line``, the ``field`` asked for and the record's own ``fields``."""

  def __init__(self, path: str, line: int, field: str, fields: Sequence[str]):
    super().__init__(f'{path}:{line}: record has no field {field!r} (its fields: {", ".join(fields) or "none"})')
    self.path, self.line, self.field, self.fields = path, line, field, tuple(fields)


def _record_text(record: Mapping[str, Any], text_fields: Sequence[str], template: Optional[str],
                 field_separator: str) -> str:
  if template is not None:
    return template.format(**record)
  return field_separator.join(str(record[field]) for field in text_fields)


def read_jsonl_documents(path: str,
                         text_fields: Sequence[str] = ('text',),
                         template: Optional[str] = None,
                         *,
                         field_separator: str = '\n\n',
                         id_field: Optional[str] = 'id',
                         source_name: Optional[str] = None) -> Iterator[Document]:
  """Yields the records of a JSONL file (optionally ``.gz``) as ``(doc_id, text)``.

  Args:
    path: a ``.jsonl`` or ``.jsonl.gz`` file, one JSON object per line; blank lines are skipped.
    text_fields: the record fields whose values, joined with ``field_separator``, form the text, e.g.
      ``('question', 'answer')`` for GSM8K or ``('text', 'code')`` for MBPP.
    template: if given, the text is ``template.format(**record)`` and ``text_fields`` is ignored.
    field_separator: joins the values of several ``text_fields``.
    id_field: the record field holding the document's own id; when a record lacks it (or ``id_field`` is
      None) its row index (0-based, over non-blank lines) is used.
    source_name: the id prefix; defaults to the file stem.

  Yields:
    ``(f'{source_name}:{record[id_field] or row_index}', text)`` for every record, in file order, including
    records with empty text (they yield no training examples downstream), so counts match the file's rows.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    MissingFieldError: a record lacks a text field (a ``ValueError`` naming the record's fields).
    ValueError: a line is not a JSON object; the file is not UTF-8 text or a complete gzip
      file (the message names file and line).
  """
  source_name = source_name or source_name_from_path(path)
  for row, (line_number, record) in enumerate(jsonl_records(path)):
    try:
      text = _record_text(record, text_fields, template, field_separator)
    except (KeyError, IndexError) as e:
      raise MissingFieldError(path, line_number, e.args[0] if e.args else '?', list(record)) from e
    key = record[id_field] if id_field and id_field in record else row
    yield f'{source_name}:{key}', text


def jsonl_records(path: str, error: type = ValueError) -> Iterator[Tuple[int, dict]]:
  """``(line number, record)`` for each non-blank line of a JSONL file (optionally ``.gz``); a line that is not a
  JSON object raises ``error`` naming the file and line (``path:line: ...``)."""
  for line_number, line in _text_lines(path):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise error(f'{path}:{line_number}: invalid JSON: {e.msg}') from None
    if not isinstance(record, dict):
      raise error(f'{path}:{line_number}: expected a JSON object, got {type(record).__name__}')
    yield line_number, record
