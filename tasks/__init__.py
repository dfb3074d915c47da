"""SeqIO tasks of bliss_jax, registered on import (as t5x users import their task modules).

* ``embedded_default``: the embedded default corpus (pydoc topics and stdlib docstrings, see
  ``bliss_jax.data.embedded``), ``default_vocabulary()``, targets-only LM, 5% of documents held out as
  ``validation``. ``embedded_default_prefix_lm`` is the same corpus with random inputs/targets cuts.
* ``embedded_mixture`` and ``embedded_mixture_reference`` (``bliss_jax.data.embedded_mixture``): the labelled
  corpus of a Python installation (docs prose, standard-library code, licence texts, test data, corrupted copies of
  the docs); ``train`` is the stream and the pool; the reference task's ``train`` is clean prose, its
  ``validation`` clean prose held out from everything else. Registering reads nothing.
* ``c4_en``: C4 (``c4/en:3.1.0``) from TFDS with the same vocabulary; registering it reads nothing, building
  its dataset needs the prepared TFDS data (no download is attempted here). ``c4_task`` (gin:
  ``TASK = @c4_task()``) registers C4 under another name with another vocabulary, e.g. an imported model's tokenizer.
* ``embedded_default_ul2`` (``tasks.ul2``): SALT's UL2 denoisers (causal LM, prefix LM, span corruption, extreme
  span corruption at 6:2:1:1) over ``embedded_default``; train with the ``prefix_lm`` feature converter.
* ``benchmark`` and ``benchmark_ul2`` (``tasks.benchmark``): the labelled benchmark mixture over ``../shared/data``
  and UL2 over it, registered only when that directory exists (``$BLISS_JAX_DATA_DIR`` overrides it); reading
  the data waits for the first dataset.

Importing parses the embedded corpus (about 1.5 s) to find the default vocabulary, and trains that vocabulary
once per machine (a few seconds; cached under ``$BLISS_JAX_CACHE``). ``tasks.local_files`` (imported here, so
gin files can bind it) adds the user's own files.
"""
from typing import Optional

import gin

from bliss_jax.data import embedded
from bliss_jax.data import embedded_mixture
from bliss_jax.data import seqio_tasks
from bliss_jax.data import vocabulary
from tasks import local_files  # pylint: disable=unused-import  (makes `register_local_files_task` gin-bindable)

EMBEDDED_DEFAULT = 'embedded_default'
EMBEDDED_DEFAULT_PREFIX_LM = 'embedded_default_prefix_lm'
EMBEDDED_MIXTURE = 'embedded_mixture'
C4_EN = 'c4_en'

_vocabulary = vocabulary.default_vocabulary()
seqio_tasks.register_document_task(EMBEDDED_DEFAULT, embedded.embedded_documents, _vocabulary)
seqio_tasks.register_document_task(
    EMBEDDED_DEFAULT_PREFIX_LM, embedded.embedded_documents, _vocabulary, objective='prefix_lm')
embedded_mixture.register_embedded_mixture_tasks(EMBEDDED_MIXTURE, vocabulary=_vocabulary)
seqio_tasks.register_tfds_c4_task(C4_EN, tfds_name='c4/en:3.1.0', vocabulary=_vocabulary)


@gin.configurable
def c4_task(name: str = C4_EN, vocabulary_path: Optional[str] = None, tfds_data_dir: Optional[str] = None) -> str:
  """Registers (or re-registers) C4 as task ``name`` with the vocabulary at ``vocabulary_path``
  (``vocabulary.load_path``: a T5-convention SentencePiece model, or a Hugging Face tokenizer directory such as an
  imported MODEL_DIR's ``tokenizer/``; None: the default vocabulary); returns ``name``."""
  vocab = _vocabulary if vocabulary_path is None else vocabulary.load_path(vocabulary_path)
  seqio_tasks.register_tfds_c4_task(name, tfds_name='c4/en:3.1.0', vocabulary=vocab, tfds_data_dir=tfds_data_dir)
  return name

# After the tasks they build on. pylint: disable=g-import-not-at-top,wrong-import-position
from tasks import ul2  # noqa: E402,F401
from tasks import benchmark  # noqa: E402,F401
