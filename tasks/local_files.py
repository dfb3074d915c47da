"""A SeqIO task over the user's own text or JSONL files, configurable from gin.

In a gin file, bind the arguments and let a configurable that takes a task name call it, e.g.::

  register_local_files_task.name = 'my_corpus'
  register_local_files_task.paths = ['/data/a.txt', '/data/b.jsonl.gz']
  register_local_files_task.format = 'jsonl'
  train.mixture_or_task_name = @register_local_files_task()

``@register_local_files_task()`` registers the task when the binding is resolved and evaluates to its name.
"""
import itertools
from typing import Iterator, Optional, Sequence, Tuple

import gin

from bliss_jax.data import seqio_tasks
from bliss_jax.data import sources
from bliss_jax.data import vocabulary as vocabulary_lib

FORMATS = ('text', 'blank_line', 'jsonl')


def read_documents(paths: Sequence[str],
                   format: str = 'text',  # pylint: disable=redefined-builtin
                   text_fields: Sequence[str] = ('text',),
                   template: Optional[str] = None) -> Iterator[Tuple[str, str]]:
  """Yields the ``(doc_id, text)`` documents of ``paths`` in order (see ``bliss_jax.data.sources``).

  ``format``: ``'text'`` (one document per non-empty line), ``'blank_line'`` (paragraphs) or ``'jsonl'``.
  """
  if format not in FORMATS:
    raise ValueError(f'format must be one of {FORMATS}, got {format!r}')
  readers = []
  for path in paths:
    if format == 'jsonl':
      readers.append(sources.read_jsonl_documents(path, text_fields, template))
    else:
      readers.append(sources.read_text_documents(path, 'line' if format == 'text' else 'blank_line'))
  return itertools.chain.from_iterable(readers)


@gin.configurable
def register_local_files_task(name: str = gin.REQUIRED,
                              paths: Sequence[str] = gin.REQUIRED,
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
    paths: text or JSONL files (optionally ``.gz``); ids are ``<file stem>:<index or id>``, so two files
      must not share a stem.
    format: ``'text'``, ``'blank_line'`` or ``'jsonl'``, for all ``paths``.
    text_fields: JSONL fields joined into the text.
    vocabulary_path: a T5-convention SentencePiece model, or a Hugging Face tokenizer directory (an imported
      MODEL_DIR's ``tokenizer/``; ``extra_ids`` does not apply); None for ``default_vocabulary()``.
    template: JSONL only: ``template.format(**record)`` instead of ``text_fields``.
    validation_fraction: expected fraction of documents held out (by id hash) as ``validation``.
    objective: ``'lm'`` or ``'prefix_lm'``.
    extra_ids: sentinel ids appended to the vocabulary.

  Raises:
    FileNotFoundError: a path (or the vocabulary) does not exist, checked at registration.
    ValueError: a file has no documents, or its first document cannot be read (not UTF-8, corrupt gzip, bad JSON).
  """
  paths = list(paths)
  for path in paths:  # Fail at registration, not at the first batch.
    if next(iter(read_documents([path], format, text_fields, template)), None) is None:
      raise ValueError(f'{path}: no documents in it (an empty file, or only blank lines), for task {name!r}')
  if vocabulary_path is None:
    vocabulary = vocabulary_lib.default_vocabulary(extra_ids=extra_ids)
  else:
    vocabulary = vocabulary_lib.load_path(vocabulary_path, extra_ids=extra_ids)
  documents_fn = lambda: read_documents(paths, format, text_fields, template)
  seqio_tasks.register_document_task(
      name, documents_fn, vocabulary, validation_fraction, objective=objective)
  return name
