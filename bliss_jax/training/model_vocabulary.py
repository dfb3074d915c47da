"""The vocabulary a MODEL_DIR's model was trained with (MODEL_DIR/vocabulary.json), and the check every tool makes
against it.

A run trained on SeqIO tasks records their vocabulary (`data.vocabulary.vocabulary_record`: kind, model file or
"default", extra ids, size and the sha256 fingerprint of the model file) and the tasks' names. Every tool that puts
token ids in front of the model (evaluation, export, frozen-model slots, offline scoring, a resumed run) uses the
recorded vocabulary by default (`vocabulary_for`) and refuses another (`check`): a different fingerprint or size, named
with the MODEL_DIR and both vocabularies. A MODEL_DIR written before runs recorded their vocabulary has no record:
tools keep working on it and warn that its vocabulary could not be checked. A MODEL_DIR imported from a Hugging Face
checkpoint (`bliss_jax.export.hf_import`) records the checkpoint's tokenizer, copied into MODEL_DIR/tokenizer/ (kind
"hf_tokenizer"; the record also says which id begins an evaluation row, `start_id`).
"""
import logging
from typing import Optional, Sequence, Tuple

from bliss_jax.training.model_dir import ModelDir


class VocabularyMismatch(ValueError):
  """A vocabulary given to a tool is not the one the model was trained with."""


def summary(record: dict) -> str:
  """A vocabulary record in one line: its file (or "default"), size and fingerprint."""
  fingerprint = record.get("fingerprint")
  return (f"{record.get('path') or record.get('kind')} ({record.get('size')} ids, "
          f"{fingerprint[:23] if fingerprint else 'no fingerprint'})")


def _not_checked(model_dir: str, what: str, why: str) -> None:
  logging.warning("the vocabulary %s uses could not be checked against the one %s was trained with: %s", what,
                  model_dir, why)


def check(model_dir: str, given: Optional[dict], *, what: str) -> Optional[dict]:
  """Refuse `given` (a vocabulary record) for MODEL_DIR's model unless it is the recorded one (same fingerprint and
  size); returns the recorded record (None, with a warning, when MODEL_DIR has none). `what` names who brings the
  given vocabulary in messages, e.g. "--vocabulary" or "task 'pool'"."""
  recorded = ModelDir(model_dir).read_vocabulary()
  if recorded is None:
    _not_checked(model_dir, what, "it records no vocabulary (written before runs recorded theirs)")
    return None
  if given is None:
    return recorded
  if recorded.get("size") != given.get("size") or recorded.get("fingerprint") != given.get("fingerprint"):
    raise VocabularyMismatch(
        f"{model_dir} was trained with the vocabulary {summary(recorded)} (its vocabulary.json), but {what} uses "
        f"{summary(given)}: token ids of different vocabularies do not correspond. Use the model's own vocabulary.")
  if recorded.get("fingerprint") is None:
    _not_checked(model_dir, what, f"a {recorded.get('kind')} vocabulary has no fingerprint (sizes agree)")
  return recorded


def record_of_tasks(tasks: Sequence[str]) -> Optional[dict]:
  """The record a run on the SeqIO `tasks` keeps in vocabulary.json: their (one) vocabulary's record plus `tasks`;
  None without tasks. Tasks with different vocabularies are refused."""
  if not tasks:
    return None
  from bliss_jax.data import pipeline, vocabulary  # pylint: disable=g-import-not-at-top  (seqio is slow to import)
  records = {t: vocabulary.vocabulary_record(pipeline.task_vocabulary(t)) for t in tasks}
  if len({(r["size"], r["fingerprint"], r["kind"]) for r in records.values()}) > 1:
    raise VocabularyMismatch("the batch source reads tasks with different vocabularies: " +
                             "; ".join(f"{t}: {summary(r)}" for t, r in records.items()))
  return dict(records[tasks[0]], tasks=list(tasks))


def vocabulary_for(model_dir: str, spec: Optional[str] = None) -> Tuple[object, dict]:
  """(seqio vocabulary, its record) a tool uses with MODEL_DIR's model: the recorded one when `spec` is None, else
  `spec` ("default": the embedded corpus's; a SentencePiece model file, with the recorded extra ids; or a Hugging
  Face tokenizer directory, `vocabulary.load_path`), refused
  unless it is the recorded one. A MODEL_DIR without a record gets the embedded default (or `spec`), with a warning
  that the vocabulary could not be checked."""
  from bliss_jax.data import vocabulary  # pylint: disable=g-import-not-at-top  (seqio is slow to import)
  recorded = ModelDir(model_dir).read_vocabulary()
  extra_ids = int((recorded or {}).get("extra_ids", vocabulary.DEFAULT_EXTRA_IDS))
  if spec is None and recorded is not None:
    try:
      vocab = vocabulary.load_recorded(recorded)
    except (FileNotFoundError, ValueError) as e:
      raise FileNotFoundError(f"{model_dir}'s recorded vocabulary {summary(recorded)} cannot be loaded ({e}); give "
                              "the same SentencePiece model file explicitly") from None
    what = "its recorded vocabulary file (as it is now)"
  elif spec is None or spec == vocabulary.DEFAULT:
    vocab, what = vocabulary.default_vocabulary(extra_ids), "the embedded default vocabulary"
  else:
    vocab, what = vocabulary.load_path(spec, extra_ids), f"the vocabulary given ({spec})"
  record = vocabulary.vocabulary_record(vocab)
  check(model_dir, record, what=what)
  return vocab, record
