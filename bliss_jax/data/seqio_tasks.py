"""SeqIO tasks over documents: hash-split sources, chunking preprocessors, and registration helpers.

A document task turns ``(doc_id, text)`` pairs into examples

  ``{'targets': int32[<= L], 'doc_id': str, 'chunk_index': int32, 'chunk_start': int32, 'chunk_end': int32}``
  (``objective='lm'``)

where ``L = sequence_length['targets']``: the text is tokenized, cut into consecutive chunks of at most ``L - 1``
tokens (so that EOS fits; nothing is truncated away), and each chunk gets EOS. With ``objective='prefix_lm'``
each chunk (of at most ``I + T - 1`` tokens, ``I, T = sequence_length['inputs'], sequence_length['targets']``)
is further cut into ``inputs`` (no EOS) and ``targets`` (+ EOS) at a random point where both fit (see
``split_prefix``).

``(doc_id, chunk_index)`` names every example, so per-example scores map back to documents; ``[chunk_start,
chunk_end)`` are the chunk's token offsets in its document, so chunks of one document cut at different lengths (the
LM chunks of a task, the UL2 chunks over the same documents) can be matched by overlap.
"""
import functools
import hashlib
from typing import Callable, Iterable, Mapping, Optional, Sequence, Tuple

import seqio
import tensorflow as tf

from bliss_jax.choices import check_choice

Document = Tuple[str, str]
DocumentsFn = Callable[[], Iterable[Document]]
SPLITS = ('train', 'validation')
OBJECTIVES = ('lm', 'prefix_lm')
DEFAULT_VALIDATION_FRACTION = 0.05
# The source already shuffles whole documents every epoch; the example buffer only has to separate the chunks
# of one document. seqio's default (1,000) does that, and a bigger buffer only delays the first batch.
DEFAULT_SHUFFLE_BUFFER_SIZE = seqio.SHUFFLE_BUFFER_SIZE


def split_of(doc_id: str, validation_fraction: float = DEFAULT_VALIDATION_FRACTION) -> str:
  """Returns ``'validation'`` iff ``u(doc_id) < validation_fraction``, else ``'train'``.

  ``u(doc_id)`` is the first 8 bytes of SHA-256(doc_id) read as an integer over 2**64, uniform on [0, 1): the
  split of a document depends on its id alone, never on the order or number of the other documents.
  """
  digest = hashlib.sha256(doc_id.encode('utf-8')).digest()
  u = int.from_bytes(digest[:8], 'big') / 2.0**64
  return 'validation' if u < validation_fraction else 'train'


def split_documents(documents: Iterable[Document], split: str,
                    validation_fraction: float = DEFAULT_VALIDATION_FRACTION) -> Tuple[list, list]:
  """Returns ``(doc_ids, texts)`` of the documents in ``split``, in their original order."""
  check_choice('split', split, SPLITS)
  doc_ids, texts = [], []
  for doc_id, text in documents:
    if split_of(doc_id, validation_fraction) == split:
      doc_ids.append(doc_id)
      texts.append(text)
  return doc_ids, texts


def records_dataset(records: Sequence, keys: Sequence[str], shuffle: bool,
                    seed: Optional[int] = None) -> tf.data.Dataset:
  """The string attributes ``keys`` of each of ``records`` as one example each, in order or, with ``shuffle``, in a
  seeded random order reshuffled every epoch (a full shuffle): the source of a task over labelled documents."""
  columns = {key: [getattr(r, key) for r in records] for key in keys}
  ds = tf.data.Dataset.from_tensor_slices(
      {key: tf.constant(values, dtype=tf.string, shape=[len(records)]) for key, values in columns.items()})
  return ds.shuffle(len(records), seed=seed, reshuffle_each_iteration=True) if shuffle and records else ds


def document_source(documents_fn: DocumentsFn,
                    validation_fraction: float = DEFAULT_VALIDATION_FRACTION) -> seqio.FunctionDataSource:
  """Returns a ``seqio.FunctionDataSource`` of ``{'text', 'doc_id'}`` string features, split by id hash.

  ``documents_fn()`` is called, and its documents held in memory, each time a dataset is built: meant for
  corpora of up to a few GB; larger ones belong in a TFDS or file-based source. With
  ``shuffle_files`` the documents come in a seeded random order, reshuffled on every epoch (a full shuffle,
  unlike a bounded shuffle buffer). Multi-process sharding happens on these documents, so processes read
  disjoint documents.
  """

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    doc_ids, texts = split_documents(documents_fn(), split, validation_fraction)
    ds = tf.data.Dataset.from_tensor_slices({
        'doc_id': tf.constant(doc_ids, dtype=tf.string, shape=[len(doc_ids)]),
        'text': tf.constant(texts, dtype=tf.string, shape=[len(texts)]),
    })
    if shuffle_files and doc_ids:
      ds = ds.shuffle(len(doc_ids), seed=seed, reshuffle_each_iteration=True)
    return ds

  return seqio.FunctionDataSource(dataset_fn, splits=SPLITS, caching_permitted=False)


def chunk_length(sequence_length: Optional[Mapping[str, int]], include_inputs: bool = False) -> Optional[int]:
  """Tokens per chunk: ``T - 1`` (room for EOS), plus ``I`` with ``include_inputs``; None for no limit."""
  if sequence_length is None or sequence_length.get('targets') is None:
    return None
  length = sequence_length['targets'] - 1
  if include_inputs:
    if sequence_length.get('inputs') is None:
      raise ValueError(f"a prefix-LM task needs sequence_length['inputs'], got {dict(sequence_length)}")
    length += sequence_length['inputs']
  if length < 1:
    raise ValueError(f'sequence_length {dict(sequence_length)} leaves no room for tokens besides EOS')
  return length


def chunk_text(text: str, chunk_index: int, vocabulary: seqio.Vocabulary, sequence_length: int) -> str:
  """The text of chunk ``chunk_index`` of a document of an ``'lm'`` task at ``sequence_length`` (``split_tokens``'s
  cut of its tokens into ``chunk_length`` pieces), decoded; empty past the document's end."""
  n = chunk_length({'targets': sequence_length})
  tokens = list(vocabulary.encode(text))
  return vocabulary.decode(tokens[chunk_index * n:(chunk_index + 1) * n])


def split_tokens(dataset: tf.data.Dataset,
                 sequence_length: Optional[Mapping[str, int]] = None,
                 feature_key: str = 'targets',
                 include_inputs: bool = False,
                 max_length: Optional[int] = None) -> tf.data.Dataset:
  """Splits ``feature_key`` into consecutive chunks of ``chunk_length(sequence_length, include_inputs)`` tokens.

  Each chunk becomes an example with the document's other (scalar) features, an int32 ``chunk_index``
  (0, 1, ...) and its token offsets in the document, int32 ``chunk_start`` and ``chunk_end``; concatenating a
  document's chunks in ``chunk_index`` order gives back its token sequence exactly. A document with no tokens
  yields no examples; with ``sequence_length=None`` every non-empty document is one chunk. ``max_length``, when given, is the chunk length instead (``sequence_length`` and
  ``include_inputs`` are then ignored); the UL2 denoisers use it for their own length budgets.
  """
  if max_length is None:
    max_length = chunk_length(sequence_length, include_inputs)
  elif max_length < 1:
    raise ValueError(f'max_length must be >= 1, got {max_length}')

  def to_chunks(features):
    tokens = features[feature_key]
    n = tf.size(tokens, out_type=tf.int32)
    step = n if max_length is None else tf.constant(max_length, tf.int32)
    starts = tf.range(0, n, tf.maximum(step, 1))
    chunks = tf.RaggedTensor.from_row_starts(tokens, starts, validate=False)
    num_chunks = tf.size(starts)
    out = {k: tf.repeat(v[tf.newaxis], num_chunks, axis=0) for k, v in features.items() if k != feature_key}
    out[feature_key] = chunks
    out['chunk_index'] = tf.range(num_chunks, dtype=tf.int32)
    out['chunk_start'] = tf.cast(starts, tf.int32)
    out['chunk_end'] = tf.cast(starts + tf.cast(chunks.row_lengths(), starts.dtype), tf.int32)
    return out

  # `unbatch` leaves the chunks with a ragged_rank-0 RaggedTensorSpec (TF 2.21); the identity map turns that
  # back into the plain TensorSpec that seqio's feature checks and packing expect.
  return dataset.map(to_chunks, num_parallel_calls=tf.data.AUTOTUNE).unbatch().map(dict)


@seqio.map_over_dataset(num_seeds=1)
def split_prefix(features: Mapping[str, tf.Tensor],
                 seed: tf.Tensor,
                 sequence_length: Optional[Mapping[str, int]] = None) -> Mapping[str, tf.Tensor]:
  """Cuts ``targets`` (n tokens) at a uniform random point s into ``inputs = t[:s]``, ``targets = t[s:]``.

  ``s`` is drawn from ``[max(1, n - T + 1), min(I, n - 1)]`` so that inputs fit in ``I`` tokens and targets,
  with EOS, in ``T``, and both are non-empty when ``n >= 2`` (``s = 0`` for ``n = 1``); a missing length
  drops its bound. After ``split_tokens`` a full chunk (``n = I + T - 1``) has a single such point, ``s = I``:
  only the last chunk of a document is cut at a random point.
  """
  sequence_length = sequence_length or {}
  tokens = features['targets']
  n = tf.size(tokens, out_type=tf.int32)
  lo, hi = tf.constant(1), n - 1
  if sequence_length.get('targets') is not None:
    lo = tf.maximum(lo, n - sequence_length['targets'] + 1)
  if sequence_length.get('inputs') is not None:
    hi = tf.minimum(hi, sequence_length['inputs'])
  hi = tf.maximum(hi, lo)
  s = tf.random.stateless_uniform([], seed=seed, minval=lo, maxval=hi + 1, dtype=tf.int32)
  s = tf.clip_by_value(s, 0, tf.maximum(n - 1, 0))
  out = dict(features)
  out['inputs'] = tokens[:s]
  out['targets'] = tokens[s:]
  return out


def document_preprocessors(objective: str = 'lm', extra_keys: Sequence[str] = ()) -> list:
  """The preprocessors of a document task: text -> targets, tokenize, chunk, [prefix split], append EOS.

  ``extra_keys`` are further (scalar) source features kept in every example, e.g. ``('domain', 'quality')``:
  metadata for reports, which the feature converters drop.
  """
  check_choice('objective', objective, OBJECTIVES)
  prefix_lm = objective == 'prefix_lm'
  key_map = {'targets': 'text', 'doc_id': 'doc_id', **{key: key for key in extra_keys}}
  return [
      functools.partial(seqio.preprocessors.rekey, key_map=key_map),
      functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
      functools.partial(split_tokens, include_inputs=prefix_lm),
      *([split_prefix] if prefix_lm else []),
      seqio.preprocessors.append_eos_after_trim,
  ]


def output_features(vocabulary: seqio.Vocabulary, objective: str = 'lm') -> Mapping[str, seqio.Feature]:
  """``targets`` (+ EOS) and, for ``prefix_lm``, ``inputs`` (no EOS), both in ``vocabulary``."""
  features = {'targets': seqio.Feature(vocabulary, add_eos=True)}
  if objective == 'prefix_lm':
    features = {'inputs': seqio.Feature(vocabulary, add_eos=False), **features}
  return features


def _add_task(name: str, **task_kwargs) -> seqio.Task:
  """Registers a task, replacing any task registered under ``name`` (so re-registration is harmless)."""
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, **task_kwargs)


def register_document_task(name: str,
                           documents_fn: DocumentsFn,
                           vocabulary: seqio.Vocabulary,
                           validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                           *,
                           objective: str = 'lm',
                           shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER_SIZE) -> seqio.Task:
  """Registers (or re-registers) a SeqIO task over ``documents_fn()`` with splits ``train``/``validation``.

  Args:
    name: the task name; an existing task of that name is replaced.
    documents_fn: returns the ``(doc_id, text)`` pairs, in a deterministic order, with unique ids.
    vocabulary: tokenizes ``text`` into ``targets`` (and ``inputs``).
    validation_fraction: expected fraction of documents in ``validation`` (see ``split_of``).
    objective: ``'lm'`` (targets only) or ``'prefix_lm'`` (random inputs/targets cut, see ``split_prefix``).
    shuffle_buffer_size: the buffer of the example-level shuffle after chunking.

  Returns:
    The registered ``seqio.Task``.
  """
  return _add_task(
      name,
      source=document_source(documents_fn, validation_fraction),
      preprocessors=document_preprocessors(objective),
      output_features=output_features(vocabulary, objective),
      shuffle_buffer_size=shuffle_buffer_size)


def register_tfds_c4_task(name: str = 'c4_en',
                          tfds_name: str = 'c4/en:3.1.0',
                          vocabulary: Optional[seqio.Vocabulary] = None,
                          *,
                          tfds_data_dir: Optional[str] = None,
                          read_only: bool = False,
                          objective: str = 'lm',
                          shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER_SIZE) -> seqio.Task:
  """Registers C4 from TFDS (``text`` -> chunked ``targets``, ``url`` -> ``doc_id``), splits train/validation.

  Registration reads nothing and touches no network. Building a dataset opens the prepared dataset in
  ``tfds_data_dir`` (TFDS's default data dir when None); if it is not there, TFDS's own ``tfds.load`` fetches
  it (``try_gcs``, else download and prepare) unless ``read_only``, which makes a missing dataset an error.
  The vocabulary defaults to ``default_vocabulary()``.
  """
  if vocabulary is None:
    from bliss_jax.data import vocabulary as vocabulary_lib  # pylint: disable=g-import-not-at-top
    vocabulary = vocabulary_lib.default_vocabulary()
  source = seqio.TfdsDataSource(
      tfds_name=tfds_name, tfds_data_dir=tfds_data_dir, read_only=read_only,
      splits={'train': 'train', 'validation': 'validation'})
  preprocessors = document_preprocessors(objective)
  preprocessors[0] = functools.partial(seqio.preprocessors.rekey, key_map={'targets': 'text', 'doc_id': 'url'})
  return _add_task(
      name,
      source=source,
      preprocessors=preprocessors,
      output_features=output_features(vocabulary, objective),
      shuffle_buffer_size=shuffle_buffer_size)


def register_mixture(name: str, tasks: Sequence[Tuple[str, float]]) -> seqio.Mixture:
  """Registers (or re-registers) a mixture of ``(task_name, rate)`` pairs."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, list(tasks))


ItemsFn = Callable[[], Sequence[Tuple[str, str, str]]]


@seqio.map_over_dataset
def keep_last_inputs(features: Mapping[str, tf.Tensor],
                     sequence_length: Optional[Mapping[str, int]] = None) -> Mapping[str, tf.Tensor]:
  """Keeps the LAST ``sequence_length['inputs']`` tokens of ``inputs`` (a context's end is what its continuation
  depends on; seqio's own trimming would keep the start)."""
  out = dict(features)
  if sequence_length and sequence_length.get('inputs') is not None:
    out['inputs'] = features['inputs'][-sequence_length['inputs']:]
  return out


def register_continuation_task(name: str,
                               items_fn: ItemsFn,
                               vocabulary: seqio.Vocabulary,
                               validation_fraction: float = DEFAULT_VALIDATION_FRACTION) -> seqio.Task:
  """Registers a prefix-LM task of ``(id, context, continuation)`` items: ``inputs`` = the context (its last tokens
  when too long), ``targets`` = the continuation, no EOS, so with the ``prefix_lm`` feature converter only the
  continuation's tokens carry loss (LAMBADA as an upper-level objective). Splits by id hash like documents."""
  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    check_choice('split', split, SPLITS)
    items = [x for x in items_fn() if split_of(x[0], validation_fraction) == split]
    ds = tf.data.Dataset.from_tensor_slices({
        'doc_id': tf.constant([x[0] for x in items], tf.string, shape=[len(items)]),
        'inputs': tf.constant([x[1] for x in items], tf.string, shape=[len(items)]),
        'targets': tf.constant([x[2] for x in items], tf.string, shape=[len(items)]),
    })
    if shuffle_files and items:
      ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    return ds

  return _add_task(
      name,
      source=seqio.FunctionDataSource(dataset_fn, splits=SPLITS, caching_permitted=False),
      preprocessors=[functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False), keep_last_inputs],
      output_features={'inputs': seqio.Feature(vocabulary, add_eos=False),
                       'targets': seqio.Feature(vocabulary, add_eos=False)})
