"""A selection of LM chunks served through SALT's UL2 denoisers (SALT_DS's KD stage under the UL2 objective).

SALT_DS scores and selects sequences as a causal LM sees them (`doc_id#chunk_index` chunks of a base task at the
sequence length); SALT pretrains every model on the UL2 mixture. To train the KD stage on the selection with the same
objective as the rest of training, each selected chunk (its tokens, without the chunk's EOS) goes through the UL2
denoisers of `bliss_jax.data.ul2` exactly as a document does (re-chunked to the denoiser's length budget, corrupted,
EOS appended) and the four tasks are mixed at SALT's 6:2:1:1. Train on it with the `prefix_lm` feature converter.
The chunks are read by index from the base split's chunk store (`data/chunk_store.py`) as the denoisers ask for them:
only the selection's indices are held in memory, shuffled every epoch as a SeqIO source shuffles its examples.
"""
import functools
from typing import Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from bliss_jax.data import seqio_tasks, ul2
from bliss_jax.data.chunk_store import ChunkStore


def register_selected_ul2_mixture(name: str, store: ChunkStore, keys: Sequence[str], *,
                                  rates: Sequence[float] = ul2.SALT_RATES,
                                  denoisers: Sequence[ul2.Denoiser] = ul2.SALT_DENOISERS,
                                  example_length: Optional[int] = None) -> seqio.Mixture:
  """Register the mixture `name` (split `train` only) of the UL2 denoisers over the chunks `keys`
  (`"doc_id#chunk_index"`) of a chunk store of the base task's split."""
  if len(rates) != len(denoisers):
    raise ValueError(f"need one rate per denoiser, got {len(rates)} rates for {len(denoisers)} denoisers")
  base = seqio.get_mixture_or_task(store.manifest["task"])
  vocabulary = base.output_features["targets"].vocabulary
  eos = vocabulary.eos_id
  indices = store.indices_of(list(keys))

  def read(index):
    chunk = store.read([int(index)])[0]
    t = np.asarray(chunk["targets"], np.int32)
    key = f"{chunk['doc_id']}#{chunk.get('chunk_index', 0)}"
    return (t[:-1] if len(t) and t[-1] == eos else t), key.encode()  # the chunk's EOS; the denoisers append theirs

  def example(index):
    targets, doc_id = tf.numpy_function(read, [index], (tf.int32, tf.string), stateful=False)
    return {"targets": tf.ensure_shape(targets, [None]), "doc_id": tf.ensure_shape(doc_id, [])}

  def dataset_fn(split, shuffle_files, seed=None):
    del split
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(indices, tf.int64))
    if shuffle_files and len(indices):
      ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    return ds.map(example)

  source = seqio.FunctionDataSource(dataset_fn, splits=("train",), caching_permitted=False)
  # The source reshuffles the chunks every epoch; the example buffer only separates the pieces of one chunk.
  buffer = max(1, min(seqio_tasks.DEFAULT_SHUFFLE_BUFFER_SIZE, 4 * len(indices)))
  total = float(sum(rates))
  entries = []
  for denoiser, rate in zip(denoisers, rates):
    if rate <= 0:
      continue
    task_name = f"{name}_{denoiser.name}"
    seqio_tasks._add_task(  # pylint: disable=protected-access
        task_name, source=source,
        preprocessors=[functools.partial(ul2.denoise, denoiser=denoiser, example_length=example_length),
                       seqio.preprocessors.append_eos_after_trim],
        output_features=ul2.ul2_output_features(vocabulary), shuffle_buffer_size=buffer)
    entries.append((task_name, rate / total))
  return seqio_tasks.register_mixture(name, entries)
