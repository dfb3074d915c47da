r"""Composition of a selected subset of documents: fractions by domain (or source) and by quality label, and the
target-like share, next to the base rates of the split they were chosen from.

  python scripts/selection_report.py --ids selected.txt [--catalog catalog.jsonl] [--base_split pool] [--json]
  python scripts/selection_report.py --ids selected.json --gin_file=my_data.gin --task my_mixture [--base_split train]

--ids: one document id per line, or a JSON list of ids or chunk keys (duplicates count once). Without --task, the
documents are the benchmark's: the catalog is read from --catalog (written by scripts/describe_mixture.py --catalog)
or rebuilt from the data (--data_dir, --seed), and --base_split defaults to pool. --task names a mixture registered by
`register_local_mixture` (in a gin file given with --gin_file / --gin.KEY=VALUE / --tasks_module, as scripts/train.py
takes them): the report is by source, with its target-like sources' share, and --base_split defaults to train.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data.benchmark import catalog as catalog_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data.benchmark import reports  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None):
  tasks_args, rest = cli.split_args(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--ids', required=True, help='selected document ids: one per line, or a JSON list')
  parser.add_argument('--task', default=None, help='a registered local mixture (default: the benchmark)')
  parser.add_argument('--catalog', default=None, help='a catalog JSONL (default: rebuild from the data)')
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--base_split', default=None, help="the split giving base rates ('all' for every "
                      "document; default: pool, or train with --task)")
  parser.add_argument('--json', action='store_true', help='print the report as JSON')
  args = parser.parse_args(rest)
  try:
    ids = catalog_lib.read_ids(args.ids)
    if args.task:
      cli.register_tasks(tasks_args)
      from bliss_jax import configurables  # pylint: disable=g-import-not-at-top
      document_report = configurables.selection_reporter('local_mixture', args.task).document_report
      base_split = args.base_split or 'train'
    else:
      catalog = (catalog_lib.read_catalog(args.catalog) if args.catalog
                 else catalog_lib.build_catalog(args.data_dir, args.seed))

      def document_report(keys, base):
        report = reports.selection_report(keys, catalog, base)
        return report, reports.format_selection_report(report)
      base_split = args.base_split or 'pool'
    report, markdown = document_report(ids, None if base_split == 'all' else base_split)
  except (FileNotFoundError, ValueError) as e:
    parser.exit(2, f'error: {e}\n')
  print(json.dumps(report, indent=1) if args.json else markdown)


if __name__ == '__main__':
  cli.run_script(main, __doc__)
