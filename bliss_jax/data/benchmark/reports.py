"""Reports on the benchmark: its sizes by label and split, and the composition of a selected subset of documents next
to the pool it was chosen from (the per-document report the pipelines write beside a selection).
"""
import collections
import functools
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from bliss_jax.data.benchmark.catalog import build_catalog, catalog_labellers
from bliss_jax.data.benchmark.documents import SPLITS
from bliss_jax.data.composition import SelectionReporter, composition_of_documents, label_totals


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


def selection_report(selected_ids: Iterable[str],
                     catalog: Sequence[Mapping[str, Any]],
                     base_split: Optional[str] = 'pool') -> Dict[str, Any]:
  """Composition of a selected subset of documents next to the base rates of the pool it was chosen from.

  Args:
    selected_ids: document ids, or chunk keys ``doc_id#chunk_index`` (duplicates, e.g. one per selected chunk,
      count once).
    catalog: ``build_catalog`` entries (or ``read_catalog``), or any entries with ``doc_id``, ``domain``,
      ``split``, ``n_chars``, ``target`` and optionally ``quality`` (a local mixture's, ``data.local_mixture``).
    base_split: the split whose composition is the base rate (``'pool'``); None for the whole catalog.

  Returns:
    ``{'n_selected', 'n_duplicates', 'unknown_ids' (up to 10), 'n_unknown', 'selected_splits' (split -> docs),
    'base_split', 'n_base', 'target': {'selected', 'base', 'lift'}, 'by_domain', 'by_quality' (where the entries
    have a quality)}``, where
    ``target`` holds char fractions of target-like documents (None for an empty set) and ``by_domain`` /
    ``by_quality`` map each label to ``{'selected': {docs, doc_fraction, chars, char_fraction}, 'base': {...},
    'lift'}``, ``lift`` being the selected over the base char fraction (None where the base has none). The
    fractions are ``data.composition``'s, per document and weighted by characters.
  """
  by_id = {e['doc_id']: e for e in catalog}
  # Selections of chunks are keyed "doc_id#chunk_index": a document counts once, however many chunks were chosen.
  selected_ids = [i if i in by_id or not re.fullmatch(r'.+#\d+', i) else i.rpartition('#')[0] for i in selected_ids]
  unique = list(dict.fromkeys(selected_ids))
  unknown = [i for i in unique if i not in by_id]
  selected = [i for i in unique if i in by_id]
  base = [e['doc_id'] for e in catalog if base_split is None or e['split'] == base_split]
  labellers = catalog_labellers(catalog)
  kinds = [key for key in ('domain', 'quality') if key in labellers]
  n_chars = lambda doc: by_id[doc]['n_chars']

  def shares(docs):
    """The documents' composition per document and per character, and their counts by domain and quality."""
    per_doc, per_char = composition_of_documents(docs, labellers), composition_of_documents(docs, labellers, n_chars)
    rows = {key: {label: {'docs': n, 'doc_fraction': per_doc[f'by_{key}'][label], 'chars': chars,
                          'char_fraction': per_char[f'by_{key}'][label]}
                  for (label, n), chars in zip(label_totals(docs, labellers[key]).items(),
                                               label_totals(docs, labellers[key], n_chars).values())}
            for key in kinds}
    return per_char['target_fraction'], rows

  def lift(s, b):
    return s / b if s is not None and b else None

  report = {
      'n_selected': len(selected), 'n_duplicates': len(selected_ids) - len(unique),
      'n_unknown': len(unknown), 'unknown_ids': unknown[:10],
      'selected_splits': dict(collections.Counter(by_id[i]['split'] for i in selected)),
      'base_split': base_split, 'n_base': len(base),
  }
  (target_sel, sel), (target_base, bas) = shares(selected), shares(base)
  report['target'] = {'selected': target_sel, 'base': target_base, 'lift': lift(target_sel, target_base)}
  for key in kinds:
    empty = {'docs': 0, 'doc_fraction': 0.0, 'chars': 0, 'char_fraction': 0.0}
    report[f'by_{key}'] = {
        label: {'selected': sel[key].get(label, empty), 'base': bas[key].get(label, empty),
                'lift': lift(sel[key].get(label, empty)['char_fraction'], bas[key].get(label, empty)['char_fraction'])}
        for label in sorted(set(sel[key]) | set(bas[key]))}
  return report


def format_selection_report(report: Mapping[str, Any], target: str = 'target-like clean English') -> str:
  """The report as text: a summary line, the share of ``target`` (what the catalog's target-like documents are),
  then markdown tables by domain and by quality where the report has them (% of documents and of characters, selected
  vs. base, and the lift = selected / base character share)."""
  base_name = report['base_split'] or 'catalog'
  lines = [f"selected {report['n_selected']} documents ({report['n_duplicates']} duplicate ids, "
           f"{report['n_unknown']} unknown ids) from splits {report['selected_splits']}; base: {base_name} "
           f"({report['n_base']} documents)"]
  if report['unknown_ids']:
    lines.append(f"unknown ids (first {len(report['unknown_ids'])}): {', '.join(report['unknown_ids'])}")
  t = report['target']
  percent = lambda x: '-' if x is None else f'{100 * x:.1f}%'
  lines.append(f"{target}: {percent(t['selected'])} of selected characters vs "
               f"{percent(t['base'])} of {base_name}" + ('' if t['lift'] is None else f" (lift {t['lift']:.2f})"))
  for key in [k for k in ('domain', 'quality') if f'by_{k}' in report]:
    lines += ['', f'| {key} | selected docs | selected % docs | selected % chars | {base_name} % docs | '
              f'{base_name} % chars | lift |', '|---|---:|---:|---:|---:|---:|---:|']
    for label, row in report[f'by_{key}'].items():
      s, b = row['selected'], row['base']
      lift = '-' if row['lift'] is None else f"{row['lift']:.2f}"
      lines.append(f"| {label} | {s['docs']} | {100 * s['doc_fraction']:.1f} | {100 * s['char_fraction']:.1f} | "
                   f"{100 * b['doc_fraction']:.1f} | {100 * b['char_fraction']:.1f} | {lift} |")
  return '\n'.join(lines)


def selection_reporter(data_dir: Optional[str] = None, seed: int = 0, **config_kwargs) -> SelectionReporter:
  """The benchmark's ``SelectionReporter``: the catalog's labellers and ``selection_report`` with its markdown, over
  ``build_catalog(data_dir, seed, **config_kwargs)``, built on first use."""
  catalog = functools.lru_cache(maxsize=None)(lambda: build_catalog(data_dir, seed, **config_kwargs))

  def document_report(keys: Sequence[str], base_split: Optional[str]) -> Tuple[Dict[str, Any], str]:
    report = selection_report(keys, catalog(), base_split=base_split)
    return report, format_selection_report(report)
  return SelectionReporter(labellers=lambda: catalog_labellers(catalog()), document_report=document_report)
