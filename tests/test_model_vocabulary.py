"""A MODEL_DIR records its vocabulary and tasks; every tool uses the recorded vocabulary and refuses another.

Two tiny SentencePiece models of the same size (300 pieces + 100 sentinels) but different pieces: a check on sizes
alone lets every mismatch here through; the fingerprint refuses it.
"""
import hashlib
import json
import logging
import os
import shutil
import sys

import jax
import pytest
from pydoc_data import topics

from bliss_jax.data import pipeline, seqio_tasks, vocabulary
from bliss_jax.models.config import preset
from bliss_jax.selection import offline_scoring
from bliss_jax.training import checkpoints, model_vocabulary, trainer
from bliss_jax.training.model_dir import ModelDir

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import evaluate as evaluate_script  # noqa: E402  pylint: disable=g-import-not-at-top

L = 16
TEXTS = [text for _, text in sorted(topics.topics.items())]


@pytest.fixture(scope="module")
def vocabs(tmp_path_factory):
  """{"a": path, "b": path}: two SentencePiece models of 300 pieces trained on different texts, and their tasks
  "mv_a" / "mv_b" over the texts they were trained on."""
  root = tmp_path_factory.mktemp("spm")
  paths = {"a": vocabulary.train_sentencepiece(TEXTS[:20], str(root / "a.model"), 300),
           "b": vocabulary.train_sentencepiece(TEXTS[40:60], str(root / "b.model"), 300)}
  for name, texts in (("a", TEXTS[:20]), ("b", TEXTS[40:60])):
    docs = [(f"{name}:{i}", t[:600]) for i, t in enumerate(texts)]
    seqio_tasks.register_document_task(f"mv_{name}", lambda docs=docs: docs, vocabulary.load_vocabulary(paths[name]),
                                       validation_fraction=0.3)
  assert pipeline.vocabulary_size("mv_a") == pipeline.vocabulary_size("mv_b") == 400
  return paths


def _spec(num_steps):
  return trainer.TrainSpec(model_config=preset("tiny", vocab_size=None, num_layers=1), num_steps=num_steps,
                           batch_size=2, sequence_length=L, optimizer=trainer.OptimizerConfig(warmup_steps=1),
                           checkpoint_every=num_steps, log_every=1)


def _train(model_dir, task, num_steps=1, **kw):
  source = pipeline.seqio_batch_source(task, batch_size=2, sequence_length=L)
  return trainer.train(model_dir=str(model_dir), spec=_spec(num_steps), batch_source=source,
                       vocab_size=pipeline.vocabulary_size(task), devices=jax.devices()[:1], progress_bar=False, **kw)


@pytest.fixture(scope="module")
def trained(vocabs, tmp_path_factory):
  """A MODEL_DIR trained one step on "mv_a"."""
  model_dir = tmp_path_factory.mktemp("run") / "a"
  _train(model_dir, "mv_a")
  return str(model_dir)


def _old_style(trained, tmp_path):
  """A copy of `trained` as a run written before runs recorded their vocabulary."""
  old = str(tmp_path / "old")
  shutil.copytree(trained, old)
  os.remove(ModelDir(old).vocabulary_path)
  return old


def test_a_run_records_its_tasks_vocabulary(vocabs, trained):
  record = ModelDir(trained).read_vocabulary()
  with open(vocabs["a"], "rb") as f:
    fingerprint = "sha256:" + hashlib.sha256(f.read()).hexdigest()
  assert record == {"tasks": ["mv_a"], "kind": "sentencepiece", "path": os.path.abspath(vocabs["a"]),
                    "extra_ids": 100, "size": 400, "fingerprint": fingerprint}
  assert ModelDir(trained).read_run_config()["vocabulary_fingerprint"] == fingerprint
  b = vocabulary.vocabulary_record(vocabulary.load_vocabulary(vocabs["b"]))
  assert b["size"] == record["size"] and b["fingerprint"] != fingerprint


def test_resuming_on_a_task_of_another_vocabulary_is_refused(vocabs, trained, tmp_path):
  run = str(tmp_path / "run")
  shutil.copytree(trained, run)
  with pytest.raises(model_vocabulary.VocabularyMismatch) as e:
    _train(run, "mv_b", num_steps=2)
  assert all(s in str(e.value) for s in (run, vocabs["a"], vocabs["b"], "mv_b"))


def test_one_source_reading_tasks_of_two_vocabularies_is_refused(vocabs):
  a = pipeline.seqio_batch_source("mv_a", batch_size=2, sequence_length=L)
  b = pipeline.seqio_batch_source("mv_b", batch_size=2, sequence_length=L)

  def source(split, **kw):  # a wrapper, as the selection rounds' sources are
    return (a if split == "train" else b)(split, **kw)

  assert trainer.source_tasks(source) == ["mv_a", "mv_b"]
  with pytest.raises(model_vocabulary.VocabularyMismatch, match="different vocabularies"):
    model_vocabulary.record_of_tasks(trainer.source_tasks(source))


def _evaluate(model_dir, out_dir, files, *extra):
  return evaluate_script.main([f"--model_dir={model_dir}", f"--output_dir={out_dir}", "--tasks=sciq",
                               f"--task_file=sciq={files}", "--batch_size=4", "--max_length=32", "--data_parallel=1",
                               "--no_progress", *extra])


@pytest.fixture
def sciq(tmp_path):
  items = [{"question": f"Which gas do plants take in, case {i}?", "distractor1": "oxygen", "distractor2": "helium",
            "distractor3": "neon", "correct_answer": "carbon dioxide", "support": "Plants use carbon dioxide."}
           for i in range(4)]
  (tmp_path / "sciq.json").write_text(json.dumps(items))
  return str(tmp_path / "sciq.json")


def test_evaluate_uses_the_recorded_vocabulary_and_refuses_another(vocabs, trained, sciq, tmp_path):
  # Before models recorded their vocabulary, no --vocabulary meant the embedded default (2,148 ids): refused here
  # for its size, and scored silently with the wrong ids wherever the model's embedding was large enough.
  default = _evaluate(trained, tmp_path / "default", sciq)
  explicit = _evaluate(trained, tmp_path / "explicit", sciq, f"--vocabulary={vocabs['a']}")
  assert default["config"]["vocabulary"]["path"] == os.path.abspath(vocabs["a"])
  assert default["results"] == explicit["results"]
  with pytest.raises(SystemExit) as e:
    _evaluate(trained, tmp_path / "other", sciq, f"--vocabulary={vocabs['b']}")
  assert all(s in str(e.value) for s in (trained, vocabs["a"], vocabs["b"]))


def test_evaluate_heldout_task_of_another_vocabulary_is_refused(vocabs, trained, sciq, tmp_path):
  with pytest.raises(SystemExit, match="--heldout task 'mv_b'"):
    _evaluate(trained, tmp_path / "h", sciq, "--heldout=mv_b:validation", "--tasks_module=bliss_jax")


def test_an_old_model_dir_still_works_with_a_warning(vocabs, trained, sciq, tmp_path, caplog):
  old = _old_style(trained, tmp_path)
  with caplog.at_level(logging.WARNING):
    results = _evaluate(old, tmp_path / "eval", sciq, f"--vocabulary={vocabs['a']}")
  assert results["results"]["sciq"]
  assert any("could not be checked" in r.getMessage() and old in r.getMessage() for r in caplog.records)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    checkpoints.check_vocabulary("teacher", old, 512, 400,
                                 vocabulary.vocabulary_record(vocabulary.load_vocabulary(vocabs["b"])))
  assert any("could not be checked" in r.getMessage() for r in caplog.records)


def test_export_writes_the_recorded_tokenizer_and_refuses_another(vocabs, trained, tmp_path):
  pytest.importorskip("safetensors")
  from bliss_jax.export import hf  # pylint: disable=g-import-not-at-top
  out = hf.export(trained, str(tmp_path / "hf"), max_position_embeddings=32)
  with open(os.path.join(out, hf.SPM_FILE), "rb") as f:
    assert f.read() == vocabulary.load_vocabulary(vocabs["a"]).sp_model
  with open(os.path.join(out, hf.PROVENANCE_FILE)) as f:
    assert json.load(f)["vocabulary"]["path"] == os.path.abspath(vocabs["a"])
  with pytest.raises(model_vocabulary.VocabularyMismatch, match="b.model"):
    hf.export(trained, str(tmp_path / "hf_b"), vocabulary_path=vocabs["b"])


def test_a_frozen_model_of_another_vocabulary_is_refused(vocabs, trained, tmp_path):
  record_a, record_b = (vocabulary.vocabulary_record(vocabulary.load_vocabulary(vocabs[k])) for k in "ab")
  checkpoints.check_vocabulary("teacher", trained, 512, 400, record_a)
  with pytest.raises(model_vocabulary.VocabularyMismatch, match="frozen model 'teacher'"):
    checkpoints.check_vocabulary("teacher", trained, 512, 400, record_b)
  # The same size (512 rows, 400 task ids) passed the old size checks; the trainer now refuses before any step.
  with pytest.raises(model_vocabulary.VocabularyMismatch, match="frozen model 'teacher'"):
    _train(tmp_path / "student", "mv_b", frozen_model_dirs={"teacher": trained})


def test_offline_scoring_refuses_a_model_of_another_vocabulary(trained, tmp_path):
  with pytest.raises(model_vocabulary.VocabularyMismatch, match="task 'mv_b'"):
    offline_scoring.score_split(lambda p, b: {}, None, task="mv_b", split="train", store_dir=str(tmp_path / "s"),
                                sequence_length=L, batch_size=2, model_dirs=(trained,), progress=False)
