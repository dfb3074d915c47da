"""UL2 denoisers for a decoder-only model, as SeqIO preprocessors, tasks and mixtures (SALT's pretraining mix).

Every denoiser turns a chunk ``t`` of ``n`` document tokens into ``inputs`` (seen bidirectionally, no loss) and
``targets`` (predicted causally, with the loss; EOS appended); a prefix-LM feature converter
(``pipeline.get_dataset(..., feature_converter='prefix_lm_shared')``) concatenates them into one decoder sequence
with ``decoder_causal_attention`` on the inputs (+1 position, seqio's convention) and loss weights on the targets
only. An optional mode token ``m`` ([R]/[S]/[X], UL2 section 3.1.2) opens the inputs.

| denoiser | UL2 mode | inputs | targets |
|---|---|---|---|
| causal LM | [S] | ``[m]`` | ``t`` |
| prefix LM, mean prefix ``f*n`` | [S] | ``[m] + t[:s]`` | ``t[s:]`` |
| span corruption (r, mu) | [R] (0.15, 3), [X] (0.5, 32) | ``[m]`` + ``t``, span i -> sentinel i | ``<s_0> span_0 <s_1> ...`` |

SALT (App. E) mixes causal LM : prefix LM (f = 1/4) : span corruption (r = 0.15, mu = 3) : span corruption
(r = 0.5, mu = 32) at 6 : 2 : 1 : 1 (``SALT_DENOISERS``, ``SALT_RATES``); seqio mixes examples at these rates.

Span corruption follows T5's ``random_spans_noise_mask``: a chunk of ``n >= 2`` tokens gets exactly
``k = clip(round(r * n), 1, n - 1)`` noise tokens in ``S = max(1, round(k / mu))`` spans (clipped so the
non-noise tokens can separate them), the noise tokens split into ``S`` non-empty spans uniformly at random (a
random composition of ``k``), the ``n - k`` non-noise tokens likewise. T5 puts a non-noise run first and a noise
span last, so the last token is always noise and a one-span chunk (``k < 1.5 mu``) always loses its end: with
``t5_edges=False`` (the default here) the non-noise tokens split into ``S + 1`` runs of which the first and the
last may be empty, so the spans sit anywhere and their count is still exactly ``S``. Sentinel ``i`` is
``vocab_size - 1 - i`` (T5's ``<extra_id_i>``); chunks of fewer than 2 tokens are not corrupted. The realised
noise density and mean span length are thus deterministic functions of the chunk lengths (only the span
placement is random). Prefix LM draws the prefix length ``s`` uniformly from ``[c - w, c + w]``, ``c =
clip(round(f * n), 1, n - 1)``, ``w = min(c - 1, n - 1 - c)``: mean exactly ``c``, about ``f * n`` (T5's
``random_prefix_noise_mask`` is the case f = 1/2).

Lengths. Each denoiser cuts documents into chunks of the longest length ``n`` whose outputs always fit
``sequence_length`` (``inputs <= I``, ``targets + EOS <= T``), need at most the available sentinels, and make
examples of at most ``example_length`` tokens (``chunk_length``). So seqio never trims anything away and every
document token lands in exactly one example: filling the sentinels back in (``fill_in_sentinels``) and
concatenating a document's chunks in ``chunk_index`` order gives back its tokens. An example's length is a
deterministic function of ``n`` (``m + n + 1``, plus ``2 S`` sentinels for span corruption). ``example_length``
defaults to ``min(I, T)`` (``default_example_length``), which is the whole row in the layout the UL2 mixtures are
meant for, ``feature_converter='prefix_lm_shared'`` (``I = T = L``: inputs and targets share the row of ``L``
tokens): a causal-LM chunk then fills a row (``m + n + 1 = L``), and prefix-LM and span-corruption examples
(inputs with sentinels + targets with sentinels + EOS) are up to ``L`` tokens, so every position of the row is
trained. Under seqio's split of the row (``feature_converter='prefix_lm'``, ``I = T = L / 2``) the same default is
half the row, and ``example_length = L // 2`` with ``'prefix_lm_shared'`` gives those same examples: any two fill
a row (97% of the tokens were non-padding at L = 128), but no position past ``L / 2`` is ever trained.
"""
import dataclasses
import functools
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import seqio
import tensorflow as tf

from bliss_jax.choices import check_choice
from bliss_jax.data import seqio_tasks

OBJECTIVES = ('causal_lm', 'prefix_lm', 'span_corruption')
MODES = ('R', 'S', 'X')
METADATA_KEYS = ('doc_id', 'domain', 'quality')
DENOISER_FEATURE = 'denoiser'


@dataclasses.dataclass(frozen=True)
class Denoiser:
  """One UL2 task.

  Attributes:
    name: names the task (``f'{mixture}_{name}'``) and fills the example's ``denoiser`` feature.
    objective: ``'causal_lm'``, ``'prefix_lm'`` or ``'span_corruption'``.
    noise_density: span corruption's r, the fraction of tokens corrupted.
    mean_noise_span_length: span corruption's mu.
    prefix_fraction: prefix LM's f, the mean prefix length over the chunk length.
    mode: the UL2 mode token this task uses when mode tokens are on: ``'R'``, ``'S'`` or ``'X'``.
  """
  name: str
  objective: str
  noise_density: float = 0.15
  mean_noise_span_length: float = 3.0
  prefix_fraction: float = 0.25
  mode: str = 'S'

  def __post_init__(self):
    check_choice('objective', self.objective, OBJECTIVES)
    check_choice('mode', self.mode, MODES)
    if not 0 < self.noise_density < 1 or self.mean_noise_span_length < 1:
      raise ValueError(f'need 0 < noise_density < 1 and mean_noise_span_length >= 1, got {self}')
    if not 0 < self.prefix_fraction < 1:
      raise ValueError(f'prefix_fraction must be in (0, 1), got {self.prefix_fraction}')


CAUSAL_LM = Denoiser('causal_lm', 'causal_lm', mode='S')
PREFIX_LM = Denoiser('prefix_lm', 'prefix_lm', prefix_fraction=0.25, mode='S')
SPAN_CORRUPTION = Denoiser('span_corruption', 'span_corruption', noise_density=0.15, mean_noise_span_length=3.0,
                           mode='R')
EXTREME_SPAN_CORRUPTION = Denoiser('extreme_span_corruption', 'span_corruption', noise_density=0.5,
                                   mean_noise_span_length=32.0, mode='X')
SALT_DENOISERS = (CAUSAL_LM, PREFIX_LM, SPAN_CORRUPTION, EXTREME_SPAN_CORRUPTION)
SALT_RATES = (6.0, 2.0, 1.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# Sentinels and mode tokens.

ModeTokensArg = Union[None, str, Mapping[str, int]]


def mode_token_ids(vocabulary: seqio.Vocabulary, mode_tokens: ModeTokensArg) -> Optional[Dict[str, int]]:
  """The ids of the [R]/[S]/[X] mode tokens, or None for no mode tokens.

  ``mode_tokens``: None (none); ``'extra_ids'``: the three lowest extra ids, ``vocab_size - extra_ids + {0, 1,
  2}`` for R, S, X (so sentinels, which count down from the top, keep ``extra_ids - 3`` ids); or an explicit
  ``{'R': id, 'S': id, 'X': id}``.
  """
  if mode_tokens is None:
    return None
  if mode_tokens == 'extra_ids':
    if vocabulary.extra_ids < len(MODES) + 1:
      raise ValueError(f'mode_tokens="extra_ids" needs more than {len(MODES)} extra ids, the vocabulary has '
                       f'{vocabulary.extra_ids}')
    first = vocabulary.vocab_size - vocabulary.extra_ids
    return {mode: first + i for i, mode in enumerate(MODES)}
  if isinstance(mode_tokens, str):
    raise ValueError(f"mode_tokens must be None, 'extra_ids' or a mapping, got {mode_tokens!r}")
  ids = {mode: int(mode_tokens[mode]) for mode in MODES}
  for mode, i in ids.items():
    if not 0 < i < vocabulary.vocab_size:
      raise ValueError(f'mode token {mode}={i} is outside the vocabulary of {vocabulary.vocab_size}')
  return ids


def num_sentinels(vocabulary: seqio.Vocabulary, mode_ids: Optional[Mapping[str, int]] = None) -> int:
  """Sentinels available: the extra ids counted down from the top, up to the first one a mode token takes."""
  count = vocabulary.extra_ids
  top = vocabulary.vocab_size - 1
  for i in (mode_ids or {}).values():
    if top - count < i <= top:
      count = top - i
  return count


def sentinel_id(vocab_size: int, i: int) -> int:
  """Sentinel ``i`` (T5's ``<extra_id_i>``): ``vocab_size - 1 - i``."""
  return vocab_size - 1 - i


# ----------------------------------------------------------------------------------------------------------------
# Lengths: everything deterministic about a chunk of n tokens, computed in Python once per length.


def span_counts(n: int, noise_density: float, mean_noise_span_length: float, t5_edges: bool = False
                ) -> Tuple[int, int]:
  """``(k, S)``: noise tokens and noise spans of a chunk of ``n`` tokens (``(0, 0)`` for ``n < 2``).

  ``k = clip(round(r n), 1, n - 1)``, ``S = max(1, round(k / mu))`` clipped to at most ``k`` and to what the
  ``n - k`` non-noise tokens can separate (``n - k`` with ``t5_edges``, ``n - k + 1`` without). Python's
  ``round`` (half to even), as ``tf.round``.
  """
  if n < 2:
    return 0, 0
  k = min(max(round(n * noise_density), 1), n - 1)
  spans = max(round(k / mean_noise_span_length), 1)
  spans = min(spans, k, (n - k) if t5_edges else (n - k + 1))
  return k, spans


def prefix_bounds(n: int, prefix_fraction: float) -> Tuple[int, int]:
  """``(lo, hi)``: the prefix length is uniform on ``[lo, hi]``, mean ``c = clip(round(f n), 1, n - 1)``.

  ``(0, 0)`` for ``n < 2`` (everything is target).
  """
  if n < 2:
    return 0, 0
  c = min(max(round(n * prefix_fraction), 1), n - 1)
  w = min(c - 1, n - 1 - c)
  return c - w, c + w


def output_lengths(denoiser: Denoiser, n: int, num_mode_tokens: int = 0, t5_edges: bool = False
                   ) -> Tuple[int, int, int]:
  """``(max inputs, max targets + EOS, sentinels)`` over the outcomes for a chunk of ``n`` tokens."""
  m = num_mode_tokens
  if denoiser.objective == 'causal_lm':
    return m, n + 1, 0
  if denoiser.objective == 'prefix_lm':
    lo, hi = prefix_bounds(n, denoiser.prefix_fraction)
    return m + hi, n - lo + 1, 0
  k, spans = span_counts(n, denoiser.noise_density, denoiser.mean_noise_span_length, t5_edges)
  return m + n - k + spans, k + spans + 1, spans


def default_example_length(sequence_length: Mapping[str, int]) -> int:
  """``min(I, T)``: the whole row of ``L`` tokens with ``feature_converter='prefix_lm_shared'`` (``I = T = L``),
  half of it with ``'prefix_lm'`` (``I = T = L / 2``)."""
  return min(sequence_length['inputs'], sequence_length['targets'])


def example_total_length(denoiser: Denoiser, n: int, num_mode_tokens: int = 0, t5_edges: bool = False) -> int:
  """Inputs + targets + EOS of a chunk of ``n`` tokens: ``m + n + 1``, plus ``2 S`` sentinels for span
  corruption (the same for every outcome of the random choices)."""
  spans = 0
  if denoiser.objective == 'span_corruption':
    spans = span_counts(n, denoiser.noise_density, denoiser.mean_noise_span_length, t5_edges)[1]
  return num_mode_tokens + n + 1 + 2 * spans


def chunk_length(denoiser: Denoiser,
                 sequence_length: Mapping[str, int],
                 num_mode_tokens: int = 0,
                 max_sentinels: Optional[int] = None,
                 t5_edges: bool = False,
                 example_length: Optional[int] = None) -> int:
  """The longest chunk whose outputs fit ``sequence_length`` and ``max_sentinels`` (so nothing is trimmed) and
  whose example (inputs + targets + EOS, a deterministic function of the chunk length) has at most
  ``example_length`` tokens (None: ``default_example_length``).

  Every shorter chunk fits too (the output lengths never decrease with ``n``; checked).

  Raises:
    ValueError: ``sequence_length`` lacks ``inputs``/``targets``, not even one token fits, or span corruption
      has no sentinel.
  """
  if not sequence_length or sequence_length.get('inputs') is None or sequence_length.get('targets') is None:
    raise ValueError(f"UL2 tasks need sequence_length with 'inputs' and 'targets', got {sequence_length}")
  max_inputs, max_targets = sequence_length['inputs'], sequence_length['targets']
  if example_length is None:
    example_length = default_example_length(sequence_length)
  if denoiser.objective == 'span_corruption' and max_sentinels is not None and max_sentinels < 1:
    raise ValueError(f'{denoiser.name}: span corruption needs at least one sentinel, the vocabulary has none left')

  def fits(n):
    inputs, targets, spans = output_lengths(denoiser, n, num_mode_tokens, t5_edges)
    total = example_total_length(denoiser, n, num_mode_tokens, t5_edges)
    return (inputs <= max_inputs and targets <= max_targets and total <= example_length and
            (max_sentinels is None or spans <= max_sentinels))

  best = 0
  for n in range(1, max_inputs + max_targets + 1):
    if fits(n):
      best = n
    elif best:
      break
  if not best:
    raise ValueError(f'{denoiser.name}: no chunk fits sequence_length {dict(sequence_length)} with '
                     f'{num_mode_tokens} mode token(s)')
  if not all(fits(n) for n in range(1, best + 1)):  # Monotone by construction; a cheap guard.
    raise AssertionError(f'{denoiser.name}: output lengths are not monotone in the chunk length')
  return best


# ----------------------------------------------------------------------------------------------------------------
# TF ops.


def random_segmentation(num_items: tf.Tensor, num_segments: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Splits ``num_items`` into ``num_segments`` positive lengths, uniformly over compositions (T5's
  ``_random_segmentation``): ``num_segments - 1`` cut points drawn without replacement among the
  ``num_items - 1`` gaps. Needs ``1 <= num_segments <= num_items``; returns int32 ``[num_segments]``."""
  num_items = tf.cast(num_items, tf.int32)
  num_segments = tf.cast(num_segments, tf.int32)
  cuts = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)
  first_in_segment = tf.pad(seqio.utils.stateless_shuffle(cuts, seed), [[1, 0]])
  segment_id = tf.cumsum(first_in_segment)
  return tf.math.unsorted_segment_sum(tf.ones_like(segment_id), segment_id, num_segments)


def random_spans_noise_mask(length: tf.Tensor,
                            num_noise: tf.Tensor,
                            num_spans: tf.Tensor,
                            seeds: tf.Tensor,
                            t5_edges: bool = False) -> tf.Tensor:
  """A bool ``[length]`` mask with ``num_noise`` True tokens in exactly ``num_spans`` runs.

  Noise span lengths: ``random_segmentation(num_noise, num_spans)``. Non-noise runs: with ``t5_edges``,
  ``num_spans`` positive runs, one before each span (T5: starts clean, ends in noise); otherwise
  ``num_spans + 1`` runs between and around the spans where only the two outer ones may be empty. ``seeds``:
  int32 ``[2, 2]``. Needs ``1 <= num_spans <= num_noise < length`` (see ``span_counts``).
  """
  num_clean = length - num_noise
  noise = random_segmentation(num_noise, num_spans, seeds[0])
  if t5_edges:
    clean = tf.concat([random_segmentation(num_clean, num_spans, seeds[1]), [0]], axis=0)
  else:
    edges = tf.one_hot(0, num_spans + 1, dtype=tf.int32) + tf.one_hot(num_spans, num_spans + 1, dtype=tf.int32)
    clean = random_segmentation(num_clean + 2, num_spans + 1, seeds[1]) - edges
  run_lengths = tf.concat([tf.reshape(tf.stack([clean[:-1], noise], axis=1), [-1]), clean[-1:]], axis=0)
  run_is_noise = tf.concat([tf.tile([False, True], [num_spans]), [False]], axis=0)
  return tf.repeat(run_is_noise, run_lengths)


def noise_spans_to_sentinels(tokens: tf.Tensor, noise_mask: tf.Tensor, vocab_size: int
                             ) -> Tuple[tf.Tensor, tf.Tensor]:
  """``(inputs, targets)``: inputs = tokens with noise span i replaced by sentinel i; targets = for each span
  i in order, sentinel i then the span's tokens."""
  previous = tf.pad(noise_mask[:-1], [[1, 0]])
  first = tf.logical_and(noise_mask, tf.logical_not(previous))
  span_index = tf.cumsum(tf.cast(first, tokens.dtype)) - 1
  sentinels = tf.cast(vocab_size - 1, tokens.dtype) - span_index
  inputs = tf.boolean_mask(tf.where(first, sentinels, tokens), tf.logical_or(tf.logical_not(noise_mask), first))
  pairs = tf.reshape(tf.stack([sentinels, tokens], axis=1), [-1])
  keep = tf.reshape(tf.stack([first, noise_mask], axis=1), [-1])
  return inputs, tf.boolean_mask(pairs, keep)


def fill_in_sentinels(inputs: Sequence[int], targets: Sequence[int], vocab_size: int, num_sentinels: int,
                      eos_id: Optional[int] = 1) -> List[int]:
  """Inverts span corruption: each sentinel in ``inputs`` replaced by the tokens after it in ``targets``.

  ``targets`` may end in ``eos_id`` (dropped). Sentinels are the ids ``>= vocab_size - num_sentinels``. For
  causal and prefix LM examples (no sentinels) this is ``inputs + targets``.

  Raises:
    ValueError: the sentinels of ``inputs`` and ``targets`` do not match up.
  """
  inputs, targets = [int(t) for t in inputs], [int(t) for t in targets]
  if targets and eos_id is not None and targets[-1] == eos_id:
    targets = targets[:-1]
  lowest = vocab_size - num_sentinels
  is_sentinel = lambda t: t >= lowest
  if not any(is_sentinel(t) for t in targets):
    if any(is_sentinel(t) for t in inputs):
      raise ValueError('inputs hold sentinels that targets lack')
    return inputs + targets
  spans, current = {}, None
  for t in targets:
    if is_sentinel(t):
      current = spans.setdefault(t, [])
    elif current is None:
      raise ValueError('targets do not start with a sentinel')
    else:
      current.append(t)
  out = []
  for t in inputs:
    if is_sentinel(t):
      if t not in spans:
        raise ValueError(f'sentinel {t} of inputs is missing from targets')
      out.extend(spans.pop(t))
    else:
      out.append(t)
  if spans:
    raise ValueError(f'sentinels {sorted(spans)} of targets are missing from inputs')
  return out


# ----------------------------------------------------------------------------------------------------------------
# SeqIO preprocessors.


def text_to_targets(dataset: tf.data.Dataset, metadata_keys: Sequence[str] = METADATA_KEYS) -> tf.data.Dataset:
  """``{'text', ...}`` -> ``{'targets': text}`` plus those ``metadata_keys`` the source has."""

  @tf.autograph.experimental.do_not_convert
  def fn(features):
    return {'targets': features['text'], **{k: features[k] for k in metadata_keys if k in features}}

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def denoise(dataset: tf.data.Dataset,
            sequence_length: Mapping[str, int],
            output_features: Mapping[str, seqio.Feature],
            denoiser: Denoiser,
            mode_tokens: ModeTokensArg = None,
            t5_edges: bool = False,
            example_length: Optional[int] = None) -> tf.data.Dataset:
  """Chunks the tokenized ``targets`` for ``denoiser`` and makes ``inputs``/``targets`` (EOS comes later).

  Chunks have ``chunk_length(denoiser, sequence_length, ..., example_length)`` tokens (the last of a document
  fewer). Keeps the other features (``doc_id`` etc., with ``chunk_index``) and adds ``denoiser`` (its name).
  Random choices use seqio's stateless per-example seeds, so a fixed dataset seed gives fixed examples.
  """
  vocabulary = output_features['targets'].vocabulary
  vocab_size = vocabulary.vocab_size
  mode_ids = mode_token_ids(vocabulary, mode_tokens)
  mode = [] if mode_ids is None else [mode_ids[denoiser.mode]]
  max_sentinels = num_sentinels(vocabulary, mode_ids)
  n_max = chunk_length(denoiser, sequence_length, len(mode), max_sentinels, t5_edges, example_length)
  dataset = seqio_tasks.split_tokens(dataset, max_length=n_max)
  # Per-length tables, so that TF and Python (chunk_length) agree exactly on every rounding.
  if denoiser.objective == 'span_corruption':
    counts = [span_counts(n, denoiser.noise_density, denoiser.mean_noise_span_length, t5_edges)
              for n in range(n_max + 1)]
  elif denoiser.objective == 'prefix_lm':
    counts = [prefix_bounds(n, denoiser.prefix_fraction) for n in range(n_max + 1)]
  else:
    counts = [(0, 0)] * (n_max + 1)
  table = tf.constant(counts, tf.int32)

  @seqio.map_over_dataset(num_seeds=3)
  @tf.autograph.experimental.do_not_convert  # Python control flow here runs at trace time; saves ~0.2 s a task.
  def corrupt(features, seeds):
    tokens = features['targets']
    n = tf.size(tokens, out_type=tf.int32)
    a, b = table[n][0], table[n][1]
    prefix = tf.constant(mode, tf.int32)
    if denoiser.objective == 'causal_lm':
      inputs, targets = prefix, tokens
    elif denoiser.objective == 'prefix_lm':
      s = tf.random.stateless_uniform([], seed=seeds[2], minval=a, maxval=b + 1, dtype=tf.int32)
      inputs, targets = tf.concat([prefix, tokens[:s]], 0), tokens[s:]
    else:

      def corrupted():
        mask = random_spans_noise_mask(n, a, b, seeds[:2], t5_edges)
        return noise_spans_to_sentinels(tokens, mask, vocab_size)

      inputs, targets = tf.cond(n >= 2, corrupted, lambda: (tokens, tokens[:0]))
      inputs = tf.concat([prefix, inputs], 0)
    out = dict(features)
    out['inputs'], out['targets'] = inputs, targets
    out[DENOISER_FEATURE] = tf.constant(denoiser.name)
    return out

  return corrupt(dataset)


def ul2_preprocessors(denoiser: Denoiser,
                      mode_tokens: ModeTokensArg = None,
                      t5_edges: bool = False,
                      metadata_keys: Sequence[str] = METADATA_KEYS,
                      example_length: Optional[int] = None) -> list:
  """text -> targets (+ metadata), tokenize, chunk and denoise (see ``denoise``), append EOS to targets."""
  return [
      functools.partial(text_to_targets, metadata_keys=metadata_keys),
      functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
      functools.partial(denoise, denoiser=denoiser, mode_tokens=mode_tokens, t5_edges=t5_edges,
                        example_length=example_length),
      seqio.preprocessors.append_eos_after_trim,
  ]


def ul2_output_features(vocabulary: seqio.Vocabulary) -> Dict[str, seqio.Feature]:
  """``inputs`` (no EOS) and ``targets`` (+ EOS), both in ``vocabulary``."""
  return seqio_tasks.output_features(vocabulary, 'prefix_lm')


# ----------------------------------------------------------------------------------------------------------------
# Registration.

Base = Union[Callable[[], Iterable[Tuple[str, str]]], str, seqio.Task, seqio.Mixture]


def _short_name(task_name: str, base_name: str) -> str:
  prefix = base_name + '_'
  return task_name[len(prefix):] if task_name.startswith(prefix) else task_name


def register_ul2_mixture(name: str,
                         base: Base,
                         vocabulary: Optional[seqio.Vocabulary] = None,
                         rates: Sequence[float] = SALT_RATES,
                         *,
                         denoisers: Sequence[Denoiser] = SALT_DENOISERS,
                         mode_tokens: ModeTokensArg = None,
                         t5_edges: bool = False,
                         example_length: Optional[int] = None,
                         validation_fraction: float = seqio_tasks.DEFAULT_VALIDATION_FRACTION,
                         metadata_keys: Sequence[str] = METADATA_KEYS,
                         shuffle_buffer_size: int = seqio_tasks.DEFAULT_SHUFFLE_BUFFER_SIZE) -> seqio.Mixture:
  """Registers one task per denoiser over the documents of ``base`` and the mixture ``name`` of them.

  Args:
    name: the mixture's name and its tasks' prefix.
    base: the documents: a ``documents_fn`` (``(doc_id, text)`` pairs, split by id hash with
      ``validation_fraction``), or a registered task (its source, hence its splits, are reused; the source must
      have ``text``), or a mixture: then every task of it gets the denoisers (tasks
      ``f'{name}_{task}_{denoiser}'``) with rate ``base_rate(task) * rate(denoiser)``, both normalised.
    vocabulary: tokenizes the text and supplies the sentinels; None: the base task's ``targets`` vocabulary, or
      ``vocabulary.default_vocabulary()`` for a ``documents_fn``.
    rates: one rate per denoiser (normalised), SALT's 6:2:1:1 by default.
    denoisers: the tasks, SALT's four by default.
    mode_tokens: see ``mode_token_ids``; None (default) adds none.
    t5_edges: span placement exactly as T5 (see the module docstring).
    example_length: the most tokens of one example (inputs + targets + EOS); None: ``min(I, T)``, the whole row
      with ``feature_converter='prefix_lm_shared'`` (see the module docstring).
    validation_fraction: for a ``documents_fn`` only.
    metadata_keys: source features kept in the examples when present.
    shuffle_buffer_size: each task's example shuffle buffer.

  Returns:
    The registered ``seqio.Mixture``.
  """
  if len(rates) != len(denoisers):
    raise ValueError(f'need one rate per denoiser, got {len(rates)} rates for {len(denoisers)} denoisers')
  if any(r < 0 for r in rates) or not sum(rates) > 0:
    raise ValueError(f'rates must be >= 0 and sum to > 0, got {rates}')
  if len({d.name for d in denoisers}) != len(denoisers):
    raise ValueError('denoiser names must be unique')
  weights = [r / sum(rates) for r in rates]
  if isinstance(base, str):
    base = seqio.get_mixture_or_task(base)

  if isinstance(base, seqio.Mixture):
    mixture = base
    parts = [(task, _short_name(task.name, mixture.name), task.source,
              (lambda t=task: mixture.get_rate(t) / mixture.total_rate)) for task in mixture.tasks]
  elif isinstance(base, seqio.Task):
    parts = [(base, None, base.source, lambda: 1.0)]
  elif callable(base):
    parts = [(None, None, seqio_tasks.document_source(base, validation_fraction), lambda: 1.0)]
  else:
    raise TypeError(f'base must be a documents_fn, a task or mixture (or its name), got {type(base).__name__}')
  if vocabulary is None:
    task = parts[0][0]
    if task is not None:
      vocabulary = task.output_features['targets'].vocabulary
    else:
      from bliss_jax.data import vocabulary as vocabulary_lib  # pylint: disable=g-import-not-at-top
      vocabulary = vocabulary_lib.default_vocabulary()

  entries = []
  for _, part_name, source, part_rate in parts:
    for denoiser, weight in zip(denoisers, weights):
      if weight == 0:
        continue
      task_name = f'{name}_{part_name}_{denoiser.name}' if part_name else f'{name}_{denoiser.name}'
      seqio_tasks._add_task(  # pylint: disable=protected-access
          task_name, source=source,
          preprocessors=ul2_preprocessors(denoiser, mode_tokens, t5_edges, metadata_keys, example_length),
          output_features=ul2_output_features(vocabulary), shuffle_buffer_size=shuffle_buffer_size)
      if part_name:
        entries.append((task_name, lambda task, r=part_rate, w=weight: r() * w))
      else:
        entries.append((task_name, weight))
  return seqio_tasks.register_mixture(name, entries)
