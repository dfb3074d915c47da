"""SeqIO tasks and mixtures over the user's own text or JSONL files, configurable from gin.

In a gin file (after ``data/seqio.gin``, which reads the task named by ``TASK``), e.g.::

  TASK = @register_local_files_task()
  register_local_files_task.name = 'my_corpus'
  register_local_files_task.paths = [
      {'glob': '/data/books/*.txt', 'format': 'blank_line', 'source': 'books'},
      {'path': '/data/pubmed.jsonl.gz', 'format': 'jsonl', 'text_fields': ('title', 'abstract'), 'source': 'pubmed'},
      '/data/web.txt',
  ]

``@register_local_files_task()`` registers the task when the binding is resolved and evaluates to its name; every
script resolves such registrations (``bliss_jax.cli``), so ``scripts/evaluate.py --heldout my_corpus:validation``
finds it too. A path is read with the task-wide ``format`` / ``text_fields``; a dict gives a file (``path``) or a
glob of files (``glob``) its own format, fields and ``source`` name (``bliss_jax.data.file_specs``), the label its
documents' ids begin with. ``register_local_mixture`` makes each source a task of its own and mixes them (by size
or given rates), the sources' names being their labels in the composition report, some of them marked target-like.
"""
from typing import Iterator, Optional, Sequence, Tuple

import gin

from bliss_jax.data import file_specs
from bliss_jax.data import local_mixture
from bliss_jax.data import seqio_tasks
from bliss_jax.data import sources
from bliss_jax.data import vocabulary as vocabulary_lib


def read_documents(paths: Sequence[file_specs.Entry],
                   format: str = 'text',  # pylint: disable=redefined-builtin
                   text_fields: Sequence[str] = ('text',),
                   template: Optional[str] = None) -> Iterator[Tuple[str, str]]:
  """Yields the ``(doc_id, text)`` documents of ``paths`` (paths or per-file / per-glob entries,
  ``file_specs.expand``) in order.

  ``format``: ``'text'`` (one document per non-empty line), ``'blank_line'`` (paragraphs) or ``'jsonl'``, for the
  entries that give none.
  """
  return file_specs.read_documents(file_specs.expand(paths, format, text_fields, template))


def _check_files(files: Sequence[file_specs.FileSource], name: str) -> None:
  """Each file has a first document (read now, so a bad file fails at registration, not at the first batch)."""
  for f in files:
    try:
      first = next(iter(f.documents()), None)
    except sources.MissingFieldError as e:
      raise ValueError(f"{e}: bind the fields to read, register_local_files_task.text_fields = {e.fields[:2]} (or "
                       f"the file entry's 'text_fields'), for task {name!r}") from None
    if first is None:
      raise ValueError(f'{f.path}: no documents in it (an empty file, or only blank lines), for task {name!r}')


def _vocabulary(vocabulary_path: Optional[str], extra_ids: int):
  if vocabulary_path is None:
    return vocabulary_lib.default_vocabulary(extra_ids=extra_ids)
  return vocabulary_lib.load_path(vocabulary_path, extra_ids=extra_ids)


@gin.configurable
def register_local_files_task(name: str = gin.REQUIRED,
                              paths: Sequence[file_specs.Entry] = gin.REQUIRED,
                              format: str = 'text',  # pylint: disable=redefined-builtin
                              text_fields: Sequence[str] = ('text',),
                              vocabulary_path: Optional[str] = None,
                              *,
                              template: Optional[str] = None,
                              validation_fraction: float = seqio_tasks.DEFAULT_VALIDATION_FRACTION,
                              objective: str = 'lm',
                              extra_ids: int = vocabulary_lib.DEFAULT_EXTRA_IDS) -> str:
  """Registers (or re-registers) the task ``name`` over the documents of ``paths``; returns ``name``.

  Args:
    name: the task name.
    paths: text or JSONL files (optionally ``.gz``), or per-file / per-glob entries with their own format, fields
      and source name (``file_specs.expand``). Ids are ``<label>:<index or id>``, the label being an entry's
      ``source`` or the file's stem (``<label>:<stem>:...`` where a label names several files); two files that
      would share ids are refused, naming both.
    format: ``'text'``, ``'blank_line'`` or ``'jsonl'``, for the entries that give none.
    text_fields: JSONL fields joined into the text, for the entries that give none.
    vocabulary_path: a T5-convention SentencePiece model, or a Hugging Face tokenizer directory (an imported
      MODEL_DIR's ``tokenizer/``; ``extra_ids`` does not apply); None for ``default_vocabulary()``.
    template: JSONL only: ``template.format(**record)`` instead of ``text_fields``.
    validation_fraction: expected fraction of documents held out (by id hash) as ``validation``.
    objective: ``'lm'`` or ``'prefix_lm'``.
    extra_ids: sentinel ids appended to the vocabulary.

  Raises:
    FileNotFoundError: a path (or the vocabulary) does not exist, or a glob matches no file, checked at registration.
    ValueError: a malformed entry, two files that would share ids; a file has no documents, or its first document
      cannot be read (not UTF-8, corrupt gzip, bad JSON, a missing field).
  """
  files = file_specs.expand(paths, format, text_fields, template)
  _check_files(files, name)
  vocabulary = _vocabulary(vocabulary_path, extra_ids)
  seqio_tasks.register_document_task(
      name, lambda: file_specs.read_documents(files), vocabulary, validation_fraction, objective=objective)
  return name


@gin.configurable
def register_local_mixture(name: str = gin.REQUIRED,
                           paths: Sequence[file_specs.Entry] = gin.REQUIRED,
                           rates: local_mixture.Rates = local_mixture.NATURAL,
                           target_like: Sequence[str] = (),
                           vocabulary_path: Optional[str] = None,
                           *,
                           validation_fraction: float = seqio_tasks.DEFAULT_VALIDATION_FRACTION,
                           objective: str = 'lm',
                           extra_ids: int = vocabulary_lib.DEFAULT_EXTRA_IDS) -> str:
  """Registers (or re-registers) a task per source of ``paths`` (``f'{name}_{source}'``) and the mixture ``name`` of
  them (``bliss_jax.data.local_mixture``); returns ``name``.

  The sources are the files' labels: an entry's ``source``, else the file's stem (``file_specs.expand``); each
  source's name is its label in the composition report (``compare.composition = 'local_mixture'``).

  Args:
    name: the mixture's name.
    paths: as ``register_local_files_task``'s, except that an entry without a format is read by its file's name
      (``.jsonl``/``.jsonl.gz``: JSONL with the field ``text``; otherwise a document per line): each source's entries
      give their own format and fields.
    rates: ``'natural'`` (each source in proportion to its characters) or ``{source: rate}`` for every source (a rate
      of 0 leaves a source out of the mixture; its task stays registered).
    target_like: the sources like the target data: the composition report's target-like share.
    vocabulary_path / validation_fraction / objective / extra_ids: as ``register_local_files_task``'s.

  Raises:
    As ``register_local_files_task``; ValueError: a source name that cannot be part of a task name, an unknown
    target-like source, rates that do not name every source.
  """
  files = file_specs.expand(paths, format=None)
  _check_files(files, name)
  local_mixture.register(name, files, _vocabulary(vocabulary_path, extra_ids), rates, target_like,
                         validation_fraction, objective=objective)
  return name
