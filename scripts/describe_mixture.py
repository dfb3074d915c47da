r"""Prints the benchmark mixture's sizes as markdown: documents, characters and tokens per domain and per quality
label, in each split, and the mixture rates.

  python scripts/describe_mixture.py [--data_dir DIR] [--seed 0] [--vocabulary_path M] [--catalog out.jsonl]

Tokens are counted with the default (embedded-corpus) SentencePiece vocabulary unless --vocabulary_path is given,
without EOS, on the whole documents (before chunking). --catalog also writes the document catalog as JSONL.
"""
import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax.data import data_dir as data_dir_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data.benchmark import catalog, documents, mixture, reports  # pylint: disable=g-import-not-at-top
from bliss_jax.data import vocabulary as vocabulary_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data_dir', default=None, help=f'holds corpus/ (default: ${data_dir_lib.DATA_DIR_ENV_VAR}, '
                      f'else {data_dir_lib.DEFAULT_DATA_DIR})')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--vocabulary_path', default=None, help='a SentencePiece model (default: the default one)')
  parser.add_argument('--no_tokens', action='store_true', help='skip token counts (no vocabulary needed)')
  parser.add_argument('--catalog', default=None, help='also write the catalog (JSONL) here')
  args = parser.parse_args(argv)

  start = time.perf_counter()
  config = documents.BenchmarkConfig(data_dir=args.data_dir, seed=args.seed)
  try:
    docs = documents.benchmark_documents(config)
  except FileNotFoundError as e:
    parser.exit(2, f'error: {e}\n')
  entries = [d.catalog_entry() for d in docs]
  columns = ['n_chars']
  if not args.no_tokens:
    vocab = (vocabulary_lib.load_vocabulary(args.vocabulary_path) if args.vocabulary_path
             else vocabulary_lib.default_vocabulary())
    for entry, n in zip(entries, reports.count_tokens([d.text for d in docs], vocab)):
      entry['n_tokens'] = n
    columns.append('n_tokens')
    unk = vocab.tokenizer.unk_id()
    unk_by_domain = collections.Counter()
    for d in docs:
      unk_by_domain[d.domain] += sum(1 for t in vocab.tokenizer.encode(d.text) if t == unk)
  if args.catalog:
    catalog.write_catalog(entries, args.catalog)

  print(f'# Benchmark mixture (seed {config.seed}, data {data_dir_lib.resolve_data_dir(args.data_dir)})\n')
  print(f'{len(entries):,} documents; splits by document: train {config.train_fraction:.0%}, pool '
        f'{config.pool_fraction:.0%}, held out {1 - config.train_fraction - config.pool_fraction:.0%} '
        f'(validation = held-out clean target-like English, {config.validation_share:.0%} of it; test = the rest '
        f'and wikitext2_test); synthetic copies of {config.synthetic_fraction:.0%} of the target documents.\n')
  for key in ('domain', 'quality', 'component'):
    for value in columns:
      print(f'## {value} by {key}\n')
      print(reports.size_table(entries, key, value))
      print()
  rates = mixture.DEFAULT_RATES
  total = sum(rates.values())
  print('## Default mixture rates (examples)\n')
  print('| component | rate | share |\n|---|---:|---:|')
  for component, rate in rates.items():
    print(f'| {component} | {rate:g} | {rate / total:.1%} |')
  if not args.no_tokens:
    print('\n## Unknown tokens by domain (the default vocabulary is English-only)\n')
    tokens_by_domain = collections.Counter()
    for e in entries:
      tokens_by_domain[e['domain']] += e['n_tokens']
    print('| domain | tokens | unk | unk % |\n|---|---:|---:|---:|')
    for domain in sorted(tokens_by_domain, key=lambda d: -tokens_by_domain[d]):
      n = tokens_by_domain[domain]
      print(f'| {domain} | {n:,} | {unk_by_domain[domain]:,} | {100 * unk_by_domain[domain] / max(1, n):.1f} |')
  print(f'\n(computed in {time.perf_counter() - start:.1f} s)', file=sys.stderr)


if __name__ == '__main__':
  main()
