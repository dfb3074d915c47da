"""Tests for bliss_jax.eval.fewshot and few-shot runs of the harness: prompts built by hand as lm-evaluation-harness
builds them (description + Σ (text + target_delimiter + target + fewshot_delimiter) + text, examples drawn with one
random.Random(seed) per task, item by item)."""
import json
import random

import pytest

from bliss_jax.eval import fewshot, harness, readers, registry


def _mc(i, question, choices, gold=0):
  return readers.MultipleChoice(f"q{i}", f"Question: {question}\nAnswer:", tuple(choices), gold)


TRAIN = [_mc(0, "What do plants need?", ["light", "noise"]),
         _mc(1, "What is ice?", ["hot air", "frozen water"], 1),
         _mc(2, "What is 2 + 2?", ["4", "5"]),
         _mc(3, "Which is a planet?", ["Mars", "the Moon"])]
EVAL = [_mc(10, "What melts snow?", ["heat", "cold"]), _mc(11, "What do bees make?", ["wax", "honey"], 1)]


def test_the_draws_are_python_random_sample_with_one_generator_per_task():
  # What the hand-built prompts below rely on: with seed 1234 the first item draws train items 3 and 0, the second
  # (the same generator, advanced) 0 and 3; from a pool of 3 with k + 1 = 2 draws: [1, 0], [0, 2], [2, 0].
  rnd = random.Random(1234)
  assert [rnd.sample(range(4), 2) for _ in range(2)] == [[3, 0], [0, 3]]
  rnd = random.Random(1234)
  assert [rnd.sample(range(3), 2) for _ in range(3)] == [[1, 0], [0, 2], [2, 0]]


def test_two_shot_from_another_split_by_hand():
  prefixes = fewshot.fewshot_prefixes(EVAL, TRAIN, 2, same_split=False, seed=1234,
                                      description="Answer the questions.\n\n")
  assert prefixes == [
      "Answer the questions.\n\n"
      "Question: Which is a planet?\nAnswer: Mars\n\n"
      "Question: What do plants need?\nAnswer: light\n\n",
      "Answer the questions.\n\n"
      "Question: What do plants need?\nAnswer: light\n\n"
      "Question: Which is a planet?\nAnswer: Mars\n\n"]
  assert EVAL[1].requests(prefixes[1]) == [
      ("Answer the questions.\n\nQuestion: What do plants need?\nAnswer: light\n\nQuestion: Which is a planet?\n"
       "Answer: Mars\n\nQuestion: What do bees make?\nAnswer:", " wax"),
      ("Answer the questions.\n\nQuestion: What do plants need?\nAnswer: light\n\nQuestion: Which is a planet?\n"
       "Answer: Mars\n\nQuestion: What do bees make?\nAnswer:", " honey")]
  # Other delimiters are used where the harness uses them; zero-shot is the description alone.
  assert fewshot.fewshot_prefixes(EVAL[:1], TRAIN, 1, same_split=False, seed=1234, target_delimiter="->",
                                  fewshot_delimiter="\n###\n") == ["Question: Which is a planet?\nAnswer:->Mars\n###\n"]
  assert fewshot.fewshot_prefixes(EVAL, TRAIN, 0, same_split=False, description="D: ") == ["D: ", "D: "]


def test_same_split_draws_one_more_and_leaves_the_item_out():
  items = TRAIN[:3]
  prefixes = fewshot.fewshot_prefixes(items, items, 1, same_split=True, seed=1234)
  # draws [1, 0] for item 0 -> item 1; [0, 2] for item 1 -> item 0; [2, 0] for item 2 -> item 0 (itself left out)
  assert prefixes == ["Question: What is ice?\nAnswer: frozen water\n\n",
                      "Question: What do plants need?\nAnswer: light\n\n",
                      "Question: What do plants need?\nAnswer: light\n\n"]
  with pytest.raises(ValueError, match="3-shot needs 4 examples to draw from, the few-shot split has 3"):
    fewshot.fewshot_prefixes(items, items, 3, same_split=True)


def test_partial_scoring_and_lambada_examples_by_hand():
  wg = [readers.MultipleChoice(f"w{i}", "", (f"Ann told Bo{i} she", f"Bo{i} told Ann he"), i % 2,
                               continuation=f"would come at {i}.") for i in range(3)]
  prefixes = fewshot.fewshot_prefixes(wg, wg, 1, same_split=True, seed=1234)
  assert prefixes[0] == "Bo1 told Ann he would come at 1.\n\n"  # the gold option's sentence, then its ending
  assert wg[0].requests(prefixes[0]) == [("Bo1 told Ann he would come at 1.\n\nAnn told Bo0 she", " would come at 0."),
                                         ("Bo1 told Ann he would come at 1.\n\nBo0 told Ann he", " would come at 0.")]
  lam = [readers.Lambada(f"l{i}", f"story {i} ends with the", f"word{i}") for i in range(3)]
  prefixes = fewshot.fewshot_prefixes(lam, lam, 1, same_split=True, seed=1234)
  # The harness's LAMBADA target is " word" and its target delimiter " " is added before it in an example.
  assert prefixes[0] == "story 1 ends with the  word1\n\n"
  assert lam[0].requests(prefixes[0]) == [("story 1 ends with the  word1\n\nstory 0 ends with the", " word0")]


def _arc_record(i, item):
  labels = "AB"
  return {"id": item.id, "question": {"stem": item.context[len("Question: "):-len("\nAnswer:")],
                                      "choices": [{"text": c, "label": labels[j]} for j, c in enumerate(item.choices)]},
          "answerKey": labels[item.gold]}


@pytest.fixture
def arc_like_task(tmp_path):
  """A registered ARC-format task "fewshot_qa" on EVAL, with TRAIN as its train split; unregistered afterwards."""
  for name, items in (("eval.jsonl", EVAL), ("train.jsonl", TRAIN)):
    (tmp_path / name).write_text("".join(json.dumps(_arc_record(i, it)) + "\n" for i, it in enumerate(items)))
  registry.register_task("fewshot_qa", registry.TaskSpec(files=("eval.jsonl",), reader=readers.read_arc,
                                                         metrics=("acc",), description="Answer the questions.\n\n"))
  yield str(tmp_path)
  registry.TASKS.pop("fewshot_qa", None)


def _recording_score_fn(seen):
  def score_fn(requests):
    seen.extend(requests)
    return [(-float(len(c)), 1, False) for _, c in requests]
  return score_fn


def test_run_eval_few_shot_records_num_fewshot_and_the_split(arc_like_task):
  data = arc_like_task
  seen = []
  out = harness.run_eval(_recording_score_fn(seen), ["fewshot_qa"], data, num_fewshot=2,
                         files={"fewshot_qa:train": f"{data}/train.jsonl"})
  want = fewshot.fewshot_prefixes(EVAL, TRAIN, 2, same_split=False, description="Answer the questions.\n\n")
  assert seen == [r for item, prefix in zip(EVAL, want) for r in item.requests(prefix)]
  assert seen[0][0].startswith("Answer the questions.\n\nQuestion: Which is a planet?\nAnswer: Mars\n\n")
  assert out["n-shot"] == {"fewshot_qa": 2}
  config = out["configs"]["fewshot_qa"]
  assert (config["num_fewshot"], config["fewshot_split"], config["fewshot_files"]) == (2, "train",
                                                                                       [f"{data}/train.jsonl"])
  assert (config["description"], config["fewshot_delimiter"], config["target_delimiter"]) == (
      "Answer the questions.\n\n", "\n\n", " ")
  assert out["config"]["fewshot_seed"] == 1234
  assert harness.to_markdown(out).splitlines()[2].replace(" ", "").startswith("|fewshot_qa|1|none|2|acc|")
  # Without another split the examples come from the evaluated one; zero-shot by default (the task's own).
  seen.clear()
  out = harness.run_eval(_recording_score_fn(seen), ["fewshot_qa"], data, num_fewshot=1, fewshot_seed=7)
  assert out["configs"]["fewshot_qa"]["fewshot_split"] == "test" and "fewshot_files" not in out["configs"]["fewshot_qa"]
  assert seen[0][0] == "Answer the questions.\n\nQuestion: What do bees make?\nAnswer: honey\n\nQuestion: What melts " \
                       "snow?\nAnswer:"
  seen.clear()
  out = harness.run_eval(_recording_score_fn(seen), ["fewshot_qa"], data)
  assert out["n-shot"] == {"fewshot_qa": 0} and seen[0][0] == "Answer the questions.\n\n" + EVAL[0].context
  with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
    harness.run_eval(_recording_score_fn(seen), ["fewshot_qa"], data, num_fewshot=1,
                     files={"fewshot_qa:train": f"{data}/nowhere.jsonl"})
