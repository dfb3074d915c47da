"""The benchmark's catalog: one entry per document with its labels, split and size (no text, no tokens), as a list,
as JSONL on disk, and as the labellers a selection's composition is counted with (``data.composition``).
"""
import json
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from bliss_jax.data.benchmark.documents import BenchmarkConfig, benchmark_documents


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


def catalog_labellers(catalog: Sequence[Mapping[str, Any]]) -> Dict[str, Callable[[str], str]]:
  """``{kind: doc_id -> label}`` from the catalog's entries: ``'domain'``, ``'quality'`` (where the entries have one)
  and ``'target'`` (``'yes'`` / ``'no'``: target-like). A document not in the catalog raises ``KeyError``."""
  by_id = {e['doc_id']: e for e in catalog}

  def entry(doc):
    if doc not in by_id:
      raise KeyError(f'{doc!r} is not in the benchmark catalog: is it the right corpus?')
    return by_id[doc]
  labellers = {'domain': lambda doc: entry(doc)['domain'], 'quality': lambda doc: entry(doc)['quality'],
               'target': lambda doc: 'yes' if entry(doc)['target'] else 'no'}
  if catalog and 'quality' not in catalog[0]:
    del labellers['quality']
  return labellers
