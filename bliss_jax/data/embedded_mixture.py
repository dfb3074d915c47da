"""The embedded mixture: a labelled corpus made of what every Python installation carries, with junk made from it.

Documents, by domain (ids ``<domain>:<source id>``; a corrupted copy is ``synthetic_<kind>:<original id>``)
  ``docs``: the embedded default corpus (``embedded``): pydoc topics (``docs:pydoc:<topic>``) and standard-library
    docstrings (``docs:stdlib:<path>:<QualName>``).
  ``code``: standard-library ``.py`` files (outside ``embedded.SKIPPED_DIRS``), blank-line blocks merged up to
    ``doc_chars`` (``code:<path>:<i>``).
  ``licence``: the standard library's ``LICENSE.txt`` (what the ``license`` builtin prints), paragraphs merged up to
    ``doc_chars``, and the ``copyright`` builtin's text (``licence:<name>:<i>``).
  ``test_data``: text files under the standard library's ``test/`` (e-mails, decimal test vectors, certificates,
    ...), lines merged up to ``doc_chars`` (``test_data:<path>:<i>``).

A Python without ``LICENSE.txt`` or without ``test/`` (some distributions ship them apart) simply has no such documents.
Code and test data are capped: files are taken in a seeded hash order, at most ``max_docs_per_file`` documents each,
until ``code_chars`` (``test_data_chars``) characters are reached.

Labels, as the benchmark catalog's (``data.benchmark.catalog``): ``domain`` as above; ``quality`` ``'clean'`` for
originals, ``f'synthetic_{kind}'`` for the corrupted copies (``SYNTHETIC_KINDS``: shuffled words, character noise,
repeated-line spam; ``data.benchmark.corruptions``), which keep their original's domain; *target* = clean ``docs``.

Splits (``u`` = a seeded hash of a document's group, uniform on [0, 1))
  A docs document's group is its source: the pydoc topic, or the standard-library file its docstring is in.
  ``u < heldout_fraction`` -> ``heldout`` (clean prose never trained on: the comparison's held-out set);
  ``< + reference_fraction`` -> ``reference`` (clean prose: the reference set); ``< + validation_fraction`` ->
  ``validation`` (the mixture's own held-out split); else ``train`` (the stream and the candidate pool). The code
  of a file is in its file's split, and the code of ``heldout`` and ``reference`` files is left out, so no text of
  those files (their docstrings are in their code) appears in any other split. Licence and test-data documents
  are their own groups: ``validation`` with probability ``validation_fraction``, else ``train``. A corrupted copy has
  its original's split; each docs document of ``train`` and ``validation`` gets one with probability
  ``synthetic_fraction``, of a kind drawn by another hash, made with a ``random.Random`` seeded by a hash of
  ``(seed, kind, id)`` (``corruptions.corrupted_copy``): the same Python gives the same texts on every machine. A
  ``heldout`` (``reference``) document whose text occurs verbatim in a document trained on (in ``train``,
  ``validation`` or, for ``heldout``, ``reference``) is left out.

The documents depend on the Python version (every derived cache is keyed by the content, as the default vocabulary
is by ``embedded.corpus_fingerprint``); they are built once per process and config, on first use (about 2 s).
"""
import builtins
import dataclasses
import functools
import os
import sysconfig
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from bliss_jax.data import embedded
from bliss_jax.data.benchmark.corruptions import corrupted_copy, unit_hash
from bliss_jax.data.benchmark.cutters import merge_units, normalize_text, paragraphs
from bliss_jax.data.benchmark.documents import BenchmarkDocument

DOCS, CODE, LICENCE, TEST_DATA = 'docs', 'code', 'licence', 'test_data'
DOMAINS = (DOCS, CODE, LICENCE, TEST_DATA)
CLEAN = 'clean'
SYNTHETIC_KINDS = ('shuffled_words', 'char_noise', 'repeated_lines')
SPLITS = ('train', 'validation', 'reference', 'heldout')
TEST_DATA_EXTENSIONS = ('.txt', '.decTest', '.html', '.xml', '.json', '.pem', '.types', '.c', '.cfg', '.ini', '.toml',
                        '.expected', '.rst', '.csv')
LICENCE_FILES = ('LICENSE.txt', 'LICENSE')


@dataclasses.dataclass(frozen=True)
class EmbeddedMixtureConfig:
  """How the installation's files become documents and splits (see the module docstring).

  Attributes:
    stdlib_dir: the standard library's directory (None: this Python's, ``sysconfig``).
    seed: seeds the split hashes, the order files are taken in and the corrupted copies.
    heldout_fraction / reference_fraction / validation_fraction: expected fractions of docs groups in ``heldout``,
      ``reference`` and ``validation`` (``validation_fraction`` also of licence and test-data documents).
    synthetic_fraction: probability that a docs document of ``train`` or ``validation`` gets a corrupted copy.
    code_chars / test_data_chars: the caps on code and test-data characters (all splits).
    doc_chars: the size merged units (code blocks, licence paragraphs, test-data lines) reach.
    max_docs_per_file: documents taken from one code or test-data file at most (its first ones).
  """
  stdlib_dir: Optional[str] = None
  seed: int = 0
  heldout_fraction: float = 0.15
  reference_fraction: float = 0.15
  validation_fraction: float = 0.05
  synthetic_fraction: float = 0.3
  code_chars: int = 250_000
  test_data_chars: int = 60_000
  doc_chars: int = 1500
  max_docs_per_file: int = 4

  def __post_init__(self):
    fractions = (self.heldout_fraction, self.reference_fraction, self.validation_fraction, self.synthetic_fraction)
    if min(fractions) < 0 or max(fractions) > 1 or sum(fractions[:3]) > 1:
      raise ValueError(f'need fractions in [0, 1] and heldout + reference + validation <= 1, got {self}')
    if self.doc_chars < 1 or self.max_docs_per_file < 1:
      raise ValueError('doc_chars and max_docs_per_file must be >= 1')

  def resolved(self) -> 'EmbeddedMixtureConfig':
    return dataclasses.replace(self, stdlib_dir=self.stdlib_dir or sysconfig.get_paths()['stdlib'])


@dataclasses.dataclass(frozen=True)
class EmbeddedDocument(BenchmarkDocument):
  """One labelled document, as the benchmark's (its catalog entry is one, so ``catalog_labellers`` and
  ``selection_report`` read it; ``component`` = ``domain``), target-like when clean docs prose."""

  @property
  def target(self) -> bool:
    return self.domain == DOCS and self.quality == CLEAN


def docs_split(group: str, config: EmbeddedMixtureConfig) -> str:
  """The split of a docs group (a pydoc topic or a standard-library file)."""
  u = unit_hash(config.seed, 'split', group)
  for split, fraction in (('heldout', config.heldout_fraction), ('reference', config.reference_fraction),
                          ('validation', config.validation_fraction)):
    if u < fraction:
      return split
    u -= fraction
  return 'train'


def other_split(group: str, config: EmbeddedMixtureConfig) -> str:
  """The split of a licence or test-data document: ``validation`` or ``train``."""
  return 'validation' if unit_hash(config.seed, 'split', group) < config.validation_fraction else 'train'


def _read_text(path: str) -> Optional[str]:
  """The file as normalised text, or None when it is not UTF-8 text (binary data, another encoding)."""
  try:
    with open(path, 'rb') as f:
      text = f.read().decode('utf-8')
  except (OSError, UnicodeDecodeError):
    return None
  return None if '\x00' in text else normalize_text(text)


def _capped(files: Iterable[str], documents_of: Callable[[str], List[str]], config: EmbeddedMixtureConfig,
            budget: int) -> List[Tuple[str, int, str]]:
  """``(file, i, text)`` of the first ``max_docs_per_file`` documents of each file, files in seeded hash order,
  until ``budget`` characters are reached; returned in file order."""
  taken, size = [], 0
  for path in sorted(files, key=lambda p: (unit_hash(config.seed, 'take', p), p)):
    if size >= budget:
      break
    for i, text in enumerate(documents_of(path)[:config.max_docs_per_file]):
      taken.append((path, i, text))
      size += len(text)
  return sorted(taken)


def _test_data_files(stdlib_dir: str) -> List[str]:
  """Sorted relative paths of the text files with ``TEST_DATA_EXTENSIONS`` under ``<stdlib>/test`` (none if absent)."""
  test_dir = os.path.join(stdlib_dir, 'test')
  paths = []
  for root, dirs, files in os.walk(test_dir):
    dirs[:] = sorted(d for d in dirs if d != '__pycache__')
    paths += [os.path.relpath(os.path.join(root, n), stdlib_dir).replace(os.sep, '/') for n in files
              if n.endswith(TEST_DATA_EXTENSIONS)]
  return sorted(paths)


def _licence_texts(stdlib_dir: str) -> List[Tuple[str, str]]:
  """``(name, text)`` of the licence file in ``stdlib_dir`` (if any) and of the ``copyright`` builtin (if any)."""
  out = []
  for name in LICENCE_FILES:
    text = _read_text(os.path.join(stdlib_dir, name))
    if text:
      out.append((name, text))
      break
  notice = str(getattr(builtins, 'copyright', '') or '').strip()
  if notice:
    out.append(('copyright', normalize_text(notice)))
  return out


def make_documents(config: EmbeddedMixtureConfig) -> List[EmbeddedDocument]:
  """Every document of the embedded mixture (originals, then corrupted copies), labelled and split."""
  config = config.resolved()
  lib = config.stdlib_dir
  docs = []
  for doc_id, text in embedded.pydoc_topic_documents() + embedded.stdlib_docstring_documents(lib):
    kind, rest = doc_id.split(':', 1)
    group = f'{kind}:{rest.split(":", 1)[0]}'  # pydoc:<topic> or stdlib:<path>
    docs.append(EmbeddedDocument(f'{DOCS}:{doc_id}', text, group, DOCS, DOCS, CLEAN, docs_split(group, config),
                                 f'{DOCS}:{doc_id}'))

  code_files = [p for p in embedded.stdlib_files(lib)
                if docs_split(f'stdlib:{p}', config) in ('train', 'validation')]
  code_of = lambda p: merge_units(paragraphs(_read_text(os.path.join(lib, p)) or ''), config.doc_chars)
  for path, i, text in _capped(code_files, code_of, config, config.code_chars):
    docs.append(EmbeddedDocument(f'{CODE}:{path}:{i}', text, f'stdlib:{path}', CODE, CODE, CLEAN,
                                 docs_split(f'stdlib:{path}', config), f'{CODE}:{path}:{i}'))

  for name, text in _licence_texts(lib):
    for i, part in enumerate(merge_units(paragraphs(text), config.doc_chars)):
      doc_id = f'{LICENCE}:{name}:{i}'
      split = other_split(doc_id, config)
      docs.append(EmbeddedDocument(doc_id, part, name, LICENCE, LICENCE, CLEAN, split, doc_id))

  lines_of = lambda p: merge_units((_read_text(os.path.join(lib, p)) or '').split('\n'), config.doc_chars, '\n')
  for path, i, text in _capped(_test_data_files(lib), lines_of, config, config.test_data_chars):
    doc_id = f'{TEST_DATA}:{path}:{i}'
    split = other_split(doc_id, config)
    docs.append(EmbeddedDocument(doc_id, text, path, TEST_DATA, TEST_DATA, CLEAN, split, doc_id))

  synthetic = []
  for doc in docs:
    copy = None if doc.domain != DOCS or doc.split not in ('train', 'validation') else corrupted_copy(
        doc.text, doc.doc_id, config.seed, config.synthetic_fraction, SYNTHETIC_KINDS)
    if copy is None:
      continue
    kind, text = copy
    synthetic.append(EmbeddedDocument(f'synthetic_{kind}:{doc.doc_id}', text, doc.source, doc.domain, doc.domain,
                                      f'synthetic_{kind}', doc.split, doc.doc_id))
  return _without_seen_text(docs + synthetic)


def _without_seen_text(docs: List[EmbeddedDocument]) -> List[EmbeddedDocument]:
  """Leaves out the ``heldout`` documents whose text occurs in a document of another split, and the ``reference``
  ones whose text occurs in ``train`` or ``validation`` (the standard library repeats a few docstrings verbatim in
  other files)."""
  joined = lambda splits: '\x00'.join(d.text for d in docs if d.split in splits)
  seen = {'heldout': joined(('train', 'validation', 'reference')), 'reference': joined(('train', 'validation'))}
  return [d for d in docs if d.split not in seen or d.text not in seen[d.split]]


@functools.lru_cache(maxsize=4)
def _cached_documents(config: EmbeddedMixtureConfig) -> Tuple[EmbeddedDocument, ...]:
  return tuple(make_documents(config))


def embedded_mixture_documents(config: Optional[EmbeddedMixtureConfig] = None) -> Tuple[EmbeddedDocument, ...]:
  """``make_documents(config)``, computed once per process and config."""
  return _cached_documents((config or EmbeddedMixtureConfig()).resolved())


def catalog(config: Optional[EmbeddedMixtureConfig] = None) -> List[Dict[str, Any]]:
  """One benchmark-style catalog entry per document (``EmbeddedDocument.catalog_entry``)."""
  return [d.catalog_entry() for d in embedded_mixture_documents(config)]


def documents_in(splits: Sequence[str], config: Optional[EmbeddedMixtureConfig] = None) -> List[EmbeddedDocument]:
  """The documents of ``splits``, in catalog order; ``reference`` and ``heldout`` hold only clean docs."""
  return [d for d in embedded_mixture_documents(config) if d.split in splits]


# --- SeqIO tasks ---

METADATA_KEYS = ('domain', 'quality')
# task kind -> {task split: the documents' split}
TASK_SPLITS = {'mixture': {'train': 'train', 'validation': 'validation'},
               'reference': {'train': 'reference', 'validation': 'heldout'}}


def embedded_mixture_source(config: Optional[EmbeddedMixtureConfig] = None, task_kind: str = 'mixture'):
  """A ``seqio.FunctionDataSource`` of ``{'doc_id', 'text', 'domain', 'quality'}`` string features.

  ``task_kind='mixture'``: splits ``train`` (the stream and the pool) and ``validation``; ``'reference'``: ``train``
  = the reference prose, ``validation`` = the held-out prose. Documents are built on first use, not here.
  """
  import seqio  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.seqio_tasks import records_dataset  # pylint: disable=g-import-not-at-top
  splits = TASK_SPLITS[task_kind]

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None):
    return records_dataset(documents_in((splits[split],), config), ('doc_id', 'text', *METADATA_KEYS), shuffle_files,
                           seed)

  return seqio.FunctionDataSource(dataset_fn, splits=tuple(splits), caching_permitted=False)


def register_embedded_mixture_tasks(name: str = 'embedded_mixture', config: Optional[EmbeddedMixtureConfig] = None,
                                    vocabulary=None, *, objective: str = 'lm') -> Tuple[str, str]:
  """Registers ``name`` (the mixture: ``train``, ``validation``) and ``f'{name}_reference'`` (``train``: reference
  prose, ``validation``: held-out prose), features ``targets``, ``doc_id``, ``chunk_index``, ``domain``,
  ``quality``; returns both names. ``vocabulary``: None for ``vocabulary.default_vocabulary()``. Reads nothing."""
  from bliss_jax.data import seqio_tasks  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import vocabulary as vocabulary_lib  # pylint: disable=g-import-not-at-top
  vocabulary = vocabulary or vocabulary_lib.default_vocabulary()
  names = (name, f'{name}_reference')
  for task_name, kind in zip(names, TASK_SPLITS):
    seqio_tasks._add_task(  # pylint: disable=protected-access
        task_name, source=embedded_mixture_source(config, kind),
        preprocessors=seqio_tasks.document_preprocessors(objective, extra_keys=METADATA_KEYS),
        output_features=seqio_tasks.output_features(vocabulary, objective))
  return names


def selection_reporter(config: Optional[EmbeddedMixtureConfig] = None):
  """The mixture's ``SelectionReporter``: the catalog's labellers (domain, quality, target), the per-document
  report of a selection against the split it was chosen from, and each document's text."""
  from bliss_jax.data.benchmark.catalog import catalog_labellers  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.benchmark.reports import format_selection_report  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.benchmark.reports import selection_report  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.composition import SelectionReporter  # pylint: disable=g-import-not-at-top

  def document_report(keys, base_split):
    report = selection_report(keys, catalog(config), base_split=base_split)
    return report, format_selection_report(report)
  texts = functools.lru_cache(maxsize=None)(lambda: {d.doc_id: d.text for d in embedded_mixture_documents(config)})
  return SelectionReporter(labellers=lambda: catalog_labellers(catalog(config)), document_report=document_report,
                           document_text=lambda doc_id: texts().get(doc_id))
