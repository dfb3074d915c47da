"""The benchmark's SeqIO tasks and mixture over its documents (``documents``).

``register_benchmark_tasks``: a task per component, ``f'{name}_{component}'``, with features ``targets`` (chunked as
``seqio_tasks.split_tokens``), ``doc_id``, ``chunk_index``, ``domain`` and ``quality`` (metadata: the feature
converters drop them); the mixture ``name`` of the components with non-zero rates; ``f'{name}_all'``, every document
once per epoch (in catalog order unshuffled: scoring passes over ``pool``); ``f'{name}_reference'``, whose
``train`` split is the reference set and whose ``validation`` split is the target documents of ``test`` (to train a
reference model); and per target domain D, a reference set from D alone and the held-out documents of the others:

  ``f'{name}_reference_{D}'``       ``train``: D's documents of the reference set (``validation``);
                                    ``validation``: D's clean documents of ``test`` (D's held-out documents)
  ``f'{name}_heldout_except_{D}'``  ``validation``: the clean target-like documents of every other target domain
                                    in ``validation`` or ``test`` (never in ``train`` or ``pool``)

Registration reads no file; the documents are read on first use.
"""
from typing import Any, Callable, Dict, Mapping, Optional, Union

from bliss_jax.data.benchmark.corruptions import SYNTHETIC_KINDS
from bliss_jax.data.benchmark.documents import (SPLITS, TARGET_DOMAINS, BenchmarkConfig, BenchmarkDocument,
                                                benchmark_documents)

COMPONENTS = ('encyclopedic', 'books', 'stories', 'math', 'code_c', 'code_python', 'multilingual', 'web',
              *(f'synthetic_{kind}' for kind in SYNTHETIC_KINDS))
TARGET_COMPONENTS = ('encyclopedic', 'books', 'stories', 'math')
# Example-level mixing rates (seqio samples examples, i.e. chunks, in these proportions): half target-like clean
# English, 30% off-target (code, other languages, raw web), 20% synthetic junk.
DEFAULT_RATES = {
    'encyclopedic': 15.0, 'books': 15.0, 'stories': 10.0, 'math': 10.0,
    'code_c': 5.0, 'code_python': 5.0, 'multilingual': 10.0, 'web': 10.0,
    'synthetic_shuffled_words': 5.0, 'synthetic_char_noise': 5.0, 'synthetic_repeated_lines': 5.0,
    'synthetic_truncated': 5.0,
}
METADATA_KEYS = ('domain', 'quality')


HELD_OUT_SPLITS = ('validation', 'test')
TASK_KINDS = ('component', 'reference', 'heldout_except')


def _split_filter(task_kind: str, split: str, domain: Optional[str] = None) -> Callable[[BenchmarkDocument], bool]:
  """Which documents a ``task_kind`` (``TASK_KINDS``) serves in ``split``; ``domain``: the reference domain
  (None: every target domain, for 'reference' only)."""
  if task_kind == 'reference':
    real = {'train': 'validation', 'validation': 'test'}.get(split)
    return lambda d: d.split == real and d.target and domain in (None, d.domain)
  if task_kind == 'heldout_except':
    return lambda d: split == 'validation' and d.split in HELD_OUT_SPLITS and d.target and d.domain != domain
  return lambda d: d.split == split


def benchmark_source(config: BenchmarkConfig,
                     component: Optional[str] = None,
                     task_kind: str = 'component',
                     domain: Optional[str] = None):
  """A ``seqio.FunctionDataSource`` of ``{'doc_id', 'text', 'domain', 'quality'}`` string features.

  ``component``: only that component's documents (None: all). ``task_kind='reference'`` serves the reference
  set as ``train`` and the target documents of ``test`` as ``validation``, of target domain ``domain`` only
  when given; ``task_kind='heldout_except'`` serves as ``validation`` the target documents of ``validation`` and
  ``test`` of every target domain but ``domain``. Splits are declared only where documents can exist (off-target
  and synthetic components have no ``validation``), so mixtures skip them there. Documents are read on first use
  (``benchmark_documents``), not here.
  """
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bliss_jax.data.seqio_tasks import records_dataset  # pylint: disable=g-import-not-at-top

  if task_kind not in TASK_KINDS:
    raise ValueError(f'task_kind={task_kind!r}: expected one of {TASK_KINDS}')
  if domain is not None and domain not in TARGET_DOMAINS:
    raise ValueError(f'domain={domain!r}: expected one of the target domains {TARGET_DOMAINS}')
  if task_kind == 'heldout_except' and domain is None:
    raise ValueError("task_kind='heldout_except' needs the domain it leaves out")
  if task_kind == 'reference':
    splits = ('train', 'validation')
  elif task_kind == 'heldout_except':
    splits = ('validation',)
  elif component is None or component in TARGET_COMPONENTS:
    splits = SPLITS
  else:
    splits = ('train', 'pool', 'test')

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    keep = _split_filter(task_kind, split, domain)
    docs = [d for d in benchmark_documents(config)
            if keep(d) and (component is None or d.component == component)]
    return records_dataset(docs, ('doc_id', 'text', *METADATA_KEYS), shuffle_files, seed)

  return seqio.FunctionDataSource(dataset_fn, splits=splits, caching_permitted=False)


def natural_rate(config: BenchmarkConfig, component: str) -> float:
  """Characters of ``component`` in the benchmark (all splits): the rate of proportional mixing."""
  return float(sum(len(d.text) for d in benchmark_documents(config) if d.component == component))


RatesArg = Union[None, str, Mapping[str, float]]


def component_rates(rates: RatesArg, config: BenchmarkConfig) -> Dict[str, Any]:
  """``{component: rate}`` of the components to mix (rate > 0). ``rates``: a mapping (missing components get
  0), None for ``DEFAULT_RATES``, or ``'natural'`` for proportional to characters (callables, evaluated when a
  dataset is built, so registration still reads nothing)."""
  if rates == 'natural':
    return {c: (lambda task, c=c: natural_rate(config, c)) for c in COMPONENTS}
  if isinstance(rates, str):
    raise ValueError(f"rates must be a mapping, None or 'natural', got {rates!r}")
  rates = dict(DEFAULT_RATES if rates is None else rates)
  unknown = sorted(set(rates) - set(COMPONENTS))
  if unknown:
    raise ValueError(f'unknown components {unknown}; known: {list(COMPONENTS)}')
  if any(r < 0 for r in rates.values()) or not any(r > 0 for r in rates.values()):
    raise ValueError(f'rates must be >= 0 with at least one > 0, got {rates}')
  return {c: float(rates[c]) for c in COMPONENTS if rates.get(c, 0) > 0}


def register_benchmark_tasks(name: str = 'benchmark',
                             config: Optional[BenchmarkConfig] = None,
                             vocabulary=None,
                             rates: RatesArg = None,
                             *,
                             objective: str = 'lm',
                             shuffle_buffer_size: Optional[int] = None):
  """Registers the component tasks, ``f'{name}_all'``, the reference tasks (``f'{name}_reference'``,
  ``f'{name}_reference_{D}'``, ``f'{name}_heldout_except_{D}'`` per target domain D) and the mixture ``name``.

  Args:
    name: the mixture's name and the tasks' prefix.
    config: documents and splits; None for ``BenchmarkConfig()``. Its data directory must exist (checked here,
      so a missing directory fails at registration with the path in the message); nothing is read.
    vocabulary: a seqio vocabulary; None for ``vocabulary.default_vocabulary()``.
    rates: see ``component_rates``.
    objective: ``'lm'`` or ``'prefix_lm'`` (``seqio_tasks.document_preprocessors``).
    shuffle_buffer_size: the example shuffle buffer (None: ``seqio_tasks.DEFAULT_SHUFFLE_BUFFER_SIZE``).

  Returns:
    The registered ``seqio.Mixture``.
  """
  from bliss_jax.data import seqio_tasks  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import vocabulary as vocabulary_lib  # pylint: disable=g-import-not-at-top

  config = (config or BenchmarkConfig()).resolved()
  if vocabulary is None:
    vocabulary = vocabulary_lib.default_vocabulary()
  buffer = seqio_tasks.DEFAULT_SHUFFLE_BUFFER_SIZE if shuffle_buffer_size is None else shuffle_buffer_size
  mixed = component_rates(rates, config)

  def add(task_name, source):
    return seqio_tasks._add_task(  # pylint: disable=protected-access
        task_name, source=source,
        preprocessors=seqio_tasks.document_preprocessors(objective, extra_keys=METADATA_KEYS),
        output_features=seqio_tasks.output_features(vocabulary, objective), shuffle_buffer_size=buffer)

  for component in COMPONENTS:
    add(f'{name}_{component}', benchmark_source(config, component))
  add(f'{name}_all', benchmark_source(config, None))
  add(f'{name}_reference', benchmark_source(config, None, task_kind='reference'))
  for domain in TARGET_DOMAINS:
    add(f'{name}_reference_{domain}', benchmark_source(config, None, task_kind='reference', domain=domain))
    add(f'{name}_heldout_except_{domain}', benchmark_source(config, None, task_kind='heldout_except', domain=domain))
  return seqio_tasks.register_mixture(name, [(f'{name}_{c}', rate) for c, rate in mixed.items()])
