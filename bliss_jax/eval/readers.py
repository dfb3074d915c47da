"""Readers of the benchmarks, each in its own file format, into three item types with harness prompts.

Every reader returns the items of one benchmark as `MultipleChoice`, `Lambada` or `Generation`, already formatted the
way EleutherAI's lm-evaluation-harness (v0.4 task configs) formats them: an item's `requests(prefix)` are the exact
(context, continuation) string pairs whose log-likelihoods the harness compares, a generative item's
`prompt(prefix)` the text it continues, and `example()` its (text, target) when it is shown solved as a few-shot
example (`doc_to_text`, `doc_to_target`). `prefix` is the few-shot context, "" zero-shot. The continuation of a
multiple-choice request is the task's `target_delimiter` (" ") followed by the choice.

Two layouts of multiple choice exist, and `MultipleChoice` holds both:

* the usual one: one shared `context`, the `choices` are continuations, `(context, " " + choice)`;
* partial scoring (WinoGrande, `multiple_inputs` in the harness): the `choices` are the contexts (the sentence up to
  the blank, filled with each option) and one shared `continuation` (the rest of the sentence) is scored after each,
  `(context + choice, " " + continuation)` with `context = ""`.

In both, `acc_norm` divides by `len(choice)` in characters, as the harness does (`float(len(i)) for i in choices`).
Malformed input raises `ReaderError`, naming the file and the item (line or block number); `read_records` and
`field` do that for a reader of one's own.
"""
import bz2
import csv
import dataclasses
import gzip
import json
import os
import re
from typing import Any, Iterator, List, Optional, Tuple

from bliss_jax.data import sources

TARGET_DELIMITER = " "


class ReaderError(ValueError):
  """A benchmark file is missing or malformed; the message names the file and the item."""


@dataclasses.dataclass(frozen=True)
class MultipleChoice:
  """One multiple-choice item.

  Attributes:
    id: a stable id (the dataset's own where it has one, else the file name and item number).
    context: the prompt shared by all choices ("" for partial scoring).
    choices: the answer strings (continuations), or, with `continuation` set, the per-choice contexts.
    gold: index of the correct choice.
    continuation: for partial scoring only, the text scored after each choice.
  """
  id: str
  context: str
  choices: Tuple[str, ...]
  gold: int
  continuation: Optional[str] = None

  def requests(self, prefix: str = "", target_delimiter: str = TARGET_DELIMITER) -> List[Tuple[str, str]]:
    """The (context, continuation) pairs to score, one per choice, in choice order, after the few-shot `prefix`."""
    if self.continuation is None:
      return [(prefix + self.context, target_delimiter + c) for c in self.choices]
    return [(prefix + self.context + c, target_delimiter + self.continuation) for c in self.choices]

  def example(self) -> Tuple[str, str]:
    """(text, target) of the item shown solved: the context and the gold choice, or for partial scoring the gold
    choice (the filled-in sentence start) and the continuation."""
    if self.continuation is None:
      return self.context, self.choices[self.gold]
    return self.context + self.choices[self.gold], self.continuation


@dataclasses.dataclass(frozen=True)
class Lambada:
  """One LAMBADA item: predict the last word (`continuation`, without its leading space) after `context`.

  The harness's target is " " + the word itself (`doc_to_target`), and its `loglikelihood` requests use no
  `target_delimiter`; a few-shot example therefore reads `context + " " + " " + word`, as the harness writes it.
  """
  id: str
  context: str
  continuation: str

  def requests(self, prefix: str = "", target_delimiter: str = TARGET_DELIMITER) -> List[Tuple[str, str]]:
    del target_delimiter  # not used by the harness's loglikelihood requests
    return [(prefix + self.context, " " + self.continuation)]

  def example(self) -> Tuple[str, str]:
    return self.context, " " + self.continuation


@dataclasses.dataclass(frozen=True)
class Generation:
  """One generative item (`generate_until`): greedy continuation of `context`, scored against `target` (the
  harness's `doc_to_target`, e.g. GSM8K's whole worked answer, which the task's filters reduce to its number)."""
  id: str
  context: str
  target: str

  def prompt(self, prefix: str = "") -> str:
    return prefix + self.context

  def example(self) -> Tuple[str, str]:
    return self.context, self.target


def _where(path: str, item: Any) -> str:
  return f"{path}, {item}"


def _check_file(path: str) -> None:
  if not os.path.isfile(path):
    raise ReaderError(f"benchmark file not found: {path}")


def _jsonl(path: str) -> Iterator[Tuple[int, dict]]:
  """(line number, record) for each non-blank line of a JSONL file."""
  _check_file(path)
  yield from sources.jsonl_records(path, error=ReaderError)


def field(record: dict, key: str, where: str, kind: type = str):
  """`record[key]`, checked to be a `kind`; a `ReaderError` naming `where` (file and item) and the key otherwise."""
  if key not in record:
    raise ReaderError(f"{where}: missing field {key!r} (fields: {sorted(record)})")
  value = record[key]
  if not isinstance(value, kind):
    raise ReaderError(f"{where}: field {key!r} should be {kind.__name__}, got {type(value).__name__}: {value!r}")
  return value


def _gold(gold: int, num_choices: int, where: str) -> int:
  if not 0 <= gold < num_choices:
    raise ReaderError(f"{where}: gold index {gold} out of range for {num_choices} choices")
  return gold


# --- HellaSwag ---------------------------------------------------------------------------------------------------


def hellaswag_preprocess(text: str) -> str:
  """The harness's `preprocess`: strip, " [title]" -> ". ", drop every "[...]" (WikiHow artefacts), "  " -> " "."""
  text = text.strip()
  text = text.replace(" [title]", ". ")
  text = re.sub("\\[.*?\\]", "", text)
  return text.replace("  ", " ")


_SENTENCE_END = re.compile(r"(?<=[.!?]) ")


def _capitalize_ctx_b(ctx: str) -> str:
  """`ctx_a + " " + ctx_b.capitalize()` from the joined `ctx_a + " " + ctx_b` the text file stores.

  HellaSwag's ActivityNet items split the last sentence: `ctx_b` is its unfinished start ("the lady"), which the
  harness capitalizes. The file keeps only the joined `ctx`, so `ctx_b` is taken as the text after the last
  sentence end when the context does not itself end a sentence (WikiHow items end one and have an empty `ctx_b`).
  """
  if not ctx or ctx[-1] in ".!?":
    return ctx
  parts = _SENTENCE_END.split(ctx)
  head, tail = " ".join(parts[:-1]), parts[-1]
  return (head + " " if head else "") + tail.capitalize()


def read_hellaswag(path: str) -> List[MultipleChoice]:
  """HellaSwag validation as the 6-lines-per-item text file (bz2 or plain) of klosax/hellaswag_text_data.

  Lines: `activity_label: ctx`, the gold index, 4 endings. The file was made from `hellaswag_val.jsonl` with its
  own bracket clean-up and without the harness's capitalization of `ctx_b`; both are redone here
  (`_capitalize_ctx_b`, `hellaswag_preprocess`, which is idempotent on the file's clean-up), giving the harness's
  `query` = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()) and choices = preprocess(ending).
  """
  _check_file(path)
  opener = bz2.open if path.endswith(".bz2") else open
  with opener(path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  if len(lines) % 6:
    raise ReaderError(f"{path}: {len(lines)} lines is not a multiple of 6 (query, gold, 4 endings per item)")
  items = []
  for i in range(0, len(lines), 6):
    where = _where(path, f"item {i // 6} (line {i + 1})")
    query, label, endings = lines[i], lines[i + 1], lines[i + 2:i + 6]
    if ": " not in query:
      raise ReaderError(f"{where}: expected 'activity_label: context', got {query!r}")
    if not label.strip().isdigit():
      raise ReaderError(f"{where}: expected the gold index on line {i + 2}, got {label!r}")
    activity, ctx = query.split(": ", 1)
    items.append(MultipleChoice(
        id=f"hellaswag/{i // 6}", context=hellaswag_preprocess(activity + ": " + _capitalize_ctx_b(ctx)),
        choices=tuple(hellaswag_preprocess(e) for e in endings), gold=_gold(int(label), 4, where)))
  return items


# --- ARC, OpenBookQA, PIQA, BoolQ, SIQA, COPA, SciQ, StoryCloze -----------------------------------------------


def read_arc(path: str) -> List[MultipleChoice]:
  """AI2 ARC jsonl: "Question: {stem}\\nAnswer:", choices " {text}", gold = labels.index(answerKey).

  Labels are "A".."E" or "1".."5" as in the original files; 3- and 5-choice items are kept.
  """
  items = []
  for lineno, r in _jsonl(path):
    where = _where(path, f"line {lineno}")
    q = field(r, "question", where, dict)
    stem, choices = field(q, "stem", where), field(q, "choices", where, list)
    texts = tuple(field(c, "text", where) for c in choices)
    labels = [str(field(c, "label", where)) for c in choices]
    key = str(field(r, "answerKey", where)).strip()
    if key not in labels:
      raise ReaderError(f"{where}: answerKey {key!r} is not one of the labels {labels}")
    items.append(MultipleChoice(id=str(r.get("id", f"line{lineno}")), context=f"Question: {stem}\nAnswer:",
                                choices=texts, gold=labels.index(key)))
  return items


_OBQA_CHOICE = re.compile(r"\(([A-D])\) ")


def read_openbookqa(path: str) -> List[MultipleChoice]:
  """OpenBookQA tsv (ID, Question Stem, Choices "(A) .. (D) ..", Complete Question, Answer Key).

  Harness: context = question stem, choices " {text}".
  """
  _check_file(path)
  items = []
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  header = ["ID", "Question Stem", "Choices", "Complete Question", "Answer Key"]
  if not rows or rows[0] != header:
    raise ReaderError(f"{path}: expected the header {header}, got {rows[0] if rows else 'an empty file'}")
  for lineno, row in enumerate(rows[1:], 2):
    if not row:
      continue
    where = _where(path, f"line {lineno}")
    if len(row) != 5:
      raise ReaderError(f"{where}: expected 5 tab-separated fields, got {len(row)}")
    parts = _OBQA_CHOICE.split(row[2])
    labels, texts = parts[1::2], tuple(t.strip() for t in parts[2::2])
    if parts[0].strip() or labels != ["A", "B", "C", "D"]:
      raise ReaderError(f"{where}: expected choices '(A) .. (B) .. (C) .. (D) ..', got {row[2]!r}")
    key = row[4].strip()
    if key not in labels:
      raise ReaderError(f"{where}: answer key {key!r} is not one of {labels}")
    items.append(MultipleChoice(id=row[0], context=row[1], choices=texts, gold=labels.index(key)))
  return items


def _labels_path(path: str, labels_path: Optional[str]) -> str:
  """`labels_path`, by default `<path minus .jsonl>-labels.lst`, as PIQA and SIQA ship their labels."""
  return labels_path or os.path.splitext(path)[0] + "-labels.lst"


def _labels_file(labels_path: str) -> List[str]:
  """The non-blank lines of a labels file."""
  _check_file(labels_path)
  with open(labels_path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def read_piqa(path: str, labels_path: Optional[str] = None) -> List[MultipleChoice]:
  """PIQA jsonl (`goal`, `sol1`, `sol2`) + labels file (one 0/1 per line, default `<path minus .jsonl>-labels.lst`).

  Harness: "Question: {goal}\\nAnswer:", choices " {sol1}", " {sol2}".
  """
  labels_path = _labels_path(path, labels_path)
  labels = _labels_file(labels_path)
  records = list(_jsonl(path))
  if len(labels) != len(records):
    raise ReaderError(f"{labels_path}: {len(labels)} labels for {len(records)} items in {path}")
  items = []
  for n, ((lineno, r), label) in enumerate(zip(records, labels)):
    where = _where(path, f"line {lineno}")
    if label not in ("0", "1"):
      raise ReaderError(f"{_where(labels_path, f'line {n + 1}')}: expected 0 or 1, got {label!r}")
    items.append(MultipleChoice(
        id=f"piqa/{n}", context=f"Question: {field(r, 'goal', where)}\nAnswer:",
        choices=(field(r, "sol1", where), field(r, "sol2", where)), gold=int(label)))
  return items


def read_boolq(path: str) -> List[MultipleChoice]:
  """BoolQ (SuperGLUE) jsonl: "{passage}\\nQuestion: {question}?\\nAnswer:", choices " no", " yes"."""
  items = []
  for lineno, r in _jsonl(path):
    where = _where(path, f"line {lineno}")
    label = r.get("label")
    if isinstance(label, str) and label.lower() in ("true", "false"):
      label = label.lower() == "true"
    if not isinstance(label, (bool, int)) or int(label) not in (0, 1):
      raise ReaderError(f"{where}: field 'label' should be a boolean, got {label!r}")
    items.append(MultipleChoice(
        id=str(r.get("idx", f"boolq/{lineno - 1}")),
        context=f"{field(r, 'passage', where)}\nQuestion: {field(r, 'question', where)}?\nAnswer:",
        choices=("no", "yes"), gold=int(label)))
  return items


def read_siqa(path: str, labels_path: Optional[str] = None) -> List[MultipleChoice]:
  """Social IQa jsonl (`context`, `question`, `answerA`, `answerB`, `answerC`), gold from each record's `label`
  ("1".."3", the Hugging Face export) or else from the labels file the original ships beside it (`dev.jsonl` +
  `dev-labels.lst`; default `<path minus .jsonl>-labels.lst`).

  Harness (`social_iqa`): "Q: {context} {question}\\nA:", choices " {answerA}", " {answerB}", " {answerC}",
  gold = label - 1.
  """
  records = list(_jsonl(path))
  labels = [r.get("label") for _, r in records]
  if any(label is None for label in labels):
    labels_path = _labels_path(path, labels_path)
    labels = _labels_file(labels_path)
    if len(labels) != len(records):
      raise ReaderError(f"{labels_path}: {len(labels)} labels for {len(records)} items in {path}")
  items = []
  for n, ((lineno, r), label) in enumerate(zip(records, labels)):
    where = _where(path, f"line {lineno}")
    if str(label).strip() not in ("1", "2", "3"):
      raise ReaderError(f"{where}: label should be 1, 2 or 3, got {label!r}")
    items.append(MultipleChoice(
        id=f"siqa/{n}", context=f"Q: {field(r, 'context', where)} {field(r, 'question', where)}\nA:",
        choices=tuple(field(r, k, where) for k in ("answerA", "answerB", "answerC")), gold=int(label) - 1))
  return items


_COPA_CONNECTORS = {"cause": "because", "effect": "therefore"}


def read_copa(path: str) -> List[MultipleChoice]:
  """COPA as SuperGLUE's jsonl (`premise`, `choice1`, `choice2`, `question` "cause"/"effect", `label` 0/1, `idx`).

  Harness (`copa`): context = the premise without its final period + " because" (cause) or " therefore" (effect);
  choices " " + each choice with its first letter lower-cased. With the target delimiter the continuation starts
  with two spaces, as the harness scores it.
  """
  items = []
  for lineno, r in _jsonl(path):
    where = _where(path, f"line {lineno}")
    question = field(r, "question", where)
    if question not in _COPA_CONNECTORS:
      raise ReaderError(f"{where}: 'question' should be 'cause' or 'effect', got {question!r}")
    choices = tuple(" " + c[:1].lower() + c[1:] for c in (field(r, "choice1", where), field(r, "choice2", where)))
    items.append(MultipleChoice(
        id=f"copa/{r.get('idx', lineno - 1)}",
        context=field(r, "premise", where).strip()[:-1] + " " + _COPA_CONNECTORS[question], choices=choices,
        gold=_gold(field(r, "label", where, int), 2, where)))
  return items


def read_records(path: str) -> Iterator[Tuple[str, dict]]:
  """(where, record) for each record of a JSON list file (SciQ's public train/valid/test.json) or of a JSONL file
  (gzip too); `where` names the file and the record ("path, record 3" / "path, line 4") for `field`'s errors."""
  _check_file(path)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    head = f.read(4096).lstrip()
  if head.startswith("["):
    with opener(path, "rt", encoding="utf-8") as f:
      try:
        records = json.load(f)
      except json.JSONDecodeError as e:
        raise ReaderError(f"{path}: invalid JSON ({e})") from None
    for n, r in enumerate(records):
      if not isinstance(r, dict):
        raise ReaderError(f"{_where(path, f'record {n}')}: expected a JSON object, got {type(r).__name__}")
      yield _where(path, f"record {n}"), r
  else:
    for lineno, r in _jsonl(path):
      yield _where(path, f"line {lineno}"), r


def read_sciq(path: str) -> List[MultipleChoice]:
  """SciQ (allenai, `question`, `distractor1..3`, `correct_answer`, `support`), as a JSON list or JSONL.

  Harness: "{support.lstrip()}\\nQuestion: {question}\\nAnswer:", choices [distractor1, distractor2, distractor3,
  correct_answer], gold = 3.
  """
  items = []
  for n, (where, r) in enumerate(read_records(path)):
    choices = tuple(field(r, k, where) for k in ("distractor1", "distractor2", "distractor3", "correct_answer"))
    context = f"{field(r, 'support', where).lstrip()}\nQuestion: {field(r, 'question', where)}\nAnswer:"
    items.append(MultipleChoice(id=f"sciq/{n}", context=context, choices=choices, gold=3))
  return items


# Column names of the ROCStories cloze csv files, and of the HF `story_cloze` dataset (either is accepted).
_STORYCLOZE_COLUMNS = (
    (("InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4"),
     ("RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2"), "AnswerRightEnding", "InputStoryid"),
    (("input_sentence_1", "input_sentence_2", "input_sentence_3", "input_sentence_4"),
     ("sentence_quiz1", "sentence_quiz2"), "answer_right_ending", "story_id"),
)


def read_storycloze(path: str) -> List[MultipleChoice]:
  """StoryCloze csv (cloze_test_val/test__spring2016: InputStoryid, InputSentence1..4, RandomFifthSentenceQuiz1/2,
  AnswerRightEnding in {1, 2}).

  Harness: context = the 4 sentences joined by " ", choices the 2 endings, gold = AnswerRightEnding - 1.
  """
  _check_file(path)
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    fields = reader.fieldnames or []
    for sentences, endings, answer, story_id in _STORYCLOZE_COLUMNS:
      if set(sentences + endings + (answer,)) <= set(fields):
        break
    else:
      raise ReaderError(f"{path}: expected StoryCloze columns {_STORYCLOZE_COLUMNS[0][0] + _STORYCLOZE_COLUMNS[0][1]}"
                        f" + {_STORYCLOZE_COLUMNS[0][2]!r}, got {fields}")
    items = []
    for lineno, row in enumerate(reader, 2):
      where = _where(path, f"line {lineno}")
      if any(row.get(k) is None for k in sentences + endings + (answer,)):
        raise ReaderError(f"{where}: too few fields")
      if row[answer].strip() not in ("1", "2"):
        raise ReaderError(f"{where}: {answer} should be 1 or 2, got {row[answer]!r}")
      items.append(MultipleChoice(
          id=row.get(story_id) or f"storycloze/{lineno - 2}", context=" ".join(row[k] for k in sentences),
          choices=tuple(row[k] for k in endings), gold=int(row[answer]) - 1))
  return items


# --- WinoGrande, LogiQA, LAMBADA ---------------------------------------------------------------------------------


def read_winogrande(path: str) -> List[MultipleChoice]:
  """WinoGrande dev jsonl (`context_options` (2), `continuation`, `gold`), partial scoring.

  Harness: choices = sentence[:blank] + option (the contexts), continuation " " + sentence[blank+1:].strip().
  """
  items = []
  for lineno, r in _jsonl(path):
    where = _where(path, f"line {lineno}")
    options = field(r, "context_options", where, list)
    if len(options) != 2 or not all(isinstance(o, str) for o in options):
      raise ReaderError(f"{where}: 'context_options' should be 2 strings, got {options!r}")
    items.append(MultipleChoice(
        id=f"winogrande/{lineno - 1}", context="", choices=tuple(options),
        gold=_gold(field(r, "gold", where, int), 2, where),
        continuation=field(r, "continuation", where).strip()))
  return items


def _logiqa_normalize(text: str) -> str:
  """The EleutherAI/logiqa loader's clean-up: `text.replace(".", ". ").strip()` (re-spaces run-on sentences)."""
  return text.replace(".", ". ").strip()


def read_logiqa(path: str) -> List[MultipleChoice]:
  """LogiQA (English) text: blank-line separated records of answer letter, passage, question, 4 options "A.".."D.".

  Harness: "Passage: {passage}\\nQuestion: {question}\\nChoices:\\nA. {o1}\\nB. ..\\nD. {o4}\\nAnswer:", choices
  " {option}", every field passed through `_logiqa_normalize`. Options are taken in file order without their first
  two characters ("A."), as the harness does: the file has a few options labelled out of order ("C." on line B).
  """
  _check_file(path)
  with open(path, encoding="utf-8") as f:
    records = f.read().strip().split("\n\n")
  items = []
  for n, record in enumerate(records):
    where = _where(path, f"record {n} (starting '{record[:40]}')")
    lines = record.split("\n")
    if len(lines) != 7:
      raise ReaderError(f"{where}: expected 7 lines (answer, passage, question, 4 options), got {len(lines)}")
    label = lines[0].strip().lower()
    if label not in ("a", "b", "c", "d"):
      raise ReaderError(f"{where}: expected an answer letter a-d, got {lines[0]!r}")
    passage, question = _logiqa_normalize(lines[1]), _logiqa_normalize(lines[2])
    options = tuple(_logiqa_normalize(o[2:]) for o in lines[3:])
    prompt = f"Passage: {passage}\nQuestion: {question}\nChoices:\n"
    prompt += "".join(f"{letter}. {option}\n" for letter, option in zip("ABCD", options)) + "Answer:"
    items.append(MultipleChoice(id=f"logiqa/{n}", context=prompt, choices=options, gold="abcd".index(label)))
  return items


def read_lambada(path: str) -> List[Lambada]:
  """LAMBADA (OpenAI) jsonl (`context`, `continuation` = the last word).

  The harness splits the raw `text` on " ": context = all but the last piece, target = " " + the last piece. The
  passage is rebuilt (`context + " " + continuation`, or without the space where the file kept the whitespace
  before the word, as "\\n\\nrecorder") and split the same way.
  """
  items = []
  for lineno, r in _jsonl(path):
    where = _where(path, f"line {lineno}")
    context, word = field(r, "context", where), field(r, "continuation", where)
    if not word.strip():
      raise ReaderError(f"{where}: empty continuation")
    text = context + word if word[:1].isspace() else context + " " + word
    pieces = text.split(" ")
    items.append(Lambada(id=f"lambada/{lineno - 1}", context=" ".join(pieces[:-1]), continuation=pieces[-1]))
  return items


# --- GSM8K (generative) ------------------------------------------------------------------------------------------


def read_gsm8k(path: str) -> List[Generation]:
  """GSM8K jsonl (`question`, `answer` = the worked solution ending "#### <number>").

  Harness (`gsm8k`): prompt "Question: {question}\\nAnswer:", target the whole answer (its few-shot examples show
  the worked solutions; the exact-match filters reduce prediction and target to the final number).
  """
  items = []
  for lineno, r in _jsonl(path):
    where = _where(path, f"line {lineno}")
    items.append(Generation(id=f"gsm8k/{lineno - 1}", context=f"Question: {field(r, 'question', where)}\nAnswer:",
                            target=field(r, "answer", where)))
  return items
