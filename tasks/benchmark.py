"""The benchmark mixture (bliss_jax.data.benchmark): labelled domains and qualities, train/pool/held-out.

Registered on import only when the data directory exists (``$BLISS_JAX_DATA_DIR``, else
``<repo>/../shared/data``): registration reads no file (documents are read and cut on first use, a few seconds),
so importing ``tasks`` stays fast, and without the data it registers nothing and raises nothing.

* ``benchmark``: the mixture of the components at ``DEFAULT_RATES``; its tasks ``benchmark_<component>``;
  ``benchmark_all`` (every document once per epoch, for scoring passes over ``pool``); ``benchmark_reference``
  (``train``: the reference set; ``validation``: the clean target documents of ``test``); per target domain D,
  ``benchmark_reference_<D>`` (the same, of D only) and ``benchmark_heldout_except_<D>`` (``validation``: the
  clean held-out documents of the other target domains). Splits ``train``, ``pool``, ``validation`` (the
  reference set) and ``test``; features ``targets``, ``doc_id``, ``chunk_index``, ``domain``, ``quality``.
* ``benchmark_ul2``: SALT's UL2 denoisers over the ``benchmark`` mixture (``tasks.ul2``).
* ``lambada_reference``: LAMBADA (OpenAI) as a prefix-LM task, ``inputs`` = the passage, ``targets`` = " " + its
  last word, 30% of items (by id hash) in ``validation``: BLISS's upper-level objective as in the paper (loss on
  the continuation only; read it with ``feature_converter='prefix_lm'``).

From gin, ``TASK = @benchmark_mixture()`` (``gin_configs/data/benchmark_mixture.gin``) registers the mixture with
any rates, seed, splits, data directory or vocabulary, and fails with the missing path when the data is absent.
"""
import os
from typing import Mapping, Optional, Union

import gin

from bliss_jax.data import data_dir as data_dir_lib
from bliss_jax.data import seqio_tasks
from bliss_jax.data.benchmark import documents, mixture
from bliss_jax.data import ul2
from bliss_jax.eval import readers
from bliss_jax.data import vocabulary as vocabulary_lib

BENCHMARK = 'benchmark'
BENCHMARK_UL2 = 'benchmark_ul2'
LAMBADA_REFERENCE = 'lambada_reference'


@gin.configurable
def benchmark_mixture(name: str = BENCHMARK,
                      data_dir: Optional[str] = None,
                      seed: int = 0,
                      rates: Union[None, str, Mapping[str, float]] = None,
                      vocabulary_path: Optional[str] = None,
                      extra_ids: int = vocabulary_lib.DEFAULT_EXTRA_IDS,
                      objective: str = 'lm',
                      train_fraction: float = 0.4,
                      pool_fraction: float = 0.4,
                      validation_share: float = 0.5,
                      synthetic_fraction: float = 0.2,
                      min_doc_chars: int = 1500,
                      flores_sentences_per_doc: int = 10,
                      task: Optional[str] = None) -> str:
  """Registers (or re-registers) the benchmark tasks and mixture ``name``; returns ``name``, or with ``task`` the name
  of that one of its tasks (e.g. ``'reference'``: ``f'{name}_reference'``, the reference set with the same
  vocabulary).

  ``rates``: ``{component: rate}`` (see ``data.benchmark.mixture.COMPONENTS``; missing components are left out),
  None for ``DEFAULT_RATES``, or ``'natural'`` (proportional to characters). ``vocabulary_path``: a
  T5-convention SentencePiece model with ``extra_ids`` sentinels, or a Hugging Face tokenizer directory (an imported
  MODEL_DIR's ``tokenizer/``: the pretrained model's own ids, no sentinels); None for the default vocabulary. The other
  arguments are ``BenchmarkConfig`` fields.

  Raises:
    FileNotFoundError: the data directory has no ``corpus/`` (the message names the path).
  """
  config = documents.BenchmarkConfig(
      data_dir=data_dir, seed=seed, train_fraction=train_fraction, pool_fraction=pool_fraction,
      validation_share=validation_share, synthetic_fraction=synthetic_fraction, min_doc_chars=min_doc_chars,
      flores_sentences_per_doc=flores_sentences_per_doc)
  if vocabulary_path is None:
    vocabulary = vocabulary_lib.default_vocabulary(extra_ids=extra_ids)
  else:
    vocabulary = vocabulary_lib.load_path(vocabulary_path, extra_ids=extra_ids)
  mixture.register_benchmark_tasks(name, config, vocabulary, rates, objective=objective)
  return name if task is None else f'{name}_{task}'


# The library functions, not the gin configurables, so that no gin binding parsed before this import applies.
if data_dir_lib.data_dir_available():
  mixture.register_benchmark_tasks(BENCHMARK, documents.BenchmarkConfig(), vocabulary_lib.default_vocabulary())
  ul2.register_ul2_mixture(BENCHMARK_UL2, BENCHMARK)
  _lambada = os.path.join(data_dir_lib.resolve_data_dir(), 'eval', 'lambada_openai.jsonl')
  if os.path.exists(_lambada):
    seqio_tasks.register_continuation_task(
        LAMBADA_REFERENCE, lambda: [(x.id, x.context, ' ' + x.continuation) for x in readers.read_lambada(_lambada)],
        vocabulary_lib.default_vocabulary(), validation_fraction=0.3)
