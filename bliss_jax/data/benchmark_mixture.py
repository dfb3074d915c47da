"""The benchmark mixture: "C4/Pile with junk in it", with a domain and a quality label on every document.

Data selection can only be measured on data whose quality is known. This module turns the real corpora of
``<data_dir>/corpus`` (see ``shared/data/README.md``) into labelled documents, splits them by document, and
registers SeqIO tasks and a mixture over them.

Documents (``source``: how one file becomes documents; ids are ``f'{source}:{index}'`` unless noted)

| component | source | domain | how documents are cut |
|---|---|---|---|
| encyclopedic | wikitext2_valid | encyclopedic | one article per top-level `` = Title = `` heading |
| books | war_and_peace, tinyshakespeare | books | blank-line paragraphs (speeches) merged up to ``min_doc_chars`` |
| stories | tinystories | stories | paragraphs; one starting "Once upon a time" starts a new document |
| math | gsm8k | math | one row: ``question + '\\n' + answer`` |
| code_c | linux_kernel_c | code_c | top-level blocks (ending in a column-0 ``}``) merged up to ``min_doc_chars`` |
| code_python | mbpp | code_python | one row: ``text + '\\n' + code`` |
| multilingual | wiki_fr | french | lines (paragraphs) merged up to ``min_doc_chars`` |
| multilingual | flores_{deu,spa,rus,zho} | german, spanish, russian, chinese | groups of consecutive sentences |
| web | commoncrawl | web | one record with non-empty text; id ``commoncrawl:<record id>`` |
| synthetic_<kind> | ``synthetic_<kind>:<id>`` | the original's | a corrupted copy of a target document |

``wikitext2_test`` (encyclopedic, cut like wikitext2_valid) is held out: it only ever appears in ``test``. "Merged up
to" = consecutive units merged greedily until a document has at least ``min_doc_chars`` characters (``merge_units``);
FLORES documents hold ``flores_sentences_per_doc`` consecutive sentences (joined without spaces for Chinese).
Texts are normalised to ``\\n`` line ends without a byte-order mark; nothing else is changed (WikiText keeps its
tokenisation and ``<unk>``).

Labels
  ``domain``: as above; ``TARGET_DOMAINS`` (encyclopedic, books, stories, math) are the target-like clean English.
  ``quality``: ``'clean'`` (curated corpora), ``'raw'`` (Common Crawl page text with menus and boilerplate), or
  ``f'synthetic_{kind}'`` for the corrupted copies of ``SYNTHETIC_KINDS``: shuffled words, character noise,
  repeated-line spam, truncated fragments (each a pure function ``(text, rng) -> text``).
  A document is *target* when its domain is a target domain and its quality is ``'clean'``.

Splits (never overlapping by document; deterministic from ``seed`` and the document id)
  ``u = hash(seed, id)`` uniform on [0, 1): ``u < train_fraction`` -> ``train``; ``< train_fraction +
  pool_fraction`` -> ``pool`` (the candidate pool selection methods choose from); else held out. A held-out
  *target* document goes to ``validation`` (the reference set: BLISS's D_val, RHO-1's reference data) with
  probability ``validation_share`` (a second hash), else to ``test``; every other held-out document goes to
  ``test``. A synthetic copy has the split of the document it was made from, and documents of ``validation``
  get no copies, so no text of the reference set appears (even corrupted) anywhere else. ``validation`` thus holds
  only clean target-like English, ``test`` holds every domain and quality.

Synthetic copies: each target document outside ``validation`` gets one corrupted copy with probability
``synthetic_fraction`` (a third hash), of a kind drawn uniformly (a fourth), made with a ``random.Random`` seeded
from ``(seed, kind, id)``: the same settings give the same texts on every machine.

SeqIO (``register_benchmark_tasks``): a task per component, ``f'{name}_{component}'``, with features
``targets`` (chunked as ``seqio_tasks.split_tokens``), ``doc_id``, ``chunk_index``, ``domain`` and ``quality``
(metadata: the feature converters drop them); the mixture ``name`` of the components with non-zero rates;
``f'{name}_all'``, every document once per epoch (in catalog order unshuffled: scoring passes over ``pool``); and
``f'{name}_reference'``, whose ``train`` split is the reference set and whose ``validation`` split is the target
documents of ``test`` (to train a reference model). Registration reads no file; the documents are read, cut and
corrupted once per process and config, on first use (about 0.5 s), and kept in memory (~20 M characters).

The catalog (``build_catalog``) lists every document's labels, split and size without tokenising;
``selection_report`` compares any selected subset of ids with the pool's base rates.
"""
import collections
import dataclasses
import functools
import hashlib
import json
import os
import random
import re
import string
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from bliss_jax.data import sources

DATA_DIR_ENV_VAR = 'BLISS_JAX_DATA_DIR'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, '..', 'shared', 'data'))
CORPUS_SUBDIR = 'corpus'

SPLITS = ('train', 'pool', 'validation', 'test')
TARGET_DOMAINS = ('encyclopedic', 'books', 'stories', 'math')
SYNTHETIC_KINDS = ('shuffled_words', 'char_noise', 'repeated_lines', 'truncated')
CLEAN, RAW = 'clean', 'raw'
COMPONENTS = ('encyclopedic', 'books', 'stories', 'math', 'code_c', 'code_python', 'multilingual', 'web',
              *(f'synthetic_{kind}' for kind in SYNTHETIC_KINDS))
TARGET_COMPONENTS = ('encyclopedic', 'books', 'stories', 'math')
# Example-level mixing rates (seqio samples examples, i.e. chunks, in these proportions): half target-like clean
# English, 30% off-target (code, other languages, raw web), 20% synthetic junk.
DEFAULT_RATES = {
    'encyclopedic': 15.0, 'books': 15.0, 'stories': 10.0, 'math': 10.0,
    'code_c': 5.0, 'code_python': 5.0, 'multilingual': 10.0, 'web': 10.0,
    'synthetic_shuffled_words': 5.0, 'synthetic_char_noise': 5.0, 'synthetic_repeated_lines': 5.0,
    'synthetic_truncated': 5.0,
}
METADATA_KEYS = ('domain', 'quality')
FLORES_LANGUAGES = (('deu_Latn', 'german'), ('spa_Latn', 'spanish'), ('rus_Cyrl', 'russian'),
                    ('zho_Hans', 'chinese'))

Document = Tuple[str, str]


# ----------------------------------------------------------------------------------------------------------------
# Where the data is.


def resolve_data_dir(data_dir: Optional[str] = None) -> str:
  """Returns the data directory: ``data_dir``, else ``$BLISS_JAX_DATA_DIR``, else ``<repo>/../shared/data``.

  Raises:
    FileNotFoundError: the chosen directory has no ``corpus/`` subdirectory (the message names the path and
      how to point elsewhere).
  """
  chosen = data_dir or os.environ.get(DATA_DIR_ENV_VAR) or DEFAULT_DATA_DIR
  chosen = os.path.abspath(os.path.expanduser(chosen))
  corpus = os.path.join(chosen, CORPUS_SUBDIR)
  if not os.path.isdir(corpus):
    how = ('the data_dir argument' if data_dir else
           f'${DATA_DIR_ENV_VAR}' if os.environ.get(DATA_DIR_ENV_VAR) else 'the default')
    raise FileNotFoundError(
        f'benchmark data not found: {corpus} does not exist (data directory from {how}). Point '
        f'${DATA_DIR_ENV_VAR} or data_dir at a directory holding corpus/ (shared/data of the project).')
  return chosen


def data_dir_available(data_dir: Optional[str] = None) -> bool:
  """Whether ``resolve_data_dir(data_dir)`` would succeed."""
  try:
    resolve_data_dir(data_dir)
  except FileNotFoundError:
    return False
  return True


# ----------------------------------------------------------------------------------------------------------------
# Cutting files into documents. Each function returns texts in file order.


def _read(path: str) -> str:
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


# ----------------------------------------------------------------------------------------------------------------
# Synthetic low-quality variants: pure functions (text, rng) -> text. Only `rng.random()` is used, whose sequence
# Python guarantees for a given seed across versions.


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


# ----------------------------------------------------------------------------------------------------------------
# Splits and labels.


def unit_hash(*parts: Any) -> float:
  """A uniform number in [0, 1) from SHA-256 of the parts joined with ``':'`` (first 8 bytes / 2**64)."""
  digest = hashlib.sha256(':'.join(str(p) for p in parts).encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def _rng_for(*parts: Any) -> random.Random:
  digest = hashlib.sha256(':'.join(str(p) for p in parts).encode('utf-8')).digest()
  return random.Random(int.from_bytes(digest[:8], 'big'))


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  """How the corpora become documents and splits (see the module docstring).

  Attributes:
    data_dir: holds ``corpus/``; None: ``$BLISS_JAX_DATA_DIR``, else ``<repo>/../shared/data``.
    seed: seeds the split hashes and the synthetic copies.
    train_fraction: expected fraction of documents in ``train``.
    pool_fraction: expected fraction in ``pool``; the rest is held out.
    validation_share: expected fraction of held-out target documents in ``validation`` (the rest: ``test``).
    synthetic_fraction: probability that a target document (outside ``validation``) gets a corrupted copy.
    min_doc_chars: the size that merged units (book paragraphs, French lines, C blocks) reach.
    flores_sentences_per_doc: consecutive FLORES sentences per document.
  """
  data_dir: Optional[str] = None
  seed: int = 0
  train_fraction: float = 0.4
  pool_fraction: float = 0.4
  validation_share: float = 0.5
  synthetic_fraction: float = 0.2
  min_doc_chars: int = 1500
  flores_sentences_per_doc: int = 10

  def __post_init__(self):
    if not (0 <= self.train_fraction and 0 <= self.pool_fraction and self.train_fraction + self.pool_fraction <= 1):
      raise ValueError(f'need 0 <= train_fraction, pool_fraction and their sum <= 1, got {self.train_fraction}, '
                       f'{self.pool_fraction}')
    for name in ('validation_share', 'synthetic_fraction'):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')
    if self.min_doc_chars < 1 or self.flores_sentences_per_doc < 1:
      raise ValueError('min_doc_chars and flores_sentences_per_doc must be >= 1')

  def resolved(self) -> 'BenchmarkConfig':
    """The same config with ``data_dir`` resolved to an absolute path (raises if the data is missing)."""
    return dataclasses.replace(self, data_dir=resolve_data_dir(self.data_dir))


def is_target(domain: str, quality: str) -> bool:
  """Target-like clean English: a target domain and quality ``'clean'``."""
  return domain in TARGET_DOMAINS and quality == CLEAN


def assign_split(doc_id: str, config: BenchmarkConfig, target: bool) -> str:
  """The split of an original (non-synthetic) document; see the module docstring."""
  u = unit_hash(config.seed, 'split', doc_id)
  if u < config.train_fraction:
    return 'train'
  if u < config.train_fraction + config.pool_fraction:
    return 'pool'
  if target and unit_hash(config.seed, 'heldout', doc_id) < config.validation_share:
    return 'validation'
  return 'test'


@dataclasses.dataclass(frozen=True)
class BenchmarkDocument:
  """One labelled document. ``origin`` is the id it was made from (itself for originals)."""
  doc_id: str
  text: str
  source: str
  component: str
  domain: str
  quality: str
  split: str
  origin: str

  @property
  def target(self) -> bool:
    return is_target(self.domain, self.quality)

  def catalog_entry(self) -> Dict[str, Any]:
    return {'doc_id': self.doc_id, 'source': self.source, 'component': self.component, 'domain': self.domain,
            'quality': self.quality, 'split': self.split, 'n_chars': len(self.text), 'target': self.target,
            'origin': self.origin}


def _corpus_documents(corpus: str, config: BenchmarkConfig) -> Iterable[Tuple[str, str, str, str, str, str]]:
  """Yields ``(doc_id, text, source, component, domain, quality)`` for every original document, in a fixed order."""
  path = functools.partial(os.path.join, corpus)

  def numbered(source, texts, component, domain, quality=CLEAN):
    for i, text in enumerate(texts):
      yield f'{source}:{i}', text, source, component, domain, quality

  min_chars = config.min_doc_chars
  yield from numbered('wikitext2_valid', wikitext_articles(_read(path('wikitext2_valid.txt'))), 'encyclopedic',
                      'encyclopedic')
  yield from numbered('wikitext2_test', wikitext_articles(_read(path('wikitext2_test.txt'))), 'encyclopedic',
                      'encyclopedic')
  yield from numbered('war_and_peace', merge_units(paragraphs(_read(path('war_and_peace.txt'))), min_chars),
                      'books', 'books')
  yield from numbered('tinyshakespeare', merge_units(paragraphs(_read(path('tinyshakespeare.txt'))), min_chars),
                      'books', 'books')
  yield from numbered('tinystories', tinystories_documents(_read(path('tinystories_valid_head.txt'))), 'stories',
                      'stories')
  gsm8k = sources.read_jsonl_documents(path('gsm8k_train.jsonl'), template='{question}\n{answer}', id_field=None)
  yield from numbered('gsm8k', (normalize_text(text) for _, text in gsm8k), 'math', 'math')
  yield from numbered('linux_kernel_c', merge_units(c_blocks(_read(path('linux_kernel_c.txt'))), min_chars),
                      'code_c', 'code_c')
  mbpp = sources.read_jsonl_documents(path('mbpp.jsonl'), template='{text}\n{code}', id_field=None)
  yield from numbered('mbpp', (normalize_text(text) for _, text in mbpp), 'code_python', 'code_python')
  yield from numbered('wiki_fr', merge_units(_read(path('wiki_fr_extract.txt')).split('\n'), min_chars, '\n'),
                      'multilingual', 'french')
  for code, language in FLORES_LANGUAGES:
    lines = _read(path('flores_dev', f'{code}.dev')).split('\n')
    joiner = '' if code.startswith('zho') else ' '
    yield from numbered(f'flores_{code[:3]}', group_lines(lines, config.flores_sentences_per_doc, joiner),
                        'multilingual', language)
  web = sources.read_jsonl_documents(path('commoncrawl_sample.jsonl.gz'), ('text',), source_name='commoncrawl')
  for doc_id, text in web:
    text = normalize_text(text)
    if text.strip():
      yield doc_id, text, 'commoncrawl', 'web', 'web', RAW


_HELD_OUT_SOURCES = ('wikitext2_test',)


def make_documents(config: BenchmarkConfig) -> List[BenchmarkDocument]:
  """All documents of the benchmark (originals, then synthetic copies), labelled and split. Reads the corpus."""
  config = config.resolved()
  corpus = os.path.join(config.data_dir, CORPUS_SUBDIR)
  documents, seen = [], set()
  for doc_id, text, source, component, domain, quality in _corpus_documents(corpus, config):
    if doc_id in seen:
      raise ValueError(f'duplicate document id {doc_id!r}')
    seen.add(doc_id)
    target = is_target(domain, quality)
    split = 'test' if source in _HELD_OUT_SOURCES else assign_split(doc_id, config, target)
    documents.append(BenchmarkDocument(doc_id, text, source, component, domain, quality, split, doc_id))
  synthetic = []
  for doc in documents:
    if not doc.target or doc.split == 'validation':
      continue
    if unit_hash(config.seed, 'synthetic', doc.doc_id) >= config.synthetic_fraction:
      continue
    kind = SYNTHETIC_KINDS[min(int(unit_hash(config.seed, 'kind', doc.doc_id) * len(SYNTHETIC_KINDS)),
                               len(SYNTHETIC_KINDS) - 1)]
    text = SYNTHETIC_FUNCTIONS[kind](doc.text, _rng_for(config.seed, kind, doc.doc_id))
    synthetic.append(BenchmarkDocument(
        f'synthetic_{kind}:{doc.doc_id}', text, doc.source, f'synthetic_{kind}', doc.domain,
        f'synthetic_{kind}', doc.split, doc.doc_id))
  return documents + synthetic


@functools.lru_cache(maxsize=4)
def _cached_documents(config: BenchmarkConfig) -> Tuple[BenchmarkDocument, ...]:
  return tuple(make_documents(config))


def benchmark_documents(config: Optional[BenchmarkConfig] = None) -> Tuple[BenchmarkDocument, ...]:
  """``make_documents(config)``, computed once per process and config (data directory resolved first)."""
  return _cached_documents((config or BenchmarkConfig()).resolved())


def documents_of(config: Optional[BenchmarkConfig] = None,
                 split: Optional[str] = None,
                 component: Optional[str] = None,
                 target_only: bool = False) -> List[Document]:
  """``(doc_id, text)`` of the documents in ``split`` / ``component`` (None: all), in catalog order."""
  return [(d.doc_id, d.text) for d in benchmark_documents(config)
          if (split is None or d.split == split) and (component is None or d.component == component)
          and (not target_only or d.target)]


# ----------------------------------------------------------------------------------------------------------------
# The catalog and selection reports.


def build_catalog(data_dir: Optional[str] = None, seed: int = 0, **config_kwargs) -> List[Dict[str, Any]]:
  """One entry per document: ``doc_id, source, component, domain, quality, split, n_chars, target, origin``.

  Computed without tokenising (about 0.5 s: reading and cutting the corpus). ``config_kwargs`` are further
  ``BenchmarkConfig`` fields.
  """
  config = BenchmarkConfig(data_dir=data_dir, seed=seed, **config_kwargs)
  return [d.catalog_entry() for d in benchmark_documents(config)]


def write_catalog(catalog: Iterable[Mapping[str, Any]], path: str) -> str:
  """Writes the catalog as JSONL (one entry per line, keys sorted); returns ``path``."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    for entry in catalog:
      f.write(json.dumps(dict(entry), sort_keys=True, ensure_ascii=False) + '\n')
  os.replace(tmp, path)
  return path


def read_catalog(path: str) -> List[Dict[str, Any]]:
  """Reads a catalog written by ``write_catalog``."""
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def read_ids(path: str) -> List[str]:
  """Document ids from a file: a JSON list of strings, or one id per line (blank lines skipped)."""
  with open(path, encoding='utf-8') as f:
    text = f.read()
  if text.lstrip().startswith('['):
    ids = json.loads(text)
    if not all(isinstance(i, str) for i in ids):
      raise ValueError(f'{path}: a JSON id list must hold strings')
    return ids
  return [line.strip() for line in text.split('\n') if line.strip()]


def _shares(entries: Sequence[Mapping[str, Any]], key: str) -> Dict[str, Dict[str, float]]:
  docs, chars = collections.Counter(), collections.Counter()
  for e in entries:
    docs[e[key]] += 1
    chars[e[key]] += e['n_chars']
  n_docs, n_chars = max(1, len(entries)), max(1, sum(chars.values()))
  return {label: {'docs': docs[label], 'doc_fraction': docs[label] / n_docs,
                  'chars': chars[label], 'char_fraction': chars[label] / n_chars} for label in docs}


def chunk_composition(keys: Iterable[str], catalog: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
  """Composition of a set of example keys (``doc_id#chunk``) counted per EXAMPLE, not per document: the fraction of
  examples from target-like clean English documents and per domain / quality. Selection by example weighs a long
  document by how many of its chunks are kept, which ``selection_report``'s per-document character shares do not.
  Keys of unknown documents raise."""
  by_id = {e['doc_id']: e for e in catalog}
  entries = []
  for key in keys:
    doc = key.rsplit('#', 1)[0]
    if doc not in by_id:
      raise KeyError(f'{doc!r} (from key {key!r}) is not in the catalog')
    entries.append(by_id[doc])
  n = len(entries)
  count = lambda field: {k: v / n for k, v in sorted(collections.Counter(e[field] for e in entries).items())}
  return {'n': n, 'target': sum(bool(e['target']) for e in entries) / n if n else None,
          'by_domain': count('domain') if n else {}, 'by_quality': count('quality') if n else {}}


def selection_report(selected_ids: Iterable[str],
                     catalog: Sequence[Mapping[str, Any]],
                     base_split: Optional[str] = 'pool') -> Dict[str, Any]:
  """Composition of a selected subset of documents next to the base rates of the pool it was chosen from.

  Args:
    selected_ids: document ids, or chunk keys ``doc_id#chunk_index`` (duplicates, e.g. one per selected chunk,
      count once).
    catalog: ``build_catalog`` entries (or ``read_catalog``).
    base_split: the split whose composition is the base rate (``'pool'``); None for the whole catalog.

  Returns:
    ``{'n_selected', 'n_duplicates', 'unknown_ids' (up to 10), 'n_unknown', 'selected_splits' (split -> docs),
    'base_split', 'n_base', 'target': {'selected', 'base', 'lift'}, 'by_domain', 'by_quality'}``, where
    ``target`` holds char fractions of target-like clean English (None for an empty set) and ``by_domain`` /
    ``by_quality`` map each label to ``{'selected': {docs, doc_fraction, chars, char_fraction}, 'base': {...}, 'lift'}``, ``lift`` being
    the selected over the base char fraction (None where the base has none).
  """
  by_id = {e['doc_id']: e for e in catalog}
  # Selections of chunks are keyed "doc_id#chunk_index": a document counts once, however many chunks were chosen.
  selected_ids = [i if i in by_id or not re.fullmatch(r'.+#\d+', i) else i.rpartition('#')[0] for i in selected_ids]
  unique = list(dict.fromkeys(selected_ids))
  unknown = [i for i in unique if i not in by_id]
  selected = [by_id[i] for i in unique if i in by_id]
  base = [e for e in catalog if base_split is None or e['split'] == base_split]

  def char_fraction(entries, predicate):
    total = sum(e['n_chars'] for e in entries)
    return sum(e['n_chars'] for e in entries if predicate(e)) / total if total else None

  def lift(s, b):
    return s / b if s is not None and b else None

  report = {
      'n_selected': len(selected), 'n_duplicates': len(selected_ids) - len(unique),
      'n_unknown': len(unknown), 'unknown_ids': unknown[:10],
      'selected_splits': dict(collections.Counter(e['split'] for e in selected)),
      'base_split': base_split, 'n_base': len(base),
  }
  target_sel = char_fraction(selected, lambda e: e['target'])
  target_base = char_fraction(base, lambda e: e['target'])
  report['target'] = {'selected': target_sel, 'base': target_base, 'lift': lift(target_sel, target_base)}
  for key in ('domain', 'quality'):
    sel, bas = _shares(selected, key), _shares(base, key)
    empty = {'docs': 0, 'doc_fraction': 0.0, 'chars': 0, 'char_fraction': 0.0}
    report[f'by_{key}'] = {
        label: {'selected': sel.get(label, empty), 'base': bas.get(label, empty),
                'lift': lift(sel.get(label, empty)['char_fraction'], bas.get(label, empty)['char_fraction'])}
        for label in sorted(set(sel) | set(bas))}
  return report


def format_selection_report(report: Mapping[str, Any]) -> str:
  """The report as text: a summary line, then markdown tables by domain and by quality (% of documents and of
  characters, selected vs. base, and the lift = selected / base character share)."""
  base_name = report['base_split'] or 'catalog'
  lines = [f"selected {report['n_selected']} documents ({report['n_duplicates']} duplicate ids, "
           f"{report['n_unknown']} unknown ids) from splits {report['selected_splits']}; base: {base_name} "
           f"({report['n_base']} documents)"]
  if report['unknown_ids']:
    lines.append(f"unknown ids (first {len(report['unknown_ids'])}): {', '.join(report['unknown_ids'])}")
  t = report['target']
  percent = lambda x: '-' if x is None else f'{100 * x:.1f}%'
  lines.append(f"target-like clean English: {percent(t['selected'])} of selected characters vs "
               f"{percent(t['base'])} of {base_name}" + ('' if t['lift'] is None else f" (lift {t['lift']:.2f})"))
  for key in ('domain', 'quality'):
    lines += ['', f'| {key} | selected docs | selected % docs | selected % chars | {base_name} % docs | '
              f'{base_name} % chars | lift |', '|---|---:|---:|---:|---:|---:|---:|']
    for label, row in report[f'by_{key}'].items():
      s, b = row['selected'], row['base']
      lift = '-' if row['lift'] is None else f"{row['lift']:.2f}"
      lines.append(f"| {label} | {s['docs']} | {100 * s['doc_fraction']:.1f} | {100 * s['char_fraction']:.1f} | "
                   f"{100 * b['doc_fraction']:.1f} | {100 * b['char_fraction']:.1f} | {lift} |")
  return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------
# SeqIO tasks and the mixture.


def _split_filter(task_kind: str, split: str) -> Callable[[BenchmarkDocument], bool]:
  """Which documents a ``task_kind`` ('component', 'all' or 'reference') serves in ``split``."""
  if task_kind == 'reference':
    real = {'train': 'validation', 'validation': 'test'}.get(split)
    return lambda d: d.split == real and d.target
  return lambda d: d.split == split


def benchmark_source(config: BenchmarkConfig,
                     component: Optional[str] = None,
                     task_kind: str = 'component'):
  """A ``seqio.FunctionDataSource`` of ``{'doc_id', 'text', 'domain', 'quality'}`` string features.

  ``component``: only that component's documents (None: all). ``task_kind='reference'`` serves the reference
  set as ``train`` and the target documents of ``test`` as ``validation``. Splits are declared only where
  documents can exist (off-target and synthetic components have no ``validation``), so mixtures skip them
  there. Documents are read on first use (``benchmark_documents``), not here.
  """
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if task_kind == 'reference':
    splits = ('train', 'validation')
  elif component is None or component in TARGET_COMPONENTS:
    splits = SPLITS
  else:
    splits = ('train', 'pool', 'test')

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    keep = _split_filter(task_kind, split)
    docs = [d for d in benchmark_documents(config)
            if keep(d) and (component is None or d.component == component)]
    columns = {key: [getattr(d, key) for d in docs] for key in ('doc_id', 'text', *METADATA_KEYS)}
    ds = tf.data.Dataset.from_tensor_slices(
        {key: tf.constant(values, dtype=tf.string, shape=[len(docs)]) for key, values in columns.items()})
    if shuffle_files and docs:
      ds = ds.shuffle(len(docs), seed=seed, reshuffle_each_iteration=True)
    return ds

  return seqio.FunctionDataSource(dataset_fn, splits=splits, caching_permitted=False)


def natural_rate(config: BenchmarkConfig, component: str) -> float:
  """Characters of ``component`` in the benchmark (all splits): the rate of proportional mixing."""
  return float(sum(len(d.text) for d in benchmark_documents(config) if d.component == component))


RatesArg = Union[None, str, Mapping[str, float]]


def component_rates(rates: RatesArg, config: BenchmarkConfig) -> Dict[str, Any]:
  """``{component: rate}`` of the components to mix (rate > 0). ``rates``: a mapping (missing components get
  0), None for ``DEFAULT_RATES``, or ``'natural'`` for proportional to characters (callables, evaluated when a
  dataset is built, so registration still reads nothing)."""
  if rates == 'natural':
    return {c: (lambda task, c=c: natural_rate(config, c)) for c in COMPONENTS}
  if isinstance(rates, str):
    raise ValueError(f"rates must be a mapping, None or 'natural', got {rates!r}")
  rates = dict(DEFAULT_RATES if rates is None else rates)
  unknown = sorted(set(rates) - set(COMPONENTS))
  if unknown:
    raise ValueError(f'unknown components {unknown}; known: {list(COMPONENTS)}')
  if any(r < 0 for r in rates.values()) or not any(r > 0 for r in rates.values()):
    raise ValueError(f'rates must be >= 0 with at least one > 0, got {rates}')
  return {c: float(rates[c]) for c in COMPONENTS if rates.get(c, 0) > 0}


def register_benchmark_tasks(name: str = 'benchmark',
                             config: Optional[BenchmarkConfig] = None,
                             vocabulary=None,
                             rates: RatesArg = None,
                             *,
                             objective: str = 'lm',
                             shuffle_buffer_size: Optional[int] = None):
  """Registers the component tasks, ``f'{name}_all'``, ``f'{name}_reference'`` and the mixture ``name``.

  Args:
    name: the mixture's name and the tasks' prefix.
    config: documents and splits; None for ``BenchmarkConfig()``. Its data directory must exist (checked here,
      so a missing directory fails at registration with the path in the message); nothing is read.
    vocabulary: a seqio vocabulary; None for ``vocabulary.default_vocabulary()``.
    rates: see ``component_rates``.
    objective: ``'lm'`` or ``'prefix_lm'`` (``seqio_tasks.document_preprocessors``).
    shuffle_buffer_size: the example shuffle buffer (None: ``seqio_tasks.DEFAULT_SHUFFLE_BUFFER_SIZE``).

  Returns:
    The registered ``seqio.Mixture``.
  """
  from bliss_jax.data import seqio_tasks  # pylint: disable=g-import-not-at-top
  from bliss_jax.data import vocabulary as vocabulary_lib  # pylint: disable=g-import-not-at-top

  config = (config or BenchmarkConfig()).resolved()
  if vocabulary is None:
    vocabulary = vocabulary_lib.default_vocabulary()
  buffer = seqio_tasks.DEFAULT_SHUFFLE_BUFFER_SIZE if shuffle_buffer_size is None else shuffle_buffer_size
  mixed = component_rates(rates, config)

  def add(task_name, source):
    return seqio_tasks._add_task(  # pylint: disable=protected-access
        task_name, source=source,
        preprocessors=seqio_tasks.document_preprocessors(objective, extra_keys=METADATA_KEYS),
        output_features=seqio_tasks.output_features(vocabulary, objective), shuffle_buffer_size=buffer)

  for component in COMPONENTS:
    add(f'{name}_{component}', benchmark_source(config, component))
  add(f'{name}_all', benchmark_source(config, None))
  add(f'{name}_reference', benchmark_source(config, None, task_kind='reference'))
  return seqio_tasks.register_mixture(name, [(f'{name}_{c}', rate) for c, rate in mixed.items()])


# ----------------------------------------------------------------------------------------------------------------
# Describing the mixture.


def size_table(entries: Sequence[Mapping[str, Any]], key: str, value: str = 'n_chars',
               splits: Sequence[str] = SPLITS) -> str:
  """A markdown table: one row per ``key`` label, columns ``documents / <value>`` per split and in total."""
  counts = collections.defaultdict(lambda: collections.Counter())
  sums = collections.defaultdict(lambda: collections.Counter())
  for e in entries:
    for column in (e['split'], 'total'):
      counts[e[key]][column] += 1
      sums[e[key]][column] += e[value]
  columns = [*splits, 'total']
  lines = [f'| {key} | ' + ' | '.join(f'{c} docs | {c} {value}' for c in columns) + ' |',
           '|---|' + '---:|' * (2 * len(columns))]
  for label in sorted(counts, key=lambda l: (-sums[l]['total'], l)):
    lines.append(f'| {label} | ' + ' | '.join(f'{counts[label][c]:,} | {sums[label][c]:,}' for c in columns) + ' |')
  total_counts, total_sums = collections.Counter(), collections.Counter()
  for label in counts:
    total_counts.update(counts[label])
    total_sums.update(sums[label])
  lines.append('| **all** | ' + ' | '.join(f'{total_counts[c]:,} | {total_sums[c]:,}' for c in columns) + ' |')
  return '\n'.join(lines)


def count_tokens(texts: Sequence[str], vocabulary) -> List[int]:
  """Tokens of each text under a seqio SentencePiece vocabulary (no EOS), via the SentencePiece processor."""
  processor = vocabulary.tokenizer
  return [len(ids) for ids in processor.encode(list(texts))]

