"""From a registered SeqIO task or mixture to per-process numpy batches for training and evaluation.

Every batch is a dict of int32 arrays of shape ``[batch_size, sequence_length]``:

  ``decoder_target_tokens, decoder_input_tokens, decoder_loss_weights, decoder_segment_ids, decoder_positions``

plus ``decoder_causal_attention`` for the prefix-LM converters. These are the keys of seqio's
``DecoderFeatureConverter``; without packing seqio omits segment ids and positions, and ``get_dataset`` adds
them (segment 1 on every non-padding token, positions 0, 1, ... there), so models see one format.

Feature converters (``feature_converter``), for a row of ``L`` tokens:

| name | task lengths | an example's inputs + targets |
|---|---|---|
| ``'decoder'`` | ``targets <= L`` | targets only |
| ``'prefix_lm'`` | ``inputs <= L // 2``, ``targets <= L - L // 2`` | seqio's split of the row |
| ``'prefix_lm_shared'`` | ``inputs <= L``, ``targets <= L`` | ``inputs + targets <= L`` (checked) |

``'prefix_lm_shared'`` is for tasks that keep each example within the row themselves, as the UL2 denoisers
(``data/ul2.py``) do: a causal-LM example can then fill the whole row.

Id 0 is padding to seqio: its packing cuts an example at its count of non-zero ids and gives id 0 segment 0,
and the converters give target id 0 no loss weight. A Hugging Face tokenizer's id 0 is a token
(``hf_tokenizer.HF_VOCABULARIES``' ``id0_is_token``), so ``model_features`` converts such a task's ids shifted up
by one (padding alone is 0) and shifts the model's tokens back: every token, id 0 included, gets its segment, its
position and loss weight 1, and padding stays 0 with weight 0. Each example's first decoder input is the
vocabulary's ``start_id`` where it has one (a Llama tokenizer's bos, as ``transformers`` trains and evaluates), else 0
(seqio's, and for Qwen and GPT-NeoX tokenizers, which add no bos, their id 0). Every other vocabulary is converted as
seqio converts it.

``seqio_batch_source`` adapts all this to the trainer's ``BatchSource`` contract (global batch size, resumable
``BatchIterator`` with a ``position``).
"""
import dataclasses
from typing import Callable, Dict, Iterator, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

from bliss_jax.choices import check_choice
from bliss_jax.data import hf_tokenizer

FEATURE_CONVERTERS = ('decoder', 'prefix_lm', 'prefix_lm_shared')
PREFIX_LM_CONVERTERS = ('prefix_lm', 'prefix_lm_shared')
Batch = Dict[str, np.ndarray]


def task_feature_lengths(sequence_length: int, feature_converter: str = 'decoder') -> Dict[str, int]:
  """Task lengths whose converted model length is ``sequence_length``.

  ``decoder``: ``{'targets': L}``. ``prefix_lm``: seqio's split of the row, ``{'inputs': L // 2, 'targets':
  L - L // 2}``. ``prefix_lm_shared``: ``{'inputs': L, 'targets': L}``, the row shared by both.
  """
  check_choice('feature_converter', feature_converter, FEATURE_CONVERTERS)
  if feature_converter == 'decoder':
    return {'targets': sequence_length}
  if feature_converter == 'prefix_lm_shared':
    return {'inputs': sequence_length, 'targets': sequence_length}
  return {'inputs': sequence_length // 2, 'targets': sequence_length - sequence_length // 2}


class SharedRowPrefixLMFeatureConverter(seqio.PrefixLMFeatureConverter):
  """seqio's prefix-LM converter (inputs under the prefix mask, loss on the targets only) for task lengths
  ``{'inputs': L, 'targets': L}`` and rows of ``L`` tokens: an example's inputs + targets may use the whole row
  in any proportion. An example longer than the row raises an error instead of being cut."""

  @staticmethod
  def _row_length(task_feature_lengths: Mapping[str, int]) -> int:
    if task_feature_lengths['inputs'] != task_feature_lengths['targets']:
      raise ValueError(f'a shared row needs equal inputs and targets lengths, got {dict(task_feature_lengths)}')
    return task_feature_lengths['targets']

  def _concat_task_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
    row = self._row_length(task_feature_lengths)
    return {'targets': row, 'inputs_width': row, 'inputs_width_add_pos': row}

  def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    row = self._row_length(task_feature_lengths)

    def check(features):
      size = tf.size(features['inputs']) + tf.maximum(tf.size(features['targets']), 1)
      with tf.control_dependencies([tf.debugging.assert_less_equal(
          size, row, message=f'an example is longer than the shared row of {row} tokens')]):
        return dict(features, inputs=tf.identity(features['inputs']))

    return super()._convert_features(ds.map(check, num_parallel_calls=tf.data.AUTOTUNE), task_feature_lengths)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
    return super().get_model_feature_lengths({'inputs': 0, 'targets': self._row_length(task_feature_lengths)})


def make_feature_converter(feature_converter: str = 'decoder', pack: bool = True,
                           bos_id: int = 0) -> seqio.FeatureConverter:
  """The seqio converter for ``feature_converter`` (see the module docstring); ``bos_id`` is the decoder input
  before each example's first token."""
  check_choice('feature_converter', feature_converter, FEATURE_CONVERTERS)
  if feature_converter == 'prefix_lm_shared':
    return SharedRowPrefixLMFeatureConverter(loss_on_targets_only=True, pack=pack, bos_id=bos_id)
  return seqio.DecoderFeatureConverter(pack=pack, bos_id=bos_id)


def _add_unpacked_segments(features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Adds segment ids (1 on non-padding tokens) and positions (0, 1, ... there) to unpacked examples."""
  features = dict(features)
  segment_ids = tf.cast(tf.not_equal(features['decoder_target_tokens'], 0), tf.int32)
  positions = tf.range(tf.shape(segment_ids)[-1], dtype=tf.int32)
  features['decoder_segment_ids'] = segment_ids
  features['decoder_positions'] = positions * segment_ids
  return features


def _shift_ids(features: Mapping[str, tf.Tensor], keys, shift: int) -> Dict[str, tf.Tensor]:
  """``features`` with the ids of ``keys`` moved by ``shift``: +1 makes a token of id 0 non-zero, -1 moves them
  back (padding, 0, stays 0)."""
  return {k: tf.maximum(v + shift, 0) if k in keys else v for k, v in features.items()}


@dataclasses.dataclass(frozen=True)
class DecoderIds:
  """How a vocabulary's ids enter the decoder features (module docstring): ``shift`` is added to every id before
  packing and conversion and taken off the model's tokens after (1 where id 0 is a token, else 0); ``bos_id`` is the
  decoder input before each example's first token, in shifted ids."""
  shift: int
  bos_id: int


def decoder_ids(vocabulary: seqio.Vocabulary) -> DecoderIds:
  """``vocabulary``'s ``DecoderIds``: a Hugging Face tokenizer's shift and start id, else seqio's (0 and 0)."""
  if not isinstance(vocabulary, hf_tokenizer.HF_VOCABULARIES):
    return DecoderIds(0, 0)
  shift = 1 if vocabulary.id0_is_token else 0
  return DecoderIds(shift, 0 if vocabulary.start_id is None else vocabulary.start_id + shift)


def model_features(ds: tf.data.Dataset,
                   task_feature_lengths: Mapping[str, int],
                   vocabulary: seqio.Vocabulary,
                   feature_converter: str = 'decoder',
                   pack: bool = True) -> tf.data.Dataset:
  """A task's examples ``ds`` (ids of ``vocabulary``) as model features (module docstring): ``feature_converter``'s
  features, with segment ids and positions also when unpacked; one model example per task example when unpacked.

  Where ``vocabulary``'s id 0 is a token, the conversion sees every id shifted up by one and the model's tokens
  are shifted back; where it has a ``start_id``, that is each example's first decoder input (module docstring).
  """
  ids = decoder_ids(vocabulary)
  shift = ids.shift
  converter = make_feature_converter(feature_converter, pack, bos_id=ids.bos_id)
  if shift:
    ds = ds.map(lambda x: _shift_ids(x, ('inputs', 'targets'), shift), num_parallel_calls=tf.data.AUTOTUNE)
  ds = converter(ds, task_feature_lengths)
  if not pack:
    ds = ds.map(_add_unpacked_segments, num_parallel_calls=tf.data.AUTOTUNE)
  if shift:
    ds = ds.map(lambda x: _shift_ids(x, ('decoder_target_tokens', 'decoder_input_tokens'), -shift),
                num_parallel_calls=tf.data.AUTOTUNE)
  return ds


def get_dataset(name: str,
                split: str,
                sequence_length: int,
                batch_size: int,
                *,
                shuffle: bool,
                seed: Optional[int],
                pack: bool = True,
                repeat: bool,
                feature_converter: str = 'decoder',
                process_index: int = 0,
                process_count: int = 1,
                drop_remainder: bool = True) -> tf.data.Dataset:
  """Returns batches of the task or mixture ``name`` for one process.

  Args:
    name: a registered SeqIO task or mixture.
    split: e.g. ``'train'`` or ``'validation'``.
    sequence_length: tokens per row of a batch.
    batch_size: rows per batch on THIS process (the global batch is ``batch_size * process_count``); the
      last, partial batch is dropped.
    shuffle: shuffle documents (``shuffle_files``) and examples (the task's shuffle buffer).
    seed: seeds all shuffling and random preprocessing; the same seed gives the same batches.
    pack: pack several examples per row (seqio's packing); otherwise one example per row, padded.
    repeat: repeat forever (reshuffled each epoch); otherwise one epoch.
    feature_converter: ``'decoder'`` (targets-only LM), ``'prefix_lm'`` or ``'prefix_lm_shared'`` (the task
      must have ``inputs``; see the module docstring).
    process_index: this process's index; it reads shard ``process_index`` of ``process_count`` disjoint
      shards of the source.
    process_count: the number of processes reading the data.
    drop_remainder: drop the last, partial batch (training); otherwise pad it to ``batch_size`` with all-zero
      rows, whose loss weights are 0, so evaluation sees every token with one batch shape.

  Returns:
    A ``tf.data.Dataset`` of dicts of int32 ``[batch_size, sequence_length]`` tensors (see module docstring).
  """
  lengths = task_feature_lengths(sequence_length, feature_converter)
  provider = seqio.get_mixture_or_task(name)
  if 'inputs' in lengths and 'inputs' not in provider.output_features:
    raise ValueError(f"feature_converter={feature_converter!r} needs a task with 'inputs'; {name!r} has only "
                     f'{sorted(provider.output_features)} (register it with objective="prefix_lm")')
  ds = provider.get_dataset(
      lengths,
      split=split,
      use_cached=False,
      shuffle=shuffle,
      seed=seed,
      shard_info=seqio.ShardInfo(index=process_index, num_shards=process_count),
      num_epochs=None if repeat else 1,
      trim_output_features=True)
  ds = model_features(ds, lengths, provider.output_features['targets'].vocabulary, feature_converter, pack)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  if not drop_remainder:
    ds = ds.map(lambda b: _pad_rows(b, batch_size))
  return ds.prefetch(tf.data.AUTOTUNE)


def _pad_rows(batch: Mapping[str, tf.Tensor], batch_size: int) -> Dict[str, tf.Tensor]:
  """Pads a partial batch with all-zero rows up to ``batch_size``."""
  def pad(x):
    padding = [[0, batch_size - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.ensure_shape(tf.pad(x, padding), [batch_size] + x.shape[1:].as_list())
  return {k: pad(v) for k, v in batch.items()}


class BatchIterator:
  """A numpy iterator over a batched dataset that knows how many batches it has yielded.

  ``position`` is the number of batches yielded so far, counting from the start of the dataset; save it with
  a checkpoint and pass it back as ``start_position`` to resume with exactly the next batch. Resuming skips
  ``start_position`` batches through the whole input pipeline (``tf.data.Dataset.skip``), so it costs
  O(start_position) batches of reading and preprocessing, and it is exact only when the dataset is
  deterministic (``get_dataset`` with a fixed seed is).
  """

  def __init__(self, dataset: tf.data.Dataset, start_position: int = 0):
    if start_position < 0:
      raise ValueError(f'start_position must be >= 0, got {start_position}')
    self.position = start_position
    self._iterator = dataset.skip(start_position).as_numpy_iterator()

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    batch = next(self._iterator)
    self.position += 1
    return batch


def task_vocabulary(name: str) -> seqio.Vocabulary:
  """The ``targets`` vocabulary of a task or mixture."""
  return seqio.get_mixture_or_task(name).output_features['targets'].vocabulary


def vocabulary_size(name: str) -> int:
  """Ids in the ``targets`` vocabulary of a task or mixture, extra ids included (the model's minimum)."""
  return task_vocabulary(name).vocab_size


def seqio_batch_source(mixture_or_task_name: str,
                       *,
                       batch_size: int,
                       sequence_length: int,
                       seed: int = 0,
                       pack: bool = True,
                       feature_converter: str = 'decoder') -> Callable[..., BatchIterator]:
  """Returns a ``trainer.BatchSource`` over a task or mixture: a function of ``(split, *, start_position=0,
  process_index=0, process_count=1, repeat=True)`` returning a ``BatchIterator`` of that process's batches.

  Unlike ``get_dataset``, ``batch_size`` here is GLOBAL: each of the ``process_count`` processes gets
  ``batch_size // process_count`` rows (it must divide). The train split is shuffled with ``seed``; other
  splits are read in order. A repeating stream drops nothing (it never ends); a single pass (``repeat=False``,
  evaluation) pads its last batch with zero-weight rows instead of dropping it, so every token is evaluated. The
  source names its task in ``source.seqio_tasks`` (the trainer records the task's vocabulary).
  """

  def source(split: str, *, start_position: int = 0, process_index: int = 0, process_count: int = 1,
             repeat: bool = True) -> BatchIterator:
    if batch_size % process_count:
      raise ValueError(f'batch_size={batch_size} is not divisible by process_count={process_count}')
    dataset = get_dataset(
        mixture_or_task_name, split, sequence_length, batch_size // process_count, shuffle=split == 'train',
        seed=seed, pack=pack, repeat=repeat, feature_converter=feature_converter, process_index=process_index,
        process_count=process_count, drop_remainder=repeat)
    return BatchIterator(dataset, start_position=start_position)

  source.seqio_tasks = (mixture_or_task_name,)
  return source


def token_counts(name: str,
                 split: str,
                 max_examples: Optional[int] = None,
                 sequence_length: Optional[int] = None) -> np.ndarray:
  """Counts each token id among the ``targets`` (EOS included) of the first ``max_examples`` examples.

  Examples come unshuffled from the task or mixture, chunked as ``get_dataset`` chunks them for
  ``sequence_length`` (no chunking when None: one example per document), with seed 0 for random preprocessing, so
  every call gives the same counts. For prefix-LM tasks only the targets (which carry the loss) are counted. Returns int64 counts indexed by token id, of length
  ``vocabulary.vocab_size``.
  """
  provider = seqio.get_mixture_or_task(name)
  vocab_size = provider.output_features['targets'].vocabulary.vocab_size
  converter = 'prefix_lm' if 'inputs' in provider.output_features else 'decoder'
  lengths = None if sequence_length is None else task_feature_lengths(sequence_length, converter)
  # seed=0: a task with random preprocessing (a prefix-LM split point, a denoiser's spans) gives the same examples in
  # every call and process, as the seeded held-out evaluation does
  ds = provider.get_dataset(lengths, split=split, shuffle=False, num_epochs=1, seed=0)
  if max_examples is not None:
    ds = ds.take(max_examples)
  counts = np.zeros(vocab_size, np.int64)
  for example in ds.map(lambda x: x['targets']).as_numpy_iterator():
    counts += np.bincount(example, minlength=vocab_size)[:vocab_size]
  return counts


def token_unigram_entropy(name: str,
                          split: str,
                          max_examples: Optional[int] = None,
                          sequence_length: Optional[int] = None) -> float:
  """Entropy, in nats per token, of the empirical unigram distribution of target tokens (EOS included).

  ``H = -sum_v p_v log p_v`` with ``p_v = c_v / sum_u c_u`` over the counts of ``token_counts``: the loss of the
  best context-free predictor of these tokens, a baseline that a language model's held-out loss must beat.
  """
  counts = token_counts(name, split, max_examples, sequence_length)
  total = counts.sum()
  if total == 0:
    raise ValueError(f'no target tokens in {name}:{split}')
  p = counts[counts > 0] / total
  return float(-(p * np.log(p)).sum())
