"""UL2 mixtures (bliss_jax.data.ul2): SALT's four denoisers at 6:2:1:1, registered on import and from gin.

* ``embedded_default_ul2``: the denoisers over the documents (and splits) of ``embedded_default``, no mode
  tokens; tasks ``embedded_default_ul2_{causal_lm,prefix_lm,span_corruption,extreme_span_corruption}``.

Train on a UL2 mixture with ``seqio_batch_source.feature_converter = 'prefix_lm_shared'``
(``gin_configs/data/ul2.gin``), which puts the inputs under the prefix mask and the loss on the targets only, with
inputs and targets sharing the row (examples up to the whole row). ``ul2_mixture`` (gin) registers
the denoisers over any task or mixture, e.g. the benchmark mixture (``gin_configs/data/benchmark_ul2.gin``).
"""
from typing import Optional, Sequence

import gin

from bliss_jax.data import ul2
from bliss_jax.data import vocabulary as vocabulary_lib

EMBEDDED_DEFAULT_UL2 = 'embedded_default_ul2'


@gin.configurable
def ul2_mixture(base: str = gin.REQUIRED,
                name: Optional[str] = None,
                rates: Sequence[float] = ul2.SALT_RATES,
                mode_tokens=None,
                t5_edges: bool = False,
                example_length: Optional[int] = None,
                vocabulary_path: Optional[str] = None,
                extra_ids: int = vocabulary_lib.DEFAULT_EXTRA_IDS) -> str:
  """Registers SALT's UL2 denoisers over the task or mixture ``base``; returns the mixture's name.

  Args:
    base: a registered task or mixture whose source has ``text`` (document tasks, the benchmark mixture).
    name: the UL2 mixture's name; None: ``f'{base}_ul2'``.
    rates: causal LM : prefix LM : span corruption : extreme span corruption.
    mode_tokens: None, ``'extra_ids'`` or ``{'R': id, 'S': id, 'X': id}`` (``ul2.mode_token_ids``).
    t5_edges: span placement exactly as T5.
    example_length: most tokens per example; None: the whole row (``ul2.default_example_length``).
    vocabulary_path: a T5-convention SentencePiece model; None: the base task's vocabulary.
    extra_ids: sentinels appended to ``vocabulary_path``'s model.
  """
  vocabulary = None
  if vocabulary_path is not None:
    vocabulary = vocabulary_lib.load_vocabulary(vocabulary_path, extra_ids=extra_ids)
  name = name or f'{base}_ul2'
  ul2.register_ul2_mixture(name, base, vocabulary, tuple(rates), mode_tokens=mode_tokens, t5_edges=t5_edges,
                           example_length=example_length)
  return name


# The library function, not the gin configurable, so that no gin binding parsed before this import applies.
ul2.register_ul2_mixture(EMBEDDED_DEFAULT_UL2, 'embedded_default')
