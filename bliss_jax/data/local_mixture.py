"""A mixture of the user's local sources: one document task per source, mixed by size or by given rates, with each
source's name as its label and some sources marked target-like, so that a composition report can describe it.

The sources are the labels of ``file_specs.expand``'s files (an entry's ``source``, else its file's stem): source S
becomes the task ``f'{name}_{S}'`` over its files and the mixture ``name`` mixes them. Every document id begins with
its source (``f'{S}:...'``), so the labellers (``LocalMixture.labellers``) read the source off the id:
``{"domain": S, "target": "yes" if S is target-like else "no"}``. ``register`` records the mixture by name
(``registered``), which is how ``compare.composition = 'local_mixture'`` finds the stream's
(``bliss_jax.configurables``).
"""
import dataclasses
import functools
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import seqio

from bliss_jax.data import composition as composition_lib
from bliss_jax.data import file_specs
from bliss_jax.data import seqio_tasks

NATURAL = 'natural'  # rates proportional to each source's characters
Rates = Union[str, Mapping[str, float]]
TARGET_LIKE_NAME = 'target-like sources'


@functools.lru_cache(maxsize=None)
def _characters(files: Tuple[file_specs.FileSource, ...]) -> int:
  return sum(len(text) for _, text in file_specs.read_documents(files))


@dataclasses.dataclass(frozen=True)
class LocalMixture:
  """A registered local mixture: its name, its files (with their labels, ``file_specs.FileSource``), the target-like
  sources and the fraction of documents held out (by id hash) as ``validation``."""
  name: str
  files: Tuple[file_specs.FileSource, ...]
  target_like: Tuple[str, ...]
  validation_fraction: float

  @property
  def sources(self) -> Tuple[str, ...]:
    """The source labels, in the order of their first file."""
    return tuple(dict.fromkeys(f.label for f in self.files))

  def task_name(self, source: str) -> str:
    return f'{self.name}_{source}'

  def source_files(self, source: str) -> Tuple[file_specs.FileSource, ...]:
    return tuple(f for f in self.files if f.label == source)

  def labellers(self) -> Dict[str, composition_lib.Labeller]:
    """``{"domain": the source (the id up to its first ":"), "target": "yes" / "no"}``."""
    source_of = composition_lib.doc_prefix_labellers()['domain']
    target_like = set(self.target_like)
    return {'domain': source_of, composition_lib.TARGET: lambda doc: 'yes' if source_of(doc) in target_like else 'no'}

  def catalog(self) -> List[Dict[str, Any]]:
    """One entry per document (``benchmark.reports.selection_report``'s): ``doc_id, domain, split, n_chars,
    target``, reading every file."""
    target_like = set(self.target_like)
    return [{'doc_id': doc_id, 'domain': f.label, 'n_chars': len(text), 'target': f.label in target_like,
             'split': seqio_tasks.split_of(doc_id, self.validation_fraction)}
            for f in self.files for doc_id, text in f.documents()]

  def selection_reporter(self) -> composition_lib.SelectionReporter:
    """The labellers, the per-document report of a selection against a split (by source, per document and per
    character, with the target-like share) and each document's text; the files are read on first use."""
    from bliss_jax.data.benchmark import reports  # pylint: disable=g-import-not-at-top
    catalog = functools.lru_cache(maxsize=None)(self.catalog)
    texts = functools.lru_cache(maxsize=None)(lambda: dict(file_specs.read_documents(self.files)))

    target = f"{TARGET_LIKE_NAME} ({', '.join(self.target_like) or 'none'})"

    def document_report(keys, base_split):
      report = reports.selection_report(keys, catalog(), base_split=base_split)
      return report, reports.format_selection_report(report, target=target)
    return composition_lib.SelectionReporter(labellers=self.labellers, document_report=document_report,
                                             document_text=lambda doc_id: texts().get(doc_id))


_REGISTERED: Dict[str, LocalMixture] = {}


def registered(name: str) -> Optional[LocalMixture]:
  """The local mixture registered (last) under ``name``; None if there is none."""
  return _REGISTERED.get(name)


def source_rates(mixture: LocalMixture, rates: Rates) -> Dict[str, Union[float, Callable[[Any], float]]]:
  """``{source: rate}`` of the sources to mix (rate > 0): ``rates`` as ``{source: rate}`` naming every source, or
  ``NATURAL`` (each source's characters, counted when a dataset is first built: registering reads only a document
  per file)."""
  if rates == NATURAL:
    return {s: (lambda task, files=mixture.source_files(s): float(_characters(files))) for s in mixture.sources}
  if isinstance(rates, str) or not isinstance(rates, Mapping):
    raise ValueError(f"rates must be {NATURAL!r} or {{source: rate}}, got {rates!r}")
  unknown, missing = sorted(set(rates) - set(mixture.sources)), [s for s in mixture.sources if s not in rates]
  if unknown or missing:
    raise ValueError(f'rates {dict(rates)}: ' + '; '.join(
        ([f'unknown sources {unknown}'] if unknown else []) + ([f'no rate for {missing}'] if missing else [])) +
        f'; the sources are {list(mixture.sources)}')
  if any(r < 0 for r in rates.values()) or not any(r > 0 for r in rates.values()):
    raise ValueError(f'rates must be >= 0 with at least one > 0, got {dict(rates)}')
  return {s: float(rates[s]) for s in mixture.sources if rates[s] > 0}


def register(name: str, files: Sequence[file_specs.FileSource], vocabulary: seqio.Vocabulary,
             rates: Rates = NATURAL, target_like: Sequence[str] = (),
             validation_fraction: float = seqio_tasks.DEFAULT_VALIDATION_FRACTION, *,
             objective: str = 'lm') -> LocalMixture:
  """Registers (or re-registers) a task per source of ``files`` and the mixture ``name`` of them; returns its record.

  Args:
    name: the mixture's name and its tasks' prefix (``f'{name}_{source}'``).
    files: ``file_specs.expand``'s files; their labels are the sources.
    vocabulary: tokenizes every source.
    rates: ``NATURAL`` or ``{source: rate}`` (``source_rates``); a source of rate 0 has its task but is not mixed.
    target_like: the sources that are like the target data (the composition's target-like share).
    validation_fraction: expected fraction of each source's documents held out (by id hash) as ``validation``.
    objective: ``'lm'`` or ``'prefix_lm'``.

  Raises:
    ValueError: a source name that cannot be part of a task name, an unknown target-like source, bad rates.
  """
  mixture = LocalMixture(name, tuple(files), tuple(target_like), validation_fraction)
  bad = [s for s in mixture.sources if not re.fullmatch(r'[\w.]+', s)]
  if bad:
    raise ValueError(f'sources {bad} of mixture {name!r} cannot be part of a task name: give their files a '
                     "'source' of letters, digits, '_' and '.'")
  unknown = sorted(set(target_like) - set(mixture.sources))
  if unknown:
    raise ValueError(f'target_like {unknown} of mixture {name!r} are not among its sources {list(mixture.sources)}')
  mixed = source_rates(mixture, rates)
  for source in mixture.sources:
    seqio_tasks.register_document_task(
        mixture.task_name(source), lambda files=mixture.source_files(source): file_specs.read_documents(files),
        vocabulary, validation_fraction, objective=objective)
  seqio_tasks.register_mixture(name, [(mixture.task_name(s), rate) for s, rate in mixed.items()])
  _REGISTERED[name] = mixture
  return mixture
