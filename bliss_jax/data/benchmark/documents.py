"""The benchmark's documents: the real corpora of ``<data_dir>/corpus`` cut into documents, each with a domain and a
quality label and a split, plus corrupted copies of target documents ("C4/Pile with junk in it").

Documents (``source``: how one file becomes documents, ``cutters``; ids are ``f'{source}:{index}'`` unless noted)

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

``wikitext2_test`` (encyclopedic, cut like wikitext2_valid) is held out: it only ever appears in ``test``. FLORES
documents hold ``flores_sentences_per_doc`` consecutive sentences (joined without spaces for Chinese).

Labels
  ``domain``: as above; ``TARGET_DOMAINS`` (encyclopedic, books, stories, math) are the target-like clean English.
  ``quality``: ``'clean'`` (curated corpora), ``'raw'`` (Common Crawl page text with menus and boilerplate), or
  ``f'synthetic_{kind}'`` for the corrupted copies of ``corruptions.SYNTHETIC_KINDS``: shuffled words, character
  noise, repeated-line spam, truncated fragments.
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

The documents are read, cut and corrupted once per process and config, on first use (``benchmark_documents``,
about 0.5 s), and kept in memory (~20 M characters).
"""
import dataclasses
import functools
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

from bliss_jax.data import sources
from bliss_jax.data.benchmark.corruptions import corrupted_copy, unit_hash
from bliss_jax.data.benchmark.cutters import (c_blocks, group_lines, merge_units, normalize_text, paragraphs,
                                              read_text, tinystories_documents, wikitext_articles)
from bliss_jax.data.data_dir import CORPUS_SUBDIR, resolve_data_dir

SPLITS = ('train', 'pool', 'validation', 'test')
TARGET_DOMAINS = ('encyclopedic', 'books', 'stories', 'math')
CLEAN, RAW = 'clean', 'raw'
FLORES_LANGUAGES = (('deu_Latn', 'german'), ('spa_Latn', 'spanish'), ('rus_Cyrl', 'russian'),
                    ('zho_Hans', 'chinese'))

Document = Tuple[str, str]


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
  yield from numbered('wikitext2_valid', wikitext_articles(read_text(path('wikitext2_valid.txt'))), 'encyclopedic',
                      'encyclopedic')
  yield from numbered('wikitext2_test', wikitext_articles(read_text(path('wikitext2_test.txt'))), 'encyclopedic',
                      'encyclopedic')
  yield from numbered('war_and_peace', merge_units(paragraphs(read_text(path('war_and_peace.txt'))), min_chars),
                      'books', 'books')
  yield from numbered('tinyshakespeare', merge_units(paragraphs(read_text(path('tinyshakespeare.txt'))), min_chars),
                      'books', 'books')
  yield from numbered('tinystories', tinystories_documents(read_text(path('tinystories_valid_head.txt'))), 'stories',
                      'stories')
  gsm8k = sources.read_jsonl_documents(path('gsm8k_train.jsonl'), template='{question}\n{answer}', id_field=None)
  yield from numbered('gsm8k', (normalize_text(text) for _, text in gsm8k), 'math', 'math')
  yield from numbered('linux_kernel_c', merge_units(c_blocks(read_text(path('linux_kernel_c.txt'))), min_chars),
                      'code_c', 'code_c')
  mbpp = sources.read_jsonl_documents(path('mbpp.jsonl'), template='{text}\n{code}', id_field=None)
  yield from numbered('mbpp', (normalize_text(text) for _, text in mbpp), 'code_python', 'code_python')
  yield from numbered('wiki_fr', merge_units(read_text(path('wiki_fr_extract.txt')).split('\n'), min_chars, '\n'),
                      'multilingual', 'french')
  for code, language in FLORES_LANGUAGES:
    lines = read_text(path('flores_dev', f'{code}.dev')).split('\n')
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
    copy = None if not doc.target or doc.split == 'validation' else corrupted_copy(
        doc.text, doc.doc_id, config.seed, config.synthetic_fraction)
    if copy is None:
      continue
    kind, text = copy
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

