"""Packing as seqio packs a decoder task, in numpy: which examples share a row, and the rows' decoder features.

seqio's ``trim_and_pack_dataset`` (the tf-ops packer ``pipeline.get_dataset(..., pack=True)`` runs) cuts the stream
of examples into windows of ``L`` consecutive examples (``L`` the row length) and packs each window on its own, in
order: an example joins the current row when the row's tokens plus its own fit ``L``, else the row is closed and the
example starts the next one; the window's last row is closed at the window's end. Rows therefore hold consecutive
examples, every window gives at least one row, and an example's tokens are the first ``count_nonzero`` of its
(shifted) ids. Grain's packers (``grain.experimental.FirstFitPackIterDataset`` and the others) place examples in
several open bins, split examples across rows or close rows at other points, so their rows differ from these; this
module gives the same rows as seqio, which is what lets a chunk store source reproduce the SeqIO path's batches.

``PackedRows`` maps a row number of an (endless) stream to the stream positions it holds, knowing only the examples'
lengths (a chunk store keeps them: ``ChunkStore.lengths``), so a batch's rows are found without reading a record.
Windows must be packed in order, so locating row ``r`` costs O(r) integer work the first time (memoized after).
"""
import threading
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from bliss_jax.data.pipeline import Batch, DecoderIds


def kept_tokens(targets: np.ndarray, row_length: int, shift: int = 0) -> np.ndarray:
  """The tokens of ``targets`` that packing keeps: trimmed to ``row_length``, then the first ``count_nonzero`` of
  the ids shifted by ``shift`` (seqio counts id 0 as padding; a shift of 1 makes every token count)."""
  trimmed = np.asarray(targets)[:row_length]
  return trimmed[:np.count_nonzero(trimmed + shift)]


def window_row_starts(lengths: Sequence[int], row_length: int) -> List[int]:
  """Where each row of one window starts (offsets into the window), packing examples of ``lengths`` tokens in
  order: an example joins the current row when it fits, else it starts the next (seqio's ``_pack_with_tf_ops``)."""
  starts, used = [0], 0
  for i, n in enumerate(lengths):
    if not 0 <= n <= row_length:
      raise ValueError(f"an example of {n} tokens does not fit a row of {row_length}")
    if used + n > row_length:
      starts.append(i)
      used = 0
    used += n
  return starts


class PackedRows:
  """The rows of a stream of examples packed in windows of ``window`` examples (``window_row_starts``).

  ``lengths(t0, t1)`` gives the kept lengths of stream positions ``t0 .. t1 - 1`` (fewer at the end of a finite
  stream). Rows are contiguous runs of positions; ``spans(r0, r1)`` gives ``[(start, stop)]`` of rows ``r0 .. r1-1``,
  ``(0, 0)`` for rows after a finite stream's last. Windows are packed once, in order, as rows are asked for.
  """

  def __init__(self, lengths: Callable[[int, int], np.ndarray], row_length: int, window: int):
    self._lengths, self._row_length, self._window = lengths, row_length, window
    self._starts: List[int] = []  # the start of every row packed so far
    self._end = 0  # the stream position after the last packed window
    self._finished = False  # a finite stream's last window is packed
    self._lock = threading.Lock()

  def _pack_next_window(self) -> None:
    lengths = self._lengths(self._end, self._end + self._window)
    if len(lengths):
      self._starts.extend(self._end + s for s in window_row_starts(lengths, self._row_length))
      self._end += len(lengths)
    if len(lengths) < self._window:
      self._finished = True

  def spans(self, r0: int, r1: int) -> List[Tuple[int, int]]:
    with self._lock:
      while len(self._starts) <= r1 and not self._finished:
        self._pack_next_window()
      bounds = self._starts + [self._end]
    return [(bounds[r], bounds[r + 1]) if r + 1 < len(bounds) else (0, 0) for r in range(r0, r1)]

  def num_rows(self) -> int:
    """All the rows of a finite stream (packing it to the end)."""
    with self._lock:
      while not self._finished:
        self._pack_next_window()
      return len(self._starts)


def decoder_rows(rows: Sequence[Sequence[np.ndarray]], num_rows: int, row_length: int, ids: DecoderIds,
                 packed: bool) -> Batch:
  """The decoder features (``pipeline`` module docstring) of ``rows``, each a list of examples' target tokens (one
  when not ``packed``), padded with all-zero rows to ``num_rows``: what ``pipeline.model_features`` gives for the
  same rows with the ``decoder`` converter.

  In shifted ids (``ids.shift``): packed, each example is cut to ``kept_tokens``, positions count from 0 in each,
  segment ``s`` is the ``s``-th example (0 on padding), and the decoder input is the target shifted right within a
  segment with ``ids.bos_id`` at each segment's (and the padding's) first position (seqio's
  ``make_autoregressive_inputs`` with sequence ids); unpacked, the example is trimmed, its input shifted right across
  the whole row, segment 1 and positions 0, 1, ... on its tokens. Loss weight 1 on tokens; ids are shifted back.
  """
  targets = np.zeros((num_rows, row_length), np.int32)
  positions = np.zeros_like(targets)
  for r, examples in enumerate(rows):
    at = 0
    for tokens in examples:
      tokens = (kept_tokens(tokens, row_length, ids.shift) if packed else np.asarray(tokens)[:row_length]) + ids.shift
      if at + len(tokens) > row_length:
        raise ValueError(f"examples of {at + len(tokens)} tokens do not fit a row of {row_length}")
      targets[r, at:at + len(tokens)] = tokens
      positions[r, at:at + len(tokens)] = np.arange(len(tokens))
      at += len(tokens)
  on_token = (targets != 0).astype(np.int32)
  inputs = np.zeros_like(targets)
  inputs[:, 0] = ids.bos_id
  inputs[:, 1:] = targets[:, :-1]
  if packed:
    segments = np.cumsum(positions == 0, axis=1, dtype=np.int32) * on_token
    previous = np.zeros_like(segments)
    previous[:, 1:] = segments[:, :-1]
    inputs = np.where(segments == previous, inputs, ids.bos_id).astype(np.int32)
  else:
    segments, positions = on_token.copy(), np.arange(row_length, dtype=np.int32)[None] * on_token
  inputs[len(rows):] = 0  # padding rows are all zero
  unshift = lambda x: np.maximum(x - ids.shift, 0).astype(np.int32)
  return {"decoder_target_tokens": unshift(targets), "decoder_input_tokens": unshift(inputs),
          "decoder_loss_weights": on_token, "decoder_segment_ids": segments, "decoder_positions": positions}
