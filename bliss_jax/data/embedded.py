"""The embedded default corpus: English text that ships with every Python installation.

Two sources, read without any download and without importing the modules they describe:

* ``pydoc_data.topics.topics``: the interactive-help texts of the language reference (``pydoc:<topic>``);
* docstrings of modules, classes and functions in the standard library's ``.py`` files, parsed with ``ast``
  (``stdlib:<relative/path.py>:<QualName>``, ``<module>`` for the module docstring), at least
  ``MIN_DOCSTRING_CHARS`` characters long, in sorted file order.

The corpus is small (about 80 topics, 0.5 MB, plus about 2,200 docstrings, 1.2 MB, on CPython 3.11) and depends
on the Python version, so everything derived from it (vocabularies, caches) is keyed by a hash of its content.
"""
import ast
import functools
import gc
import hashlib
import os
import sysconfig
from typing import Iterator, List, Optional, Tuple

MIN_DOCSTRING_CHARS = 200
SKIPPED_DIRS = frozenset(
    {'test', 'tests', 'idlelib', 'lib2to3', 'turtledemo', 'site-packages', '__pycache__'})

Document = Tuple[str, str]


def pydoc_topic_documents() -> List[Document]:
  """Returns the interactive-help topics as ``('pydoc:<topic>', text)``, sorted by topic."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  return [(f'pydoc:{name}', text) for name, text in sorted(topics.topics.items()) if text.strip()]


def stdlib_files(stdlib_dir: str) -> List[str]:
  """Sorted relative paths of the ``.py`` files under ``stdlib_dir`` outside ``SKIPPED_DIRS``."""
  paths = []
  for root, dirs, files in os.walk(stdlib_dir):
    dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
    for name in files:
      if name.endswith('.py'):
        paths.append(os.path.relpath(os.path.join(root, name), stdlib_dir).replace(os.sep, '/'))
  return sorted(paths)


def _docstrings(tree: ast.Module) -> Iterator[Tuple[str, str]]:
  """Yields ``(qualified_name, docstring)`` of a module and its classes and functions, in source order."""
  doc = ast.get_docstring(tree)
  if doc:
    yield '<module>', doc

  def visit(node: ast.AST, prefix: str) -> Iterator[Tuple[str, str]]:
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        name = f'{prefix}{child.name}'
        doc = ast.get_docstring(child)
        if doc:
          yield name, doc
        yield from visit(child, f'{name}.')

  yield from visit(tree, '')


def stdlib_docstring_documents(stdlib_dir: Optional[str] = None,
                               min_chars: int = MIN_DOCSTRING_CHARS) -> List[Document]:
  """Returns docstrings of at least ``min_chars`` characters as ``('stdlib:<path>:<QualName>', text)``.

  Files that do not parse (e.g. templates or files for another Python version) are skipped. Repeated
  qualified names in one file (e.g. a function defined in both branches of an ``if``) keep the first.
  """
  stdlib_dir = stdlib_dir or sysconfig.get_paths()['stdlib']
  documents = []
  # Parsing allocates millions of (acyclic) AST nodes; with TensorFlow's object graph in memory, the cyclic
  # garbage collector's passes over it triple the parse time (1 s -> 3 s), so it is paused meanwhile.
  gc_was_enabled = gc.isenabled()
  gc.disable()
  try:
    for rel_path in stdlib_files(stdlib_dir):
      try:
        with open(os.path.join(stdlib_dir, rel_path), 'rb') as f:
          tree = ast.parse(f.read(), filename=rel_path)
      except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
        continue
      seen = set()
      for name, doc in _docstrings(tree):
        if len(doc) >= min_chars and name not in seen:
          seen.add(name)
          documents.append((f'stdlib:{rel_path}:{name}', doc))
  finally:
    if gc_was_enabled:
      gc.enable()
  return documents


@functools.lru_cache(maxsize=None)
def _embedded_documents() -> Tuple[Document, ...]:
  return tuple(pydoc_topic_documents() + stdlib_docstring_documents())


def embedded_documents() -> List[Document]:
  """Returns the embedded default corpus as ``(doc_id, text)`` pairs: pydoc topics, then stdlib docstrings."""
  return list(_embedded_documents())


def corpus_fingerprint(documents: List[Document]) -> str:
  """Returns the SHA-256 hex digest of the ids and texts of ``documents``, in order."""
  h = hashlib.sha256()
  for doc_id, text in documents:
    for part in (doc_id, text):
      data = part.encode('utf-8')
      h.update(len(data).to_bytes(8, 'little'))
      h.update(data)
  return h.hexdigest()
