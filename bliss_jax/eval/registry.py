"""The benchmark registry: a task name -> its `TaskSpec` (files, reader, prompt conventions, metrics, output type).

The built-in tasks are registered below. A task of one's own is one call, from any module imported before evaluating
(scripts/evaluate.py --tasks_module=my_tasks; a gin file's `import my_tasks` for scripts/compare.py):

  from bliss_jax.eval import readers, registry

  def read_my_qa(path):  # the files -> items whose prompts are already formatted
    return [readers.MultipleChoice(id=where, context=f"Question: {readers.field(r, 'q', where)}\\nAnswer:",
                                   choices=tuple(r["options"]), gold=r["answer"])
            for where, r in readers.read_records(path)]

  registry.register_task("my_qa", registry.TaskSpec(files=("my_qa_test.jsonl",), reader=read_my_qa,
                                                    metrics=("acc", "acc_norm"), split="test"))

Files are relative to the data directory the harness is given; `files={"my_qa": path}` (evaluate.py's --task_file)
points a task at files elsewhere, and `files={"my_qa:train": path}` names the split few-shot examples come from.
"""
import dataclasses
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from bliss_jax.eval import metrics, readers

# The metrics each output type computes (a task reports some of them), and whether higher is better.
OUTPUT_METRICS = {"multiple_choice": ("acc", "acc_norm"), "loglikelihood": ("perplexity", "acc"),
                  "generate_until": ("exact_match",)}
HIGHER_IS_BETTER = {"acc": True, "acc_norm": True, "perplexity": False, "exact_match": True}
NO_FILTER = (("none", None),)  # the harness's filter name for a response taken as it is

Files = Optional[Mapping[str, Union[str, Sequence[str]]]]


@dataclasses.dataclass(frozen=True)
class GenerationSpec:
  """How a `generate_until` task generates and scores, as the harness's `generation_kwargs`, `filter_list` and
  `exact_match` options.

  Attributes:
    until: stop sequences; the response is cut before the first of them (and at the end-of-sequence token).
    max_gen_toks: most tokens generated per item.
    filters: (name, function response -> extracted answer, or None for the response itself); each filter is
      reported as its own `exact_match,<name>`.
    regexes_to_ignore / ignore_case / ignore_punctuation: `metrics.exact_match`'s normalisation.
  """
  until: Tuple[str, ...] = ("\n\n",)
  max_gen_toks: int = 256
  filters: Tuple[Tuple[str, Optional[Callable[[str], str]]], ...] = NO_FILTER
  regexes_to_ignore: Tuple[str, ...] = ()
  ignore_case: bool = False
  ignore_punctuation: bool = False


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A benchmark.

  Attributes:
    files: the evaluated split's files, relative to the data directory (absolute paths are kept as they are).
    reader: `reader(*paths) -> items` (`readers.MultipleChoice`, `readers.Lambada` or `readers.Generation`).
    metrics: what is reported, some of `OUTPUT_METRICS[output_type]`.
    version: the harness task's version.
    split: the evaluated split's name.
    output_type: "multiple_choice", "loglikelihood" (one scored continuation per item, LAMBADA) or
      "generate_until" (greedy generation, `generation`).
    target_delimiter / fewshot_delimiter / description: the harness's prompt joints: a few-shot context is
      description + Σ (text + target_delimiter + target + fewshot_delimiter) over the examples, then the item.
    num_fewshot: the number of examples when the caller does not say.
    fewshot_split / fewshot_files: the split few-shot examples are drawn from, read with `reader`; none: the evaluated
      split itself, each item's own example excluded.
    generation: for "generate_until" tasks.
  """
  files: Tuple[str, ...]
  reader: Callable[..., list]
  metrics: Tuple[str, ...]
  version: float = 1.0
  split: str = "test"
  output_type: str = "multiple_choice"
  target_delimiter: str = readers.TARGET_DELIMITER
  fewshot_delimiter: str = "\n\n"
  description: str = ""
  num_fewshot: int = 0
  fewshot_split: Optional[str] = None
  fewshot_files: Tuple[str, ...] = ()
  generation: Optional[GenerationSpec] = None

  def __post_init__(self):
    for name in ("files", "metrics", "fewshot_files"):
      if isinstance(getattr(self, name), str):
        object.__setattr__(self, name, (getattr(self, name),))
    if self.output_type not in OUTPUT_METRICS:
      raise ValueError(f"output_type {self.output_type!r}: expected one of {tuple(OUTPUT_METRICS)}")
    unknown = [m for m in self.metrics if m not in OUTPUT_METRICS[self.output_type]]
    if unknown or not self.metrics:
      raise ValueError(f"metrics {self.metrics!r}: a {self.output_type} task reports some of "
                       f"{OUTPUT_METRICS[self.output_type]}")
    if (self.generation is not None) != (self.output_type == "generate_until"):
      raise ValueError("a generate_until task needs a GenerationSpec, and only such a task takes one")
    if bool(self.fewshot_split) != bool(self.fewshot_files):
      raise ValueError(f"fewshot_split={self.fewshot_split!r} and fewshot_files={self.fewshot_files!r}: give both "
                       "or neither")
    if self.num_fewshot < 0:
      raise ValueError(f"num_fewshot={self.num_fewshot} must be >= 0")


TASKS: Dict[str, TaskSpec] = {}


def register_task(name: str, spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
  """Make `spec` evaluable as `name`; a name already taken is refused unless `replace`."""
  if not isinstance(spec, TaskSpec):
    raise TypeError(f"task {name!r}: expected a TaskSpec, got {type(spec).__name__}")
  if not name or ":" in name or "=" in name or "," in name:
    raise ValueError(f"task name {name!r}: give a non-empty name without ':', '=' or ','")
  if name in TASKS and not replace:
    raise ValueError(f"task {name!r} is already registered (register_task(..., replace=True) to redefine it)")
  TASKS[name] = spec
  return spec


def task_spec(name: str) -> TaskSpec:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (register your own with "
                     "bliss_jax.eval.registry.register_task)")
  return TASKS[name]


def _paths(override, default: Sequence[str], data_dir: str) -> List[str]:
  if override is not None:
    return [os.path.abspath(override)] if isinstance(override, str) else [os.path.abspath(p) for p in override]
  return [os.path.abspath(os.path.join(data_dir, f)) for f in default]


def task_paths(name: str, data_dir: str, files: Files = None) -> List[str]:
  """Absolute paths of task `name`'s evaluated files: `files[name]` (a path or list of paths) if given, else under
  `data_dir`."""
  return _paths((files or {}).get(name), task_spec(name).files, data_dir)


def fewshot_source(name: str, data_dir: str, files: Files = None) -> Optional[Tuple[str, List[str]]]:
  """(split, absolute paths) few-shot examples of task `name` are drawn from: `files["name:split"]` if given, else
  the spec's `fewshot_split`; None: the evaluated split itself."""
  spec = task_spec(name)
  named = [k.split(":", 1)[1] for k in (files or {}) if k.startswith(name + ":")]
  if len(named) > 1:
    raise ValueError(f"task {name!r}: few-shot files for several splits {named}; give one")
  if named:
    return named[0], _paths(files[f"{name}:{named[0]}"], (), data_dir)
  if spec.fewshot_split:
    return spec.fewshot_split, _paths(None, spec.fewshot_files, data_dir)
  return None


def load_task(name: str, data_dir: str, files: Files = None) -> list:
  """The items of task `name`'s evaluated split (see `readers`)."""
  return task_spec(name).reader(*task_paths(name, data_dir, files))


# --- The built-in tasks --------------------------------------------------------------------------------------------

_MC = ("acc", "acc_norm")
for _name, _spec in {
    "hellaswag": TaskSpec(("hellaswag_val_full.txt.bz2",), readers.read_hellaswag, _MC, 1.0, "validation"),
    "arc_easy": TaskSpec(("ARC-Easy-Test.jsonl",), readers.read_arc, _MC, 1.0, "test"),
    "arc_challenge": TaskSpec(("ARC-Challenge-Test.jsonl",), readers.read_arc, _MC, 1.0, "test"),
    "piqa": TaskSpec(("piqa_valid.jsonl", "piqa_valid-labels.lst"), readers.read_piqa, _MC, 1.0, "validation"),
    "winogrande": TaskSpec(("winogrande_dev.jsonl",), readers.read_winogrande, ("acc",), 1.0, "validation"),
    "boolq": TaskSpec(("boolq_val.jsonl",), readers.read_boolq, ("acc",), 2.0, "validation"),
    "openbookqa": TaskSpec(("openbookqa_test.tsv",), readers.read_openbookqa, _MC, 1.0, "test"),
    "logiqa": TaskSpec(("logiqa_test.txt",), readers.read_logiqa, _MC, 1.0, "test"),
    "lambada_openai": TaskSpec(("lambada_openai.jsonl",), readers.read_lambada, ("perplexity", "acc"), 1.0, "test",
                               "loglikelihood"),
    # Not in ../shared/data: Social IQa's dev.jsonl (+ dev-labels.lst beside it, or a `label` field), SuperGLUE
    # COPA's val.jsonl, SciQ's public test.json (or a JSONL of the same records) and StoryCloze 2016's val csv.
    "social_iqa": TaskSpec(("siqa_dev.jsonl",), readers.read_siqa, ("acc",), 0.0, "validation"),
    "copa": TaskSpec(("copa_val.jsonl",), readers.read_copa, ("acc",), 1.0, "validation"),
    "sciq": TaskSpec(("sciq_test.json",), readers.read_sciq, _MC, 1.0, "test"),
    "storycloze": TaskSpec(("cloze_test_val__spring2016.csv",), readers.read_storycloze, ("acc",), 1.0,
                           "validation"),
    # GSM8K (generate_until, 5-shot from the train split): test.jsonl of openai/grade-school-math, not in the shared
    # data; its train split is the shared corpus's gsm8k_train.jsonl, beside the eval/ directory.
    "gsm8k": TaskSpec(
        ("gsm8k_test.jsonl",), readers.read_gsm8k, ("exact_match",), 3.0, "test", "generate_until", num_fewshot=5,
        fewshot_split="train", fewshot_files=("../corpus/gsm8k_train.jsonl",),
        generation=GenerationSpec(
            until=("Question:", "</s>", "<|im_end|>"), max_gen_toks=256,
            filters=(("strict-match", metrics.regex_extract(r"#### (\-?[0-9\.\,]+)")),
                     ("flexible-extract", metrics.regex_extract(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1))),
            regexes_to_ignore=(",", "\\$", "(?s).*#### ", "\\.$"), ignore_case=True)),
}.items():
  register_task(_name, _spec)
