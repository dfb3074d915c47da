"""Cutting the benchmark's corpus files into documents: pure functions of the text, each returning texts in file order.

Texts are normalised to ``\\n`` line ends without a byte-order mark; nothing else is changed (WikiText keeps its
tokenisation and ``<unk>``). "Merged up to" = consecutive units merged greedily until a document has at least
``min_chars`` characters (``merge_units``).
"""
import os
import re
from typing import Iterable, List, Sequence


def read_text(path: str) -> str:
  """The whole file as text with ``\\n`` line ends and no byte-order mark."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'benchmark corpus file not found: {path}')
  with open(path, 'rt', encoding='utf-8', newline='') as f:
    return normalize_text(f.read())


def normalize_text(text: str) -> str:
  """``\\r\\n`` and ``\\r`` -> ``\\n``; a leading byte-order mark removed."""
  return text.replace('\r\n', '\n').replace('\r', '\n').lstrip('\ufeff')


def merge_units(units: Iterable[str], min_chars: int, joiner: str = '\n\n') -> List[str]:
  """Merges consecutive ``units`` greedily into texts of at least ``min_chars`` characters.

  Units are appended (with ``joiner``) until the text reaches ``min_chars``; the last text may be shorter. Blank
  units are skipped. Every unit lands whole in exactly one text, in order.
  """
  texts, current, size = [], [], 0
  for unit in units:
    if not unit.strip():
      continue
    current.append(unit)
    size += len(unit) + (len(joiner) if len(current) > 1 else 0)
    if size >= min_chars:
      texts.append(joiner.join(current))
      current, size = [], 0
  if current:
    texts.append(joiner.join(current))
  return texts


def paragraphs(text: str) -> List[str]:
  """Maximal runs of non-blank lines (a line of only whitespace is blank), joined with ``\\n``."""
  return [p.strip('\n') for p in re.split(r'\n[ \t]*\n', text) if p.strip()]


_WIKITEXT_TITLE = re.compile(r'^ = [^=].* = $')


def wikitext_articles(text: str) -> List[str]:
  """WikiText articles: a top-level heading line `` = Title = `` starts one; blank lines are dropped.

  Section headings (`` = = Section = = ``) stay inside their article; lines before the first title (none in
  WikiText-2) form a document of their own.
  """
  articles, current = [], []
  for line in text.split('\n'):
    if _WIKITEXT_TITLE.match(line) and current:
      articles.append('\n'.join(current))
      current = []
    if line.strip():
      current.append(line)
  if current:
    articles.append('\n'.join(current))
  return articles


_STORY_START = 'Once upon a time'


def tinystories_documents(text: str) -> List[str]:
  """TinyStories paragraphs grouped into stories: a paragraph starting "Once upon a time" starts a new one.

  The file has no story delimiters; most stories open with that phrase, the others stay attached to the story
  before them (so a few documents hold two stories, and the first holds the tail of a story).
  """
  stories, current = [], []
  for paragraph in paragraphs(text):
    if paragraph.startswith(_STORY_START) and current:
      stories.append('\n\n'.join(current))
      current = []
    current.append(paragraph)
  if current:
    stories.append('\n\n'.join(current))
  return stories


_C_BLOCK_END = re.compile(r'^\}\s*;?\s*$')


def c_blocks(text: str) -> List[str]:
  """C source cut after every line that is a column-0 closing brace (``}`` or ``};``): functions, structs and
  initialisers, each with the comments and declarations before it."""
  blocks, current = [], []
  for line in text.split('\n'):
    current.append(line)
    if _C_BLOCK_END.match(line):
      blocks.append('\n'.join(current).strip('\n'))
      current = []
  if current and '\n'.join(current).strip():
    blocks.append('\n'.join(current).strip('\n'))
  return blocks


def group_lines(lines: Sequence[str], lines_per_doc: int, joiner: str = ' ') -> List[str]:
  """Consecutive groups of ``lines_per_doc`` non-blank lines (the last may be shorter), joined with ``joiner``."""
  lines = [line.strip() for line in lines if line.strip()]
  return [joiner.join(lines[i:i + lines_per_doc]) for i in range(0, len(lines), lines_per_doc)]
