"""Which local files a corpus reads and how: plain paths, or per-file / per-glob entries with their own format, JSONL
text fields and source name, expanded to one ``FileSource`` per file with a document-id prefix unique in the corpus.

An entry is a path (read with the defaults given to ``expand``), or a dict::

  {'path': '/data/pubmed.jsonl.gz', 'format': 'jsonl', 'text_fields': ('title', 'abstract'), 'source': 'pubmed'}
  {'glob': '/data/books/*.txt', 'format': 'blank_line', 'source': 'books'}

with exactly one of ``path`` / ``glob`` (``**`` matches across directories; the matches are taken in sorted order)
and optionally ``format`` (``FORMATS``; None or absent: the default, which when None is the file name's, see
``format_from_name``), ``text_fields`` and ``template`` (JSONL only, as in ``sources.read_jsonl_documents``) and
``source``. A file's **label** is its entry's ``source``, else its stem (``sources.source_name_from_path``); the
label is the first component of its documents' ids, so a composition by id prefix (``composition.doc_prefix_labellers``)
counts by label. A label that names one file gives ids ``<label>:<key>``; one that names several files (a glob, or
entries sharing a ``source``) gives ``<label>:<stem>:<key>``. ``key`` is the document's index or JSONL id
(``bliss_jax.data.sources``). Two files that would share a prefix, a file listed twice, and a glob that matches
nothing are errors naming them.
"""
import dataclasses
import glob as glob_lib
import itertools
import os
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from bliss_jax.choices import check_choice
from bliss_jax.data import sources

FORMATS = ('text', 'blank_line', 'jsonl')
ENTRY_KEYS = ('path', 'glob', 'format', 'text_fields', 'template', 'source')
Entry = Union[str, Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class FileSource:
  """One file of a corpus and how to read it.

  Attributes:
    path: the file.
    format: ``'text'`` (a document per non-empty line), ``'blank_line'`` (paragraphs) or ``'jsonl'``.
    text_fields / template: how a JSONL record becomes its text (``sources.read_jsonl_documents``).
    label: the source it belongs to (its entry's ``source``, else its stem).
    prefix: its documents' ids are ``f'{prefix}:{key}'``.
  """
  path: str
  format: str
  text_fields: Tuple[str, ...]
  template: Optional[str]
  label: str
  prefix: str

  def documents(self) -> Iterator[sources.Document]:
    """The file's ``(doc_id, text)`` documents in order."""
    if self.format == 'jsonl':
      return sources.read_jsonl_documents(self.path, self.text_fields, self.template, source_name=self.prefix)
    return sources.read_text_documents(self.path, 'line' if self.format == 'text' else 'blank_line',
                                       source_name=self.prefix)


def format_from_name(path: str) -> str:
  """``'jsonl'`` for a ``.jsonl`` / ``.jsonl.gz`` file, else ``'text'``."""
  return 'jsonl' if path.endswith(('.jsonl', '.jsonl.gz')) else 'text'


def _entry_dict(entry: Entry) -> Dict[str, Any]:
  if isinstance(entry, str):
    return {'path': entry}
  if not isinstance(entry, Mapping):
    raise ValueError(f'file entry {entry!r}: expected a path or a dict with a "path" or a "glob"')
  unknown = sorted(set(entry) - set(ENTRY_KEYS))
  if unknown:
    raise ValueError(f'file entry {dict(entry)}: unknown key(s) {unknown}; known: {list(ENTRY_KEYS)}')
  if ('path' in entry) == ('glob' in entry):
    raise ValueError(f'file entry {dict(entry)}: give exactly one of "path" and "glob"')
  source = entry.get('source')
  if source is not None and not re.fullmatch(r'[A-Za-z0-9_.-]+', str(source)):
    raise ValueError(f'file entry {dict(entry)}: source {source!r} must be letters, digits, "_", "." or "-" (it '
                     'begins every document id)')
  return dict(entry)


def _entry_files(entry: Mapping[str, Any]) -> List[str]:
  """The files an entry names: its path (which must exist), or its glob's matches (at least one) in sorted order."""
  if 'path' in entry:
    if not os.path.isfile(entry['path']):
      raise FileNotFoundError(f'document file not found: {entry["path"]}')
    return [entry['path']]
  matches = sorted(p for p in glob_lib.glob(entry['glob'], recursive=True) if os.path.isfile(p))
  if not matches:
    raise FileNotFoundError(f'glob {entry["glob"]!r} matches no file')
  return matches


def _as_fields(text_fields: Union[str, Sequence[str]]) -> Tuple[str, ...]:
  return (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)


def expand(entries: Union[Entry, Sequence[Entry]],
           format: Optional[str] = 'text',  # pylint: disable=redefined-builtin
           text_fields: Union[str, Sequence[str]] = ('text',),
           template: Optional[str] = None,
           *,
           unique_ids: bool = True) -> List[FileSource]:
  """The files of ``entries`` (module docstring), in entry order, with their format, fields, label and id prefix.

  ``format``, ``text_fields`` and ``template`` are the defaults of entries that do not give their own; ``format=None``
  reads each file by its name (``format_from_name``). ``unique_ids=False`` accepts files that would share id
  prefixes (for readers of the texts alone, such as a tokenizer's trainer).

  Raises:
    FileNotFoundError: a path does not exist, or a glob matches no file (naming it).
    ValueError: an entry is malformed (an unknown key, both or neither of path and glob, a bad source name, an unknown
      format, JSONL fields on a text file); a file is listed twice; two files would share an id prefix (naming both).
  """
  if isinstance(entries, (str, Mapping)):
    entries = [entries]
  files: List[Tuple[str, Dict[str, Any]]] = []
  for entry in map(_entry_dict, entries):
    files += [(path, entry) for path in _entry_files(entry)]
  seen: Dict[str, str] = {}
  for path, _ in files:
    real = os.path.realpath(path)
    if real in seen:
      raise ValueError(f'{path} is listed twice (also as {seen[real]}): its documents would be read twice')
    seen[real] = path
  labels = [entry.get('source') or sources.source_name_from_path(path) for path, entry in files]
  per_label = {label: labels.count(label) for label in labels}
  out, by_prefix = [], {}
  for (path, entry), label in zip(files, labels):
    fmt = entry.get('format', format) or format_from_name(path)
    check_choice('format', fmt, FORMATS)
    if fmt != 'jsonl' and ('text_fields' in entry or 'template' in entry):
      raise ValueError(f'file entry {entry}: text_fields and template apply to jsonl files, and {path} is read as '
                       f'{fmt!r}')
    prefix = label if per_label[label] == 1 else f'{label}:{sources.source_name_from_path(path)}'
    if prefix in by_prefix and unique_ids:
      raise ValueError(f'{by_prefix[prefix]} and {path} would give documents the same ids ({prefix!r}:<index>): give '
                       "their entries different 'source' names, e.g. {'path': ..., 'source': ...}")
    by_prefix[prefix] = path
    out.append(FileSource(path=path, format=fmt, text_fields=_as_fields(entry.get('text_fields', text_fields)),
                          template=entry.get('template', template), label=label, prefix=prefix))
  return out


def read_documents(files: Sequence[FileSource]) -> Iterator[sources.Document]:
  """The ``(doc_id, text)`` documents of ``files`` (``expand``'s), file after file."""
  return itertools.chain.from_iterable(f.documents() for f in files)
