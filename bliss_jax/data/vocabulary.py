"""SentencePiece vocabularies with T5 conventions: training, loading, the embedded default, and the record that
identifies a vocabulary (these, or a Hugging Face checkpoint's tokenizer, `hf_tokenizer`).

Every model trained here reserves ``pad_id=0``, ``eos_id=1``, ``unk_id=2`` and has no BOS (``bos_id=-1``), as
seqio and t5x expect. ``load_vocabulary`` appends ``extra_ids`` sentinel pieces (``<extra_id_0>`` has the
highest id) for span-corruption objectives.

``vocabulary_record`` identifies a vocabulary: its kind, the model file (``'default'`` for the embedded one), its
extra ids, its size and a fingerprint, the sha256 of the SentencePiece model file's bytes (what ``sha256sum`` prints);
a Hugging Face tokenizer's record (kind ``'hf_tokenizer'``) names its directory, fingerprints the file that defines
its ids (tokenizer.model or tokenizer.json) and adds its ``start_id``. ``load_recorded`` loads the vocabulary a
record names; ``load_path`` a SentencePiece model file or a Hugging Face tokenizer directory.

Training is deterministic: one thread, the sentences in the order given, no sampling (every sentence is used),
and a fixed random seed, so the same texts and settings give a byte-identical model file.
"""
import hashlib
import io
import json
import os
import tempfile
import time
from typing import Any, Dict, Iterable, Iterator

from absl import logging
import seqio
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from bliss_jax.cache_dir import cache_dir
from bliss_jax.data import embedded, hf_tokenizer

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
DEFAULT_EXTRA_IDS = 100
# The embedded corpus (~1.7 MB of English prose about Python) supports a small vocabulary well: 2048 pieces
# cover its frequent words and subwords, train in a few seconds, and keep the embedding table (and, for the
# tiny CPU models this corpus is meant for, the softmax) a small share of the parameters.
DEFAULT_VOCAB_SIZE = 2048
# SentencePiece options that keep a text's whitespace (for code): no normalisation (T5's nmt_nfkc maps newlines and
# tabs to spaces and collapses runs of spaces), "\n" and "\t" as pieces of their own (training sentences are lines,
# so neither would otherwise be learnt), and runs of spaces ("▁▁▁▁", an indentation) as pieces.
KEEP_WHITESPACE_OPTIONS = dict(normalization_rule_name='identity', remove_extra_whitespaces=False,
                               user_defined_symbols=['\n', '\t'], allow_whitespace_only_pieces=True)


def _sentences(texts: Iterable[str], max_sentence_bytes: int) -> Iterator[str]:
  """Yields the non-blank lines of ``texts`` in order, each cut to at most ``max_sentence_bytes`` bytes."""
  for text in texts:
    for line in text.splitlines():
      if line.strip():
        data = line.encode('utf-8')
        if len(data) > max_sentence_bytes:
          line = data[:max_sentence_bytes].decode('utf-8', errors='ignore')
        yield line


def _write_atomically(data: bytes, path: str) -> None:
  """Writes ``data`` to a temporary file beside ``path`` and renames it into place."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + '.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise


def train_sentencepiece(texts: Iterable[str],
                        model_path: str,
                        vocab_size: int,
                        model_type: str = 'unigram',
                        character_coverage: float = 1.0,
                        seed: int = 0,
                        *,
                        byte_fallback: bool = False,
                        keep_whitespace: bool = False,
                        max_sentence_bytes: int = 4192,
                        **trainer_kwargs: Any) -> str:
  """Trains a SentencePiece model with T5 conventions on ``texts`` and writes it atomically to ``model_path``.

  Each non-blank line of each text is one training sentence (lines longer than ``max_sentence_bytes`` are
  cut, since SentencePiece silently drops longer sentences). The normaliser is T5's ``nmt_nfkc``, which maps
  newlines and tabs to spaces and collapses runs of whitespace, unless ``keep_whitespace``.

  Args:
    texts: documents, consumed once, in order.
    model_path: where the ``.model`` file goes (its directory is created); replaced atomically, so concurrent
      readers see the old file or the new one, never a partial one.
    vocab_size: number of pieces, including pad, eos and unk (but not the ``extra_ids`` added at load time).
    model_type: ``'unigram'`` (T5's choice), ``'bpe'``, ``'char'`` or ``'word'``.
    character_coverage: fraction of characters the model must cover; rarer characters map to unk.
    seed: SentencePiece's random-generator seed.
    byte_fallback: decompose unknown characters into ``<0xXX>`` byte pieces instead of unk (costs 256 pieces).
    keep_whitespace: ``KEEP_WHITESPACE_OPTIONS``: no normalisation, newlines and tabs as pieces, runs of spaces kept,
      so that decoding gives back a text's line breaks and indentation (code); 2 pieces go to ``\n`` and ``\t``.
    max_sentence_bytes: the longest sentence, in UTF-8 bytes, passed to the trainer.
    **trainer_kwargs: further ``spm.SentencePieceTrainer.train`` options.

  Returns:
    ``model_path``.
  """
  spm.set_random_generator_seed(seed)
  options = dict(
      model_type=model_type,
      vocab_size=vocab_size,
      character_coverage=character_coverage,
      pad_id=PAD_ID,
      eos_id=EOS_ID,
      unk_id=UNK_ID,
      bos_id=-1,
      byte_fallback=byte_fallback,
      num_threads=1,
      input_sentence_size=0,
      shuffle_input_sentence=False,
      max_sentence_length=max_sentence_bytes,
      minloglevel=2,
  )
  if keep_whitespace:
    options.update(KEEP_WHITESPACE_OPTIONS)
  options.update(trainer_kwargs)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=_sentences(texts, max_sentence_bytes), model_writer=model, **options)
  _write_atomically(model.getvalue(), model_path)
  return model_path


def _read_model_proto(model_path: str):
  """The SentencePiece ModelProto in ``model_path``; a file that is not one (corrupt, truncated, empty) raises
  ``ValueError`` naming it."""
  with open(model_path, 'rb') as f:
    data = f.read()
  try:
    proto = sentencepiece_model_pb2.ModelProto.FromString(data)
  except Exception as e:  # protobuf's DecodeError, whose module differs between protobuf implementations
    raise ValueError(f'{model_path}: not a SentencePiece model (corrupt or truncated? {len(data)} bytes): {e}') from None
  if not proto.pieces:
    raise ValueError(f'{model_path}: not a SentencePiece model (no pieces in its {len(data)} bytes: empty or corrupt?)')
  return proto


def load_vocabulary(model_path: str, extra_ids: int = DEFAULT_EXTRA_IDS) -> seqio.SentencePieceVocabulary:
  """Returns the seqio vocabulary of a T5-convention SentencePiece model with ``extra_ids`` sentinels.

  Raises:
    FileNotFoundError: ``model_path`` does not exist.
    ValueError: the file is not a SentencePiece model, or the model does not reserve pad=0, eos=1, unk=2.
  """
  if not os.path.isfile(model_path):
    raise FileNotFoundError(f'SentencePiece model not found: {model_path}')
  spec = _read_model_proto(model_path).trainer_spec
  if (spec.pad_id, spec.eos_id, spec.unk_id) != (PAD_ID, EOS_ID, UNK_ID):
    raise ValueError(f'{model_path}: expected pad_id=0, eos_id=1, unk_id=2 (T5 conventions), got '
                     f'pad_id={spec.pad_id}, eos_id={spec.eos_id}, unk_id={spec.unk_id}')
  return seqio.SentencePieceVocabulary(model_path, extra_ids=extra_ids)


def _default_settings() -> Dict[str, Any]:
  return dict(vocab_size=DEFAULT_VOCAB_SIZE, model_type='unigram', character_coverage=1.0, seed=0,
              sentencepiece=spm.__version__)


def _default_file(documents) -> str:
  """Where the embedded-corpus model of ``documents`` is cached (whether or not it has been trained yet)."""
  key = hashlib.sha256(
      (embedded.corpus_fingerprint(documents) + json.dumps(_default_settings(), sort_keys=True)).encode()).hexdigest()
  return os.path.join(cache_dir(), f'embedded_spm{DEFAULT_VOCAB_SIZE}_{key[:16]}.model')


def default_vocabulary_path() -> str:
  """Returns the embedded-corpus model's path, training and caching the model there on first use.

  The file name holds a hash of the corpus (which changes with the Python version) and the training settings,
  so a changed corpus never reuses a stale model. Several processes may train at once: each writes its own
  temporary file and renames it into place, and all produce the same bytes. A cached file that is not a SentencePiece
  model (truncated, corrupt) is trained again, with a warning.
  """
  documents = embedded.embedded_documents()
  settings = _default_settings()
  path = _default_file(documents)
  if os.path.isfile(path):
    try:
      _read_model_proto(path)
    except ValueError as e:
      logging.warning('The cached default vocabulary is unreadable (%s); training it again.', e)
      os.remove(path)
  if not os.path.isfile(path):
    start = time.perf_counter()
    settings.pop('sentencepiece')
    train_sentencepiece((text for _, text in documents), path, **settings)
    logging.info('Trained the default vocabulary in %.1f s: %s', time.perf_counter() - start, path)
  return path


def default_vocabulary(extra_ids: int = DEFAULT_EXTRA_IDS) -> seqio.SentencePieceVocabulary:
  """Returns the SentencePiece vocabulary of the embedded corpus (see ``default_vocabulary_path``)."""
  return load_vocabulary(default_vocabulary_path(), extra_ids=extra_ids)


def load_path(path: str, extra_ids: int = DEFAULT_EXTRA_IDS) -> seqio.Vocabulary:
  """A T5-convention SentencePiece model file with ``extra_ids`` sentinels (``load_vocabulary``), or a Hugging Face
  tokenizer directory (``hf_tokenizer.load_tokenizer``; e.g. an imported MODEL_DIR's ``tokenizer/``), as given."""
  return hf_tokenizer.load_tokenizer(path) if os.path.isdir(path) else load_vocabulary(path, extra_ids)


SENTENCEPIECE = 'sentencepiece'
HF_TOKENIZER = 'hf_tokenizer'
DEFAULT = 'default'  # a record's path for the embedded corpus's vocabulary


def file_fingerprint(path: str) -> str:
  """``'sha256:'`` + the hex sha256 of the file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return 'sha256:' + digest.hexdigest()


def vocabulary_record(vocab: seqio.Vocabulary) -> Dict[str, Any]:
  """What identifies ``vocab``: ``{'kind', 'path', 'extra_ids', 'size', 'fingerprint'}``.

  For a SentencePiece vocabulary: kind ``'sentencepiece'``, the model file's absolute path (``'default'`` when it
  is the embedded corpus's cached model), and the fingerprint of that file (``file_fingerprint``); ``size`` counts
  the extra ids. For a Hugging Face tokenizer (``hf_tokenizer``): kind ``'hf_tokenizer'``, its directory, the
  fingerprint of the file that defines its ids, and ``start_id`` (the id its ``AutoTokenizer`` puts before a text, or
  None). Another kind of vocabulary has no path and no fingerprint (None): it cannot be checked.
  """
  record = {'kind': type(vocab).__name__, 'path': None, 'extra_ids': int(vocab.extra_ids),
            'size': int(vocab.vocab_size), 'fingerprint': None}
  if isinstance(vocab, hf_tokenizer.HF_VOCABULARIES):
    record.update(kind=HF_TOKENIZER, path=vocab.tokenizer_dir, fingerprint=file_fingerprint(vocab.ids_file),
                  start_id=vocab.start_id)
  elif isinstance(vocab, seqio.SentencePieceVocabulary):
    path = os.path.abspath(vocab.sentencepiece_model_file)
    is_default = False
    if os.path.basename(path).startswith('embedded_spm'):  # reading the corpus to be sure only when it may be
      default = _default_file(embedded.embedded_documents())
      is_default = os.path.isfile(default) and os.path.samefile(path, default)
    record.update(kind=SENTENCEPIECE, path=DEFAULT if is_default else path, fingerprint=file_fingerprint(path))
  return record


def load_recorded(record: Dict[str, Any]) -> seqio.Vocabulary:
  """The vocabulary a ``vocabulary_record`` names (the embedded default, its model file with its extra ids, or its
  Hugging Face tokenizer directory)."""
  if record.get('kind') == HF_TOKENIZER and record.get('path'):
    return hf_tokenizer.load_tokenizer(record['path'])
  if record.get('kind') != SENTENCEPIECE or not record.get('path'):
    raise ValueError(f'cannot load a {record.get("kind")} vocabulary from its record ({record}); give its file')
  extra_ids = int(record.get('extra_ids', DEFAULT_EXTRA_IDS))
  if record['path'] == DEFAULT:
    return default_vocabulary(extra_ids)
  return load_vocabulary(record['path'], extra_ids)
