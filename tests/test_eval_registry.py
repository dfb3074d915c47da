"""Tests for bliss_jax.eval.registry: registering tasks of one's own, the checks on a TaskSpec, files and few-shot
sources."""
import os

import pytest

from bliss_jax.eval import readers, registry


@pytest.fixture
def scratch_task():
  """Registers nothing itself; removes "scratch_qa" from the registry afterwards."""
  yield "scratch_qa"
  registry.TASKS.pop("scratch_qa", None)


def test_register_task_adds_and_refuses_a_taken_name(scratch_task):
  spec = registry.TaskSpec(files=("qa.jsonl",), reader=readers.read_arc, metrics=("acc",))
  assert registry.register_task(scratch_task, spec) is spec and registry.task_spec(scratch_task) is spec
  with pytest.raises(ValueError, match="already registered"):
    registry.register_task(scratch_task, spec)
  other = registry.TaskSpec(files="other.jsonl", reader=readers.read_arc, metrics="acc_norm")
  registry.register_task(scratch_task, other, replace=True)
  assert registry.task_spec(scratch_task).files == ("other.jsonl",)  # a lone string is one file
  assert registry.task_spec(scratch_task).metrics == ("acc_norm",)
  with pytest.raises(ValueError, match="without ':'"):
    registry.register_task("qa:train", spec)
  with pytest.raises(TypeError, match="expected a TaskSpec"):
    registry.register_task(scratch_task, {"files": ()})
  with pytest.raises(ValueError, match="unknown task 'nowhere'.*register_task"):
    registry.task_spec("nowhere")


@pytest.mark.parametrize("kwargs, message", [
    (dict(metrics=("exact_match",)), "a multiple_choice task reports some of"),
    (dict(metrics=()), "reports some of"),
    (dict(output_type="rolling"), "output_type 'rolling'"),
    (dict(output_type="generate_until", metrics=("exact_match",)), "needs a GenerationSpec"),
    (dict(generation=registry.GenerationSpec()), "needs a GenerationSpec, and only such a task"),
    (dict(fewshot_split="train"), "give both or neither"),
    (dict(num_fewshot=-1), "num_fewshot=-1"),
])
def test_task_spec_checks(kwargs, message):
  with pytest.raises(ValueError, match=message):
    registry.TaskSpec(**{"files": ("x",), "reader": readers.read_arc, "metrics": ("acc",), **kwargs})


def test_paths_and_fewshot_sources(scratch_task, tmp_path):
  data = str(tmp_path)
  registry.register_task(scratch_task, registry.TaskSpec(files=("a.jsonl", "/abs/b.lst"), reader=readers.read_arc,
                                                         metrics=("acc",)))
  assert registry.task_paths(scratch_task, data) == [os.path.join(data, "a.jsonl"), "/abs/b.lst"]
  assert registry.task_paths(scratch_task, data, {scratch_task: "x.jsonl"}) == [os.path.abspath("x.jsonl")]
  assert registry.fewshot_source(scratch_task, data) is None  # the evaluated split itself
  assert registry.fewshot_source(scratch_task, data, {f"{scratch_task}:train": ["/t/1", "/t/2"]}) == (
      "train", ["/t/1", "/t/2"])
  with pytest.raises(ValueError, match="several splits"):
    registry.fewshot_source(scratch_task, data, {f"{scratch_task}:train": "/t", f"{scratch_task}:dev": "/d"})
  registry.register_task(scratch_task, registry.TaskSpec(files=("a.jsonl",), reader=readers.read_arc,
                                                         metrics=("acc",), fewshot_split="train",
                                                         fewshot_files=("../corpus/a_train.jsonl",)), replace=True)
  assert registry.fewshot_source(scratch_task, data) == (
      "train", [os.path.abspath(os.path.join(data, "../corpus/a_train.jsonl"))])


def test_builtin_tasks():
  assert {"hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq", "openbookqa", "logiqa",
          "lambada_openai", "social_iqa", "copa", "sciq", "storycloze"} <= set(registry.TASKS)
  assert registry.task_spec("lambada_openai").output_type == "loglikelihood"
