r"""Trains a T5-convention SentencePiece model on local files or on the embedded default corpus.

  python scripts/train_tokenizer.py --input a.txt --input b.jsonl --vocab_size 8000 --output my.model
  python scripts/train_tokenizer.py --embedded --vocab_size 2048 --output embedded.model

The format of each input follows its name (``.jsonl``/``.jsonl.gz``: JSONL, otherwise one document per
line) unless ``--format`` is given. Prints the model path and its number of pieces.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax.data import embedded  # pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data import vocabulary  # pylint: disable=g-import-not-at-top,wrong-import-position


def _texts(args):
  """Yields the texts of the requested inputs, in order."""
  if args.embedded:
    for _, text in embedded.embedded_documents():
      yield text
  for path in args.input:
    fmt = args.format
    if fmt is None:
      fmt = 'jsonl' if path.endswith(('.jsonl', '.jsonl.gz')) else 'text'
    if fmt == 'jsonl':
      documents = sources.read_jsonl_documents(path, text_fields=args.text_field or ('text',))
    else:
      documents = sources.read_text_documents(path, 'line' if fmt == 'text' else 'blank_line')
    for _, text in documents:
      yield text


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', action='append', default=[], help='a text or JSONL file (repeatable)')
  parser.add_argument('--embedded', action='store_true', help='train on the embedded default corpus')
  parser.add_argument('--format', choices=('text', 'blank_line', 'jsonl'), default=None,
                      help='format of every --input (default: from the file name)')
  parser.add_argument('--text_field', action='append', default=[],
                      help='JSONL field(s) joined into the text (repeatable; default: text)')
  parser.add_argument('--vocab_size', type=int, required=True)
  parser.add_argument('--output', required=True, help='path of the .model file')
  parser.add_argument('--model_type', default='unigram', choices=('unigram', 'bpe', 'char', 'word'))
  parser.add_argument('--character_coverage', type=float, default=1.0)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  if not args.input and not args.embedded:
    parser.error('give at least one --input, or --embedded')
  for path in args.input:
    if not os.path.isfile(path):
      parser.error(f'input not found: {path}')

  start = time.perf_counter()
  path = vocabulary.train_sentencepiece(
      _texts(args), args.output, args.vocab_size, model_type=args.model_type,
      character_coverage=args.character_coverage, seed=args.seed)
  pieces = vocabulary.load_vocabulary(path, extra_ids=0).vocab_size
  print(f'{path}\t{pieces} pieces\t{time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
  main()
