"""Tests for bliss_jax.eval.readers: item counts and prompts on the real files, fixtures (real items in the public
formats) for SIQA, COPA, SciQ and StoryCloze, which the shared data lacks; errors."""
import bz2
import collections
import json

import pytest

from bliss_jax.eval import readers

# (reader, file, items, choices per item) from ../shared/data/README.md.
REAL = {
    "hellaswag": (readers.read_hellaswag, "hellaswag_val_full.txt.bz2", 10_042, {4}),
    "arc_easy": (readers.read_arc, "ARC-Easy-Test.jsonl", 2_376, {3, 4, 5}),
    "arc_challenge": (readers.read_arc, "ARC-Challenge-Test.jsonl", 1_172, {3, 4, 5}),
    "piqa": (readers.read_piqa, "piqa_valid.jsonl", 1_838, {2}),
    "winogrande": (readers.read_winogrande, "winogrande_dev.jsonl", 1_267, {2}),
    "boolq": (readers.read_boolq, "boolq_val.jsonl", 3_270, {2}),
    "openbookqa": (readers.read_openbookqa, "openbookqa_test.tsv", 500, {4}),
    "logiqa": (readers.read_logiqa, "logiqa_test.txt", 651, {4}),
}


@pytest.fixture(scope="module")
def real_items(shared_data):
  return {name: reader(str(shared_data / "eval" / f)) for name, (reader, f, _, _) in REAL.items()}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_counts_and_golds(real_items, name):
  _, _, count, num_choices = REAL[name]
  items = real_items[name]
  assert len(items) == count
  assert all(isinstance(it, readers.MultipleChoice) for it in items)
  assert {len(it.choices) for it in items} <= num_choices
  assert all(0 <= it.gold < len(it.choices) for it in items)
  assert all(len(it.requests()) == len(it.choices) for it in items)
  assert all(cont.startswith(" ") for it in items for _, cont in it.requests())  # the harness's target_delimiter
  assert len({it.id for it in items}) == count  # ids are unique
  golds = collections.Counter(it.gold for it in items)
  assert set(golds) >= set(range(min(num_choices)))  # every position is gold somewhere: not a constant-label parse


def test_real_prompts_follow_the_harness(real_items):
  hs = real_items["hellaswag"][0]
  assert hs.context == "Roof shingle removal: A man is sitting on a roof. He"  # ctx_b capitalized
  assert hs.requests()[3] == (hs.context, " starts pulling up roofing on a roof.") and hs.gold == 3
  assert not any("[header]" in it.context or "[title]" in it.context for it in real_items["hellaswag"])
  arc = real_items["arc_easy"][0]
  assert arc.context == ("Question: Which statement best explains why photosynthesis is the foundation of most food "
                         "webs?\nAnswer:")
  assert arc.requests()[0][1] == " Sunlight is the source of energy for nearly all ecosystems." and arc.gold == 0
  numeric = [it for it in real_items["arc_easy"] if it.id == "MCAS_2000_4_6"]  # labels "1".."4"
  assert all(len(it.choices) == 4 for it in numeric)
  piqa = real_items["piqa"][0]
  assert piqa.context == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
  assert piqa.gold == 0 and real_items["piqa"][1].gold == 1
  wg = real_items["winogrande"][0]
  assert wg.requests() == [("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
                           ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases.")]
  assert wg.gold == 1
  bq = real_items["boolq"][0]
  assert bq.context.startswith("Ethanol fuel -- All biomass")
  assert bq.context.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
  assert [c for _, c in bq.requests()] == [" no", " yes"] and bq.gold == 0
  ob = real_items["openbookqa"][1]
  assert ob.context == "There is most likely going to be fog around:"
  assert ob.choices == ("a marsh", "a tundra", "the plains", "a desert") and ob.gold == 0
  lq = real_items["logiqa"][0]
  assert lq.context.startswith("Passage: In the planning of a new district in a township, it was decided to build a "
                               "special community in the southeast, northwest, centered on the citizen park. These")
  assert "\nQuestion: Based on the above statement, which of the following can be derived?\nChoices:\nA. Civic " in \
      lq.context
  assert lq.context.endswith("\nD. The business district is southeast of the leisure area\nAnswer:")
  assert lq.requests()[0][1] == " Civic Park is north of the administrative service area" and lq.gold == 0


def test_real_lambada(shared_data):
  items = readers.read_lambada(str(shared_data / "eval" / "lambada_openai.jsonl"))
  assert len(items) == 5_153
  assert all(isinstance(it, readers.Lambada) and it.continuation and " " not in it.continuation for it in items)
  assert items[0].continuation == "signs" and items[0].context.endswith("I don't care about")
  assert items[0].requests() == [(items[0].context, " signs")]
  # The one passage whose last word follows a newline: the harness splits the raw text on " " only.
  odd = items[4462]
  assert odd.continuation == "the\n\nrecorder" and odd.context.endswith("when she returned and saw")


def test_hellaswag_preprocess_and_ctx_b():
  raw = "[header] How to dry a shirt [title] Hang it. [step] Use a [www.example.org] line  outside."
  # As the harness: strip, then substitute (so a leading tag leaves a leading space).
  assert readers.hellaswag_preprocess(raw) == " How to dry a shirt. Hang it. Use a line outside."
  assert readers._capitalize_ctx_b("A man sits. He stands. the man") == "A man sits. He stands. The man"
  assert readers._capitalize_ctx_b("Open the box. Remove the lid.") == "Open the box. Remove the lid."
  assert readers._capitalize_ctx_b("the man in Paris") == "The man in paris"  # str.capitalize, as the harness


# --- Fixtures in the formats the shared data lacks ----------------------------------------------------------------

SCIQ = [
    {"question": "What type of organism is commonly used in preparation of foods such as cheese and yogurt?",
     "distractor3": "viruses", "distractor1": "protozoa", "distractor2": "gymnosperms",
     "correct_answer": "mesophilic organisms", "support": "  Mesophiles grow best in moderate temperature."},
    {"question": "What is the least dangerous radioactive decay?", "distractor3": "zeta decay",
     "distractor1": "beta decay", "distractor2": "gamma decay", "correct_answer": "alpha decay", "support": ""},
]


def test_sciq_json_and_jsonl(tmp_path):
  (tmp_path / "test.json").write_text(json.dumps(SCIQ))
  (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in SCIQ) + "\n")
  for path in (tmp_path / "test.json", tmp_path / "test.jsonl"):
    items = readers.read_sciq(str(path))
    assert len(items) == 2 and all(it.gold == 3 for it in items)
    assert items[0].context == ("Mesophiles grow best in moderate temperature.\nQuestion: What type of organism is "
                                "commonly used in preparation of foods such as cheese and yogurt?\nAnswer:")
    assert items[0].choices == ("protozoa", "gymnosperms", "viruses", "mesophilic organisms")
    assert items[1].context == "\nQuestion: What is the least dangerous radioactive decay?\nAnswer:"


STORY_HEADER = ("InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1,"
                "RandomFifthSentenceQuiz2,AnswerRightEnding\n")
STORY_ROWS = ('138d5bfb-05cc-41e3-bf2c-fa85ebad14e2,Rick grew up in a troubled household.,He never found good support '
              'in family.,He turned to gangs.,"It wasn\'t long, before Rick got shot.",Rick found happiness.,'
              'Rick joined a gang.,1\n'
              'bff9f820-9605-4875-b9af-fe6f14d04256,Laverne needs to prepare.,She bakes cookies.,She burns them.,'
              'She starts again.,Laverne is happy.,Laverne hates cookies.,2\n')


def test_storycloze_csv(tmp_path):
  path = tmp_path / "cloze.csv"
  path.write_text(STORY_HEADER + STORY_ROWS)
  items = readers.read_storycloze(str(path))
  assert [it.gold for it in items] == [0, 1]
  assert items[0].id == "138d5bfb-05cc-41e3-bf2c-fa85ebad14e2"
  assert items[0].context == ("Rick grew up in a troubled household. He never found good support in family. He "
                              "turned to gangs. It wasn't long, before Rick got shot.")
  ctx = items[0].context
  assert items[0].requests() == [(ctx, " Rick found happiness."), (ctx, " Rick joined a gang.")]
  hf = tmp_path / "hf.csv"  # the HF `story_cloze` column names
  hf.write_text("story_id,input_sentence_1,input_sentence_2,input_sentence_3,input_sentence_4,sentence_quiz1,"
                "sentence_quiz2,answer_right_ending\n" + STORY_ROWS)
  assert readers.read_storycloze(str(hf)) == items


# The first two items of Social IQa's dev split and of SuperGLUE COPA's val split.
SIQA = [{"context": "Tracy didn't go home that evening and resisted Riley's attacks.",
         "question": "What does Tracy need to do before this?", "answerA": "make a new plan",
         "answerB": "Go home and see Riley", "answerC": "Find somewhere to go"},
        {"context": "Sydney walked past a homeless woman asking for change but did not have any money they could give "
                    "to her. Sydney felt bad afterwards.", "question": "How would you describe Sydney?",
         "answerA": "sympathetic", "answerB": "like a person who was unable to help", "answerC": "incredulous"}]
SIQA_LABELS = ["3", "1"]


def test_siqa_with_labels_file_and_label_field(tmp_path):
  (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SIQA))
  (tmp_path / "dev-labels.lst").write_text("\n".join(SIQA_LABELS) + "\n")
  (tmp_path / "hf.jsonl").write_text("".join(json.dumps(dict(r, label=label)) + "\n"
                                             for r, label in zip(SIQA, SIQA_LABELS)))
  items = readers.read_siqa(str(tmp_path / "dev.jsonl"))
  assert readers.read_siqa(str(tmp_path / "hf.jsonl")) == items
  assert [it.gold for it in items] == [2, 0]
  assert items[0].context == ("Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy "
                              "need to do before this?\nA:")
  assert items[0].requests() == [(items[0].context, " make a new plan"), (items[0].context, " Go home and see Riley"),
                                 (items[0].context, " Find somewhere to go")]
  (tmp_path / "dev-labels.lst").write_text("3\n4\n")
  _raises(readers.read_siqa, tmp_path / "dev.jsonl", "line 2", "label should be 1, 2 or 3")
  (tmp_path / "dev-labels.lst").write_text("3\n")
  with pytest.raises(readers.ReaderError, match="dev-labels.lst: 1 labels for 2 items"):
    readers.read_siqa(str(tmp_path / "dev.jsonl"))


COPA = [{"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
         "choice2": "Water flowed from the spout.", "question": "effect", "idx": 0, "label": 1},
        {"premise": "The girl found a bug in her cereal.", "choice1": "She poured milk in the bowl.",
         "choice2": "She lost her appetite.", "question": "effect", "idx": 1, "label": 1},
        {"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
         "choice2": "The grass was cut.", "question": "cause", "idx": 2, "label": 0}]


def test_copa_superglue_jsonl(tmp_path):
  path = tmp_path / "val.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in COPA))
  items = readers.read_copa(str(path))
  assert [it.gold for it in items] == [1, 1, 0] and items[0].id == "copa/0"
  # The premise loses its period and takes the connector; each choice is " " + first letter lower-cased, and the
  # target delimiter makes the continuation start with two spaces, as the harness scores it.
  assert items[0].requests() == [("The man turned on the faucet therefore", "  the toilet filled with water."),
                                 ("The man turned on the faucet therefore", "  water flowed from the spout.")]
  assert items[2].context == "My body cast a shadow over the grass because"
  path.write_text(json.dumps(dict(COPA[0], question="reason")) + "\n")
  _raises(readers.read_copa, path, "line 1", "'cause' or 'effect'")


# --- Errors name the file and the item ----------------------------------------------------------------------------


def _raises(fn, path, *fragments):
  with pytest.raises(readers.ReaderError) as e:
    fn(str(path))
  for fragment in (str(path),) + fragments:
    assert fragment in str(e.value)


def test_errors_name_file_and_item(tmp_path):
  _raises(readers.read_arc, tmp_path / "missing.jsonl", "not found")
  bad = tmp_path / "arc.jsonl"
  good = {"id": "x", "question": {"stem": "Q", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "A"}
  bad.write_text(json.dumps(good) + "\n{not json\n")
  _raises(readers.read_arc, bad, ":2:", "invalid JSON")
  bad.write_text(json.dumps(dict(good, answerKey="C")) + "\n")
  _raises(readers.read_arc, bad, "line 1", "answerKey 'C'")
  wg = tmp_path / "wg.jsonl"
  wg.write_text(json.dumps({"context_options": ["a", "b"], "continuation": "c", "gold": 2}) + "\n")
  _raises(readers.read_winogrande, wg, "line 1", "gold index 2")
  wg.write_text(json.dumps({"context_options": ["a", "b"], "gold": 0}) + "\n")
  _raises(readers.read_winogrande, wg, "line 1", "missing field 'continuation'")
  hs = tmp_path / "hs.txt.bz2"
  hs.write_bytes(bz2.compress(b"Label: ctx\n1\na\nb\nc\nd\nLabel: ctx\nx\na\nb\nc\nd\n"))
  _raises(readers.read_hellaswag, hs, "item 1 (line 7)", "gold index")
  hs.write_bytes(bz2.compress(b"Label: ctx\n1\na\nb\nc\n"))
  _raises(readers.read_hellaswag, hs, "multiple of 6")
  piqa = tmp_path / "piqa.jsonl"
  piqa.write_text(json.dumps({"goal": "g", "sol1": "a", "sol2": "b"}) + "\n")
  (tmp_path / "piqa-labels.lst").write_text("0\n1\n")
  _raises(readers.read_piqa, piqa, "2 labels for 1 items")
  lq = tmp_path / "logiqa.txt"
  lq.write_text("\na\nPassage.\nQuestion?\nA.x\nB.y\nC.z\n")
  _raises(readers.read_logiqa, lq, "record 0", "expected 7 lines")
  ob = tmp_path / "obqa.tsv"
  ob.write_text("ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n7\tQ\t(A) x (B) y (C) z\tQ\tA\n")
  _raises(readers.read_openbookqa, ob, "line 2", "(A) .. (B) .. (C) .. (D)")
  sc = tmp_path / "story.csv"
  sc.write_text(STORY_HEADER + STORY_ROWS.replace(",1\n", ",3\n"))
  _raises(readers.read_storycloze, sc, "line 2", "AnswerRightEnding should be 1 or 2")
  sq = tmp_path / "sciq.json"
  sq.write_text(json.dumps([SCIQ[0], {"question": "q"}]))
  _raises(readers.read_sciq, sq, "record 1", "missing field")
