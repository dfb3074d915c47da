"""A Hugging Face checkpoint's tokenizer as a SeqIO vocabulary, with exactly the ids `AutoTokenizer` gives.

`load_tokenizer(directory)` reads a tokenizer directory as `transformers` saves it:

* `tokenizer.model` present (Llama / TinyLlama: a SentencePiece model) -> `SentencePieceTokenizerVocabulary`, a
  `seqio.SentencePieceVocabulary` over that file, without extra ids and without the T5-convention check of
  `vocabulary.load_vocabulary` (Llama reserves unk 0, bos 1, eos 2 and has no pad).
* otherwise `tokenizer.json` (Qwen, GPT-NeoX / Pythia: byte-level BPE) -> `TokenizersVocabulary`, backed by the
  `tokenizers` library (`Tokenizer.from_file`), in Python and, through `tf.numpy_function`, in TensorFlow.

Ids: `encode(text)` is `AutoTokenizer(...)(text, add_special_tokens=False)["input_ids"]` (no special token is added;
text that spells a special token, e.g. "<|endoftext|>", is encoded as that token, as AutoTokenizer does). eos and unk
are the tokenizer's (`tokenizer_config.json` / `special_tokens_map.json` name them; SentencePiece models carry their
own). Every id of the tokenizer, added tokens included, is below `vocab_size`; there are no extra ids (sentinels).

BOS: `start_id` is the id `AutoTokenizer(...)(text)["input_ids"]` puts before the text: the bos when the tokenizer
adds one (Llama: `add_bos_token`, true by default; a `tokenizer.json` post-processor that prepends a token), else
None (Qwen and GPT-NeoX add nothing). It is recorded with the vocabulary (`vocabulary.vocabulary_record`);
`scripts/evaluate.py` starts every row with it (none when None, as lm-evaluation-harness does for such a model), so an
imported model is scored as the harness scores the original, and training and held-out rows
(`data.pipeline.model_features`) start every example's decoder inputs with it, as `transformers` trains such a model.
Without a start id an example's first decoder input is id 0, seqio's fill (for Qwen "!", for GPT-NeoX
`<|endoftext|>`, the token that separates its documents): a row's first token is then predicted from it, where
`transformers` predicts nothing at the first position.

Id 0: `id0_is_token` is true where id 0 is a token, as it is for these tokenizers (Llama `<unk>`, Qwen "!", GPT-NeoX
`<|endoftext|>`, which is also its eos): unless the tokenizer's pad token (tokenizer_config.json's, else a
SentencePiece model's own) is id 0 and neither bos, eos nor unk is (a T5-style SentencePiece model). SeqIO
reserves id 0 for padding (`seqio.Vocabulary.pad_id`): its packing cuts an example at its count of non-zero ids and
its converters give target id 0 no loss weight. `data.pipeline.model_features` therefore converts a task whose
vocabulary has `id0_is_token` on ids shifted up by one and shifts the model's tokens back, so that id 0 is packed,
segmented, weighted (training, held-out evaluation) and scored (`data.keyed`: RHO-1's reference losses, MiniPLM's
scores) like any other token, and GPT-NeoX's appended eos carries loss. Padding keeps id 0 with loss weight 0, and
the pad token itself is never used. Evaluation (`bliss_jax.eval`) scores id 0 like any other.

Known differences from AutoTokenizer: a Llama SentencePiece model encodes leading whitespace as SentencePiece does
(AutoTokenizer, converting it to `tokenizers` with transformers 5's Llama pre-tokenizer, maps the first space
differently: "  x" has one more "▁" piece here); decoding shows special tokens as their text (AutoTokenizer's
`decode` without `skip_special_tokens`).
"""
import hashlib
import json
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf
import tokenizers

SPM_FILE = "tokenizer.model"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
FILES = (SPM_FILE, TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)  # what a tokenizer directory may hold


def _read_json(path: str) -> Dict[str, Any]:
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _token_text(value) -> Optional[str]:
  """A special token as tokenizer_config.json writes it: a string, an AddedToken dict, or None."""
  if isinstance(value, dict):
    return value.get("content")
  return value


def _id0_is_token(pad_id: Optional[int], special_ids: Sequence[Optional[int]]) -> bool:
  """Whether id 0 is a token, not only padding: unless the tokenizer's pad is id 0 and no bos, eos or unk is."""
  return pad_id != 0 or 0 in special_ids


def tokenizer_settings(directory: str) -> Dict[str, Any]:
  """tokenizer_config.json over special_tokens_map.json: the special tokens' texts and the add_*_token flags."""
  return {**_read_json(os.path.join(directory, SPECIAL_TOKENS_MAP)),
          **_read_json(os.path.join(directory, TOKENIZER_CONFIG))}


class SentencePieceTokenizerVocabulary(seqio.SentencePieceVocabulary):
  """A Hugging Face SentencePiece tokenizer (Llama's `tokenizer.model`) as seqio sees it, with no extra ids."""

  def __init__(self, directory: str):
    super().__init__(os.path.join(directory, SPM_FILE), extra_ids=0)
    self.tokenizer_dir = os.path.abspath(directory)
    self.ids_file = self.sentencepiece_model_file
    self.settings = tokenizer_settings(directory)
    bos = self.token_id(_token_text(self.settings.get("bos_token")))
    bos = self.tokenizer.bos_id() if bos is None else bos
    self.start_id = bos if self.settings.get("add_bos_token", True) and bos >= 0 else None
    pad = self.token_id(_token_text(self.settings.get("pad_token")))
    self.id0_is_token = _id0_is_token(self.tokenizer.pad_id() if pad is None else pad,
                                      (bos, self.tokenizer.eos_id(), self.tokenizer.unk_id()))

  def token_id(self, token: Optional[str]) -> Optional[int]:
    """The id of piece `token` (None for None or a piece the model lacks)."""
    if token is None:
      return None
    i = self.tokenizer.piece_to_id(token)
    return i if self.tokenizer.id_to_piece(i) == token else None


class TokenizersVocabulary(seqio.Vocabulary):
  """A `tokenizer.json` (byte-level BPE and the like) as a seqio vocabulary, through the `tokenizers` library."""

  def __init__(self, directory: str):
    super().__init__(extra_ids=0)
    self.tokenizer_dir = os.path.abspath(directory)
    self.ids_file = os.path.join(self.tokenizer_dir, TOKENIZER_JSON)
    self._tokenizer = tokenizers.Tokenizer.from_file(self.ids_file)
    self.settings = settings = tokenizer_settings(directory)
    self._special = {role: self.token_id(_token_text(settings.get(f"{role}_token")))
                     for role in ("bos", "eos", "unk")}
    if "add_bos_token" in settings:
      self.start_id = self._special["bos"] if settings["add_bos_token"] else None
    else:  # the tokenizer.json post-processor decides
      with_special = self._tokenizer.encode("a", add_special_tokens=True).ids
      plain = self._tokenizer.encode("a", add_special_tokens=False).ids
      prefix = with_special[:with_special.index(plain[0])] if plain and plain[0] in with_special else []
      self.start_id = prefix[-1] if prefix else None
    self.id0_is_token = _id0_is_token(self.token_id(_token_text(settings.get("pad_token"))), self._special.values())
    with open(self.ids_file, "rb") as f:
      self._digest = hashlib.sha256(f.read()).hexdigest()

  def token_id(self, token: Optional[str]) -> Optional[int]:
    """The id of token `token` (None for None or a token the tokenizer lacks)."""
    return None if token is None else self._tokenizer.token_to_id(token)

  @property
  def bos_id(self) -> Optional[int]:
    return self._special["bos"]

  @property
  def eos_id(self) -> Optional[int]:
    return self._special["eos"]

  @property
  def unk_id(self) -> Optional[int]:
    return self._special["unk"]

  @property
  def _base_vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> Sequence[int]:
    return self._tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

  def _encode_bytes(self, s) -> np.ndarray:
    """`_encode` of a UTF-8 string as `tf.numpy_function` passes it (bytes in a graph, a 0-d array eagerly)."""
    return np.asarray(self._encode(np.asarray(s).item().decode("utf-8")), np.int32)

  def _decode_rows(self, ids: np.ndarray) -> np.ndarray:
    """`_decode` of every row of `ids` [..., T] as UTF-8 bytes, shaped [...]."""
    rows = ids.reshape(-1, ids.shape[-1])
    return np.asarray([self._decode(row).encode("utf-8") for row in rows], dtype=object).reshape(ids.shape[:-1])

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    ids = tf.numpy_function(tf.autograph.experimental.do_not_convert(self._encode_bytes), [s], tf.int32,
                            stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    out = tf.numpy_function(tf.autograph.experimental.do_not_convert(self._decode_rows), [ids], tf.string,
                            stateful=False)
    out.set_shape(ids.shape[:-1])
    return out

  def __eq__(self, other) -> bool:
    return isinstance(other, TokenizersVocabulary) and self._digest == other._digest and \
        self._special == other._special

  def __hash__(self) -> int:
    return hash(self._digest)

  def __str__(self) -> str:
    return f"TokenizersVocabulary({self.tokenizer_dir}, {self.vocab_size} ids)"


HF_VOCABULARIES = (SentencePieceTokenizerVocabulary, TokenizersVocabulary)


def config_token_ids(vocab) -> Dict[str, Optional[int]]:
  """A model config's `bos_token_id` (the start id, else the tokenizer's bos), `eos_token_id` and `pad_token_id` (the
  tokenizer's pad token, if it names one) for an `HF_VOCABULARIES` vocabulary."""
  bos = vocab.start_id if vocab.start_id is not None else vocab.bos_id
  return {"bos_token_id": bos if bos is not None and bos >= 0 else None, "eos_token_id": vocab.eos_id,
          "pad_token_id": vocab.token_id(_token_text(vocab.settings.get("pad_token")))}


def has_tokenizer(directory: str) -> bool:
  """Whether `directory` holds a tokenizer `load_tokenizer` reads."""
  return any(os.path.isfile(os.path.join(directory, name)) for name in (SPM_FILE, TOKENIZER_JSON))


def load_tokenizer(directory: str) -> seqio.Vocabulary:
  """The tokenizer of a Hugging Face model (or tokenizer) directory as a seqio vocabulary (module docstring).

  Raises:
    FileNotFoundError: `directory` has neither tokenizer.model nor tokenizer.json.
  """
  if os.path.isfile(os.path.join(directory, SPM_FILE)):
    return SentencePieceTokenizerVocabulary(directory)
  if os.path.isfile(os.path.join(directory, TOKENIZER_JSON)):
    return TokenizersVocabulary(directory)
  raise FileNotFoundError(f"{directory} has no {SPM_FILE} or {TOKENIZER_JSON}: no tokenizer to load")
