r"""Composition of a selected subset of benchmark documents: fractions by domain and by quality label, next to the
candidate pool's base rates.

  python scripts/selection_report.py --ids selected.txt [--catalog catalog.jsonl] [--base_split pool] [--json]

--ids: one document id per line, or a JSON list of ids (duplicates count once). The catalog is read from
--catalog (written by scripts/describe_mixture.py --catalog) or rebuilt from the data (--data_dir, --seed).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax.data.benchmark import catalog as catalog_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data.benchmark import reports  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--ids', required=True, help='selected document ids: one per line, or a JSON list')
  parser.add_argument('--catalog', default=None, help='a catalog JSONL (default: rebuild from the data)')
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--base_split', default='pool', help="the split giving base rates ('all' for the catalog)")
  parser.add_argument('--json', action='store_true', help='print the report as JSON')
  args = parser.parse_args(argv)
  try:
    ids = catalog_lib.read_ids(args.ids)
    catalog = (catalog_lib.read_catalog(args.catalog) if args.catalog
               else catalog_lib.build_catalog(args.data_dir, args.seed))
  except (FileNotFoundError, ValueError) as e:
    parser.exit(2, f'error: {e}\n')
  report = reports.selection_report(ids, catalog, None if args.base_split == 'all' else args.base_split)
  print(json.dumps(report, indent=1) if args.json else reports.format_selection_report(report))


if __name__ == '__main__':
  main()
