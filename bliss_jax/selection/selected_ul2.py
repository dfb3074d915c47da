"""A selection of LM chunks served through SALT's UL2 denoisers (SALT_DS's KD stage under the UL2 objective).

SALT_DS scores and selects sequences as a causal LM sees them (`doc_id#chunk_index` chunks of a base task at the
sequence length); SALT pretrains every model on the UL2 mixture. To train the KD stage on the selection with the same
objective as the rest of training, each selected chunk (its tokens, without the chunk's EOS) goes through the UL2
denoisers of `bliss_jax.data.ul2` exactly as a document does (re-chunked to the denoiser's length budget, corrupted,
EOS appended) and the four tasks are mixed at SALT's 6:2:1:1. Train on it with the `prefix_lm` feature converter.
Like `selected_task`, the selection is held in host memory (a few million tokens); paper-scale selections need a
file-backed source.
"""
import functools
from typing import Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from bliss_jax.data import seqio_tasks, ul2
from bliss_jax.selection.selected_task import selected_examples


def register_selected_ul2_mixture(name: str, base_task: str, keys: Sequence[str], *, sequence_length: int,
                                  split: str = "pool", rates: Sequence[float] = ul2.SALT_RATES,
                                  denoisers: Sequence[ul2.Denoiser] = ul2.SALT_DENOISERS,
                                  example_length: Optional[int] = None) -> seqio.Mixture:
  """Register the mixture `name` (split `train` only) of the UL2 denoisers over the selected chunks of
  `base_task:split` (chunked at `sequence_length` as the base task does; `keys` as `"doc_id#chunk_index"`)."""
  if len(rates) != len(denoisers):
    raise ValueError(f"need one rate per denoiser, got {len(rates)} rates for {len(denoisers)} denoisers")
  base = seqio.get_mixture_or_task(base_task)
  vocabulary = base.output_features["targets"].vocabulary
  eos = vocabulary.eos_id
  examples = selected_examples(base_task, split, keys, sequence_length)
  tokens = []
  for e in examples:
    t = np.asarray(e["targets"], np.int32)
    tokens.append(t[:-1] if len(t) and t[-1] == eos else t)  # the chunk's EOS; the denoisers append their own
  doc_ids = [f"{e['doc_id']}#{e['chunk_index']}" for e in examples]

  def dataset_fn(split, shuffle_files, seed=None):
    del split
    ds = tf.data.Dataset.from_tensor_slices({
        "targets": tf.ragged.constant(tokens, dtype=tf.int32, ragged_rank=1) if tokens else
                   tf.ragged.constant([], dtype=tf.int32, ragged_rank=1),
        "doc_id": tf.constant(doc_ids, tf.string, shape=[len(doc_ids)])}).map(dict)
    if shuffle_files and tokens:
      ds = ds.shuffle(len(tokens), seed=seed, reshuffle_each_iteration=True)
    return ds

  source = seqio.FunctionDataSource(dataset_fn, splits=("train",), caching_permitted=False)
  # The source reshuffles the chunks every epoch; the example buffer only separates the pieces of one chunk.
  buffer = max(1, min(seqio_tasks.DEFAULT_SHUFFLE_BUFFER_SIZE, 4 * len(tokens)))
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
