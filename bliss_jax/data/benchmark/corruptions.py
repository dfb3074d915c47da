"""Corrupted copies of documents, the benchmark's synthetic low quality: pure functions ``(text, rng) -> text``, and
``corrupted_copy``, which decides from seeded hashes whether a document gets one and of which kind.

Only ``rng.random()`` is used, whose sequence Python guarantees for a given seed across versions.
"""
import hashlib
import random
import re
import string
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

SYNTHETIC_KINDS = ('shuffled_words', 'char_noise', 'repeated_lines', 'truncated')


def _below(rng: random.Random, n: int) -> int:
  """A uniform integer in [0, n)."""
  return min(int(rng.random() * n), n - 1)


def _shuffled(items: Sequence[Any], rng: random.Random) -> list:
  """Fisher-Yates shuffle driven by ``rng.random()``."""
  items = list(items)
  for i in range(len(items) - 1, 0, -1):
    j = _below(rng, i + 1)
    items[i], items[j] = items[j], items[i]
  return items


def shuffle_words(text: str, rng: random.Random) -> str:
  """Shuffles the whitespace-separated words within every line: same words and line count, no syntax."""
  return '\n'.join(' '.join(_shuffled(line.split(), rng)) for line in text.split('\n'))


_NOISE_CHARS = string.ascii_letters + string.digits + string.punctuation


def char_noise(text: str, rng: random.Random, rate: float = 0.15) -> str:
  """Corrupts each non-space character with probability ``rate``: replaced by a random printable ASCII character
  (1/2), deleted (1/4), or followed by one (1/4). Typos and OCR garbage."""
  out = []
  for ch in text:
    if ch.isspace() or rng.random() >= rate:
      out.append(ch)
      continue
    action = rng.random()
    if action < 0.5:
      out.append(_NOISE_CHARS[_below(rng, len(_NOISE_CHARS))])
    elif action >= 0.75:
      out.append(ch + _NOISE_CHARS[_below(rng, len(_NOISE_CHARS))])
  return ''.join(out)


_SENTENCE_END = re.compile(r'(?<=[.!?])\s+')


def repeat_lines(text: str, rng: random.Random) -> str:
  """Spam: one to three lines of the text (sentences, when it has fewer than three lines) repeated in turn until
  the result is as long as the text."""
  segments = [line for line in text.split('\n') if line.strip()]
  if len(segments) < 3:
    segments = [s for s in _SENTENCE_END.split(text.replace('\n', ' ')) if s.strip()]
  if not segments:
    return text
  count = 1 + _below(rng, min(3, len(segments)))
  chosen = [segments[_below(rng, len(segments))] for _ in range(count)]
  out, size, i = [], 0, 0
  while size < len(text):
    out.append(chosen[i % count])
    size += len(out[-1]) + 1
    i += 1
  return '\n'.join(out)


def truncate_fragments(text: str, rng: random.Random) -> str:
  """Two to five fragments cut at arbitrary characters (mid-word), each 2-8% of the text (at least 20
  characters), in text order, joined with spaces: the debris of a broken scrape."""
  if len(text) <= 40:
    return text[:max(1, len(text) // 2)]
  count = 2 + _below(rng, 4)
  fragments = []
  for _ in range(count):
    length = max(20, int(len(text) * (0.02 + 0.06 * rng.random())))
    start = _below(rng, max(1, len(text) - length))
    fragments.append((start, text[start:start + length]))
  return ' '.join(fragment for _, fragment in sorted(fragments))


SYNTHETIC_FUNCTIONS: Dict[str, Callable[[str, random.Random], str]] = {
    'shuffled_words': shuffle_words,
    'char_noise': char_noise,
    'repeated_lines': repeat_lines,
    'truncated': truncate_fragments,
}


def _hash64(*parts: Any) -> int:
  """The first 8 bytes (big-endian) of SHA-256 of the parts joined with ``':'``."""
  digest = hashlib.sha256(':'.join(str(p) for p in parts).encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big')


def unit_hash(*parts: Any) -> float:
  """A uniform number in [0, 1) from SHA-256 of the parts joined with ``':'`` (first 8 bytes / 2**64)."""
  return _hash64(*parts) / 2.0**64


def corrupted_copy(text: str, doc_id: str, seed: int, fraction: float,
                   kinds: Sequence[str] = SYNTHETIC_KINDS) -> Optional[Tuple[str, str]]:
  """``(kind, corrupted text)`` of the copy document ``doc_id`` gets, or None: one with probability ``fraction``
  (``unit_hash(seed, 'synthetic', doc_id)``), of a kind drawn uniformly from ``kinds`` (``unit_hash(seed, 'kind',
  doc_id)``), made with a ``random.Random`` seeded with ``_hash64(seed, kind, doc_id)``."""
  if unit_hash(seed, 'synthetic', doc_id) >= fraction:
    return None
  kind = kinds[min(int(unit_hash(seed, 'kind', doc_id) * len(kinds)), len(kinds) - 1)]
  return kind, SYNTHETIC_FUNCTIONS[kind](text, random.Random(_hash64(seed, kind, doc_id)))
