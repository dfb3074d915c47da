r"""Trains a T5-convention SentencePiece model on local files or on the embedded default corpus.

  python scripts/train_tokenizer.py --input a.txt --input b.jsonl --vocab_size 8000 --output my.model
  python scripts/train_tokenizer.py --embedded --vocab_size 2048 --output embedded.model
  python scripts/train_tokenizer.py --vocab_size 8000 --output my.model \
      --input '{"glob": "/data/books/*.txt", "format": "blank_line"}' \
      --input '{"path": "/data/pubmed.jsonl.gz", "text_fields": ["title", "abstract"]}'

An --input is a path, or a JSON object giving a file ("path") or a glob of files ("glob") its own "format" and
JSONL "text_fields" (the entries of `register_local_files_task.paths`, `bliss_jax.data.file_specs`). The format of
an input that gives none is --format, else its name's (``.jsonl``/``.jsonl.gz``: JSONL, otherwise one document per
line). --keep_whitespace keeps line breaks, tabs and runs of spaces (for code: decoding gives back the indentation;
the default normaliser, T5's, maps them to single spaces). Prints the model path and its number of pieces.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bliss_jax.data import embedded  # pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data import file_specs  # pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from bliss_jax.data import vocabulary  # pylint: disable=g-import-not-at-top,wrong-import-position


def input_entry(value: str):
  """An --input: a JSON object (a file_specs entry) when it starts with "{", else a path."""
  if not value.lstrip().startswith('{'):
    return value
  try:
    return json.loads(value)
  except json.JSONDecodeError as e:
    raise argparse.ArgumentTypeError(f'{value!r} is not a JSON object: {e.msg}') from None


def _texts(embedded_corpus, files):
  """Yields the texts of the requested inputs, in order."""
  if embedded_corpus:
    for _, text in embedded.embedded_documents():
      yield text
  for _, text in file_specs.read_documents(files):
    yield text


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', action='append', default=[], type=input_entry,
                      help='a text or JSONL file, or a JSON entry {"path"|"glob", "format", "text_fields"} '
                      '(repeatable)')
  parser.add_argument('--embedded', action='store_true', help='train on the embedded default corpus')
  parser.add_argument('--format', choices=file_specs.FORMATS, default=None,
                      help='format of the inputs that give none (default: from the file name)')
  parser.add_argument('--text_field', action='append', default=[],
                      help='JSONL field(s) joined into the text, for the inputs that give none (repeatable; '
                      'default: text)')
  parser.add_argument('--vocab_size', type=int, required=True)
  parser.add_argument('--output', required=True, help='path of the .model file')
  parser.add_argument('--model_type', default='unigram', choices=('unigram', 'bpe', 'char', 'word'))
  parser.add_argument('--character_coverage', type=float, default=1.0)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--keep_whitespace', action='store_true',
                      help='keep newlines, tabs and runs of spaces (code); default: T5\'s nmt_nfkc normaliser')
  args = parser.parse_args(argv)
  if not args.input and not args.embedded:
    parser.error('give at least one --input, or --embedded')
  try:
    files = file_specs.expand(args.input, args.format, args.text_field or ('text',), unique_ids=False)
  except (FileNotFoundError, ValueError) as e:
    parser.error(str(e))

  start = time.perf_counter()
  try:
    path = vocabulary.train_sentencepiece(
        _texts(args.embedded, files), args.output, args.vocab_size, model_type=args.model_type,
        character_coverage=args.character_coverage, seed=args.seed, keep_whitespace=args.keep_whitespace)
  except sources.MissingFieldError as e:
    fields = e.fields[:2] or ('FIELD',)
    flags = ' '.join(f'--text_field {f}' for f in fields)
    entry = json.dumps({'path': e.path, 'text_fields': list(fields)})
    parser.exit(2, f"error: {e}: name the fields to read with --text_field ({flags}), or per input: "
                f"--input '{entry}'\n")
  except ValueError as e:  # a file that is not UTF-8, not complete gzip, not JSONL
    parser.exit(2, f'error: {e}\n')
  pieces = vocabulary.load_vocabulary(path, extra_ids=0).vocab_size
  print(f'{path}\t{pieces} pieces\t{time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
  main()
