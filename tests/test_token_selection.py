"""Which documents RHO-1's kept tokens come from: per-token documents of a packed batch, kept fractions by label on a
hand-made batch, the replay of a training stream, the RHO-1 pipeline's `token_selection` stage, its report lines."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from bliss_jax.data import composition, keyed, seqio_tasks
from bliss_jax.losses.selective import make_selective_loss, make_token_selection
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer


# Two packed rows of 8 tokens: row 0 holds documents math:a (3 tokens) and books:b (3), then padding; row 1 holds
# math:c (2), code:d (3) and books:e (3).
SEGMENT_IDS = np.array([[1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 2, 2, 2, 3, 3, 3]], np.int32)
SEGMENT_DOCS = [["math:a", "books:b"], ["math:c", "code:d", "books:e"]]
WEIGHTS = (SEGMENT_IDS > 0).astype(np.int32)  # 14 loss-carrying tokens
# The model's parameters are all 0, so are its logits: L_θ = log V everywhere, and the excess loss log V − L_RM is
# highest where L_RM is lowest: at 50%, the 7 lowest of the 14 valid reference losses, 0.1 ... 0.7 (0.8, books:e, is
# the 8th).
REF_LOSS = np.array([[0.1, 0.2, 0.3, 2.0, 2.1, 0.4, 0.05, 0.05],  # padding: lowest, but never valid
                     [0.5, 2.2, 0.6, 0.7, 2.3, 2.4, 2.5, 0.8]], np.float32)
KEPT = np.array([[1, 1, 1, 0, 0, 1, 0, 0], [1, 0, 1, 1, 0, 0, 0, 0]], bool)
LABELLERS = {"domain": lambda d: d.split(":")[0],
             "quality": lambda d: "junk" if d.startswith("code") else "clean",
             "target": lambda d: "yes" if d.startswith("math") else "no"}


def test_kept_fractions_by_label_of_a_hand_made_packed_batch():
  batch = {"decoder_input_tokens": np.zeros((2, 8), np.int32), "decoder_target_tokens": np.zeros((2, 8), np.int32),
           "decoder_loss_weights": WEIGHTS, "decoder_segment_ids": SEGMENT_IDS,
           "decoder_positions": np.array([[0, 1, 2, 0, 1, 2, 0, 0], [0, 1, 0, 1, 2, 0, 1, 2]], np.int32),
           "ref_loss": REF_LOSS}
  model = Transformer(preset("tiny", vocab_size=128))
  params = jax.tree.map(jnp.zeros_like, nn.unbox(model.init(jax.random.PRNGKey(0), batch["decoder_input_tokens"]))[
      "params"])
  kw = dict(ratio=0.5, score="excess", reference="offline")
  sel = jax.jit(make_token_selection(model, **kw))(params, batch)
  np.testing.assert_allclose(np.asarray(sel["ce"]), np.log(128), rtol=1e-6)
  selected = np.asarray(sel["selected"])
  np.testing.assert_array_equal(selected, KEPT)
  _, metrics = make_selective_loss(model, **kw)(params, batch, None)
  assert float(metrics["num_tokens"]) == 7  # the loss trains on the tokens the selection names

  kept = composition.token_counts_by_document(SEGMENT_IDS, SEGMENT_DOCS, selected)
  every = composition.token_counts_by_document(SEGMENT_IDS, SEGMENT_DOCS, WEIGHTS > 0)
  assert kept == {"math:a": 3, "books:b": 1, "math:c": 1, "code:d": 2}
  assert every == {"math:a": 3, "books:b": 3, "math:c": 2, "code:d": 3, "books:e": 3}
  assert composition.composition_of_token_counts(kept, LABELLERS) == {
      "n": 7, "by_domain": {"books": 1 / 7, "code": 2 / 7, "math": 4 / 7},
      "by_quality": {"clean": 5 / 7, "junk": 2 / 7}, "target_fraction": 4 / 7}
  assert composition.composition_of_token_counts(every, LABELLERS) == {
      "n": 14, "by_domain": {"books": 6 / 14, "code": 3 / 14, "math": 5 / 14},
      "by_quality": {"clean": 11 / 14, "junk": 3 / 14}, "target_fraction": 5 / 14}
  # counts add up over batches; padding is never counted, even where a mask holds it
  twice = composition.token_counts_by_document(SEGMENT_IDS, SEGMENT_DOCS, np.ones((2, 8), bool), dict(every))
  assert twice == {d: 2 * n for d, n in every.items()}


def _docs():
  return [(f"{'prose' if i % 3 else 'junk'}:{i}", " ".join(["word", "list", "value", str(i)] * (2 + 7 * i % 19)))
          for i in range(40)]


@pytest.fixture(scope="module")
def task():
  seqio_tasks.register_document_task("token_selection_lm", _docs, seqio.ByteVocabulary(), validation_fraction=0.2)
  return "token_selection_lm"


def test_replay_names_the_document_of_every_packed_segment(task):
  texts = {d: t.encode() for d, t in _docs()}
  replay = list(keyed.replay_packed_batches(task, "train", 64, 4, 3, seed=5, features=("doc_id",) +
                                            keyed.SPAN_FEATURES[1:]))
  assert len(replay) == 3
  for batch, rows in replay:
    assert batch["decoder_target_tokens"].shape == (4, 64) and len(rows) == 4
    for tokens, ids, row in zip(batch["decoder_target_tokens"], batch["decoder_segment_ids"], rows):
      assert len(row) == ids.max()
      for s, x in enumerate(row, 1):
        segment = tokens[ids == s]
        assert segment[-1] == 1 or len(segment) == x["chunk_end"] - x["chunk_start"]  # EOS or a cut chunk
        text = texts[x["doc_id"].decode()]
        body = segment[:-1] if segment[-1] == 1 else segment
        assert bytes(int(t) - 3 for t in body) in text  # byte ids are offset by 3
  # the stream as the trainer reads it
  from bliss_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  stream = pipeline.seqio_batch_source(task, batch_size=4, sequence_length=64, seed=5)("train")
  for batch, _ in replay:
    np.testing.assert_array_equal(next(stream)["decoder_target_tokens"], batch["decoder_target_tokens"])


@pytest.mark.integration
def test_rho1_counts_the_documents_of_the_tokens_it_kept(tmp_path, task):
  from bliss_jax.pipelines import rho1  # pylint: disable=g-import-not-at-top
  from bliss_jax.training import trainer  # pylint: disable=g-import-not-at-top
  from bliss_jax.training.model_dir import ModelDir  # pylint: disable=g-import-not-at-top
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=384), num_steps=4, batch_size=8,
                           sequence_length=32, optimizer=trainer.OptimizerConfig(warmup_steps=1), checkpoint_every=1,
                           log_every=1, seed=3)
  rep = rho1.run(root=str(tmp_path), train_task=task, reference_task=task, student=spec,
                 reference=spec.replace(num_steps=2), students=("rho1",), keep_checkpoints=None, ratio=0.6,
                 token_selection_batches=2, eval_max_batches=1, progress_bar=False)
  sel = rep["students"]["rho1"]["token_selection"]
  assert sel["steps"] == [1, 3]  # 2 of the checkpoints at steps 1, 2, 3 before the last, spread evenly
  counts = json.load(open(sel["counts"]))
  # the replayed batches are the ones steps 2 and 4 trained on: the same loss-carrying and selected token counts
  logged = {r["step"]: r for r in ModelDir(rep["students"]["rho1"]["model_dir"]).metrics("train")}
  assert sel["tokens"] == sum(counts["all"].values()) == logged[2]["num_valid_tokens"] + logged[4]["num_valid_tokens"]
  assert sel["kept_tokens"] == sum(counts["kept"].values()) == logged[2]["num_tokens"] + logged[4]["num_tokens"]
  docs = dict(_docs())
  assert set(counts["kept"]) <= set(counts["all"]) <= set(docs)
  assert all(counts["kept"][d] <= counts["all"][d] for d in counts["kept"])
  # and the batch at position 1 is the one step 2 trained on: its CE under the student at step 1 is the logged one
  from bliss_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  student_dir, reference_dir = rep["students"]["rho1"]["model_dir"], rep["reference"]["model_dir"]
  batch = [b for b, _ in keyed.replay_packed_batches(task, "train", 32, 8, 2, seed=3)][1]
  model = Transformer(ModelDir(student_dir).read_model_config())
  _, metrics = make_selective_loss(model, {"reference": Transformer(ModelDir(reference_dir).read_model_config())},
                                   ratio=0.6)(checkpoints.load_params(student_dir, step=1)[1], batch, None,
                                              {"reference": checkpoints.load_params(reference_dir)[1]})
  assert float(metrics["ce_all"]) == pytest.approx(logged[2]["ce_all"], rel=1e-5)
  assert float(metrics["ce_selected"]) == pytest.approx(logged[2]["ce_selected"], rel=1e-5)


def test_report_lists_kept_token_fractions_next_to_all_tokens():
  from bliss_jax.pipelines import compare  # pylint: disable=g-import-not-at-top
  kept = composition.composition_of_token_counts({"math:a": 3, "books:b": 1, "math:c": 1, "code:d": 2}, LABELLERS)
  every = composition.composition_of_token_counts(
      {"math:a": 3, "books:b": 3, "math:c": 2, "code:d": 3, "books:e": 3}, LABELLERS)
  row = {"final": {"loss": 3.5, "accuracy": 0.25}, "flops": {"target_training": 1e12, "auxiliary": {},
                                                              "auxiliary_total": 0.0}, "wall_seconds": 60.0,
         "token_selection": {"steps": [100, 300], "kept": kept, "all": every}}
  report = {"scale": "hand", "zero_shot_note": None, "pool_composition": None,
            "config": {"train_task": "t", "pool": "t:train", "reference_task": "t", "eval": "t:validation",
                       "eval_tokens": 1000.0, "target_steps": 400, "batch_size": 2, "sequence_length": 8,
                       "target_params": 1234, "target_step_flops": 1e10, "curve_steps": [200, 400]},
            "methods": {"rho1": row}}
  md = compare.format_report(report, {})
  assert "- rho1: books 0.143 (0.429), code 0.286 (0.214), math 0.571 (0.357); target-like 0.571 (0.357)" in md
  assert "- rho1: clean 0.714 (0.786), junk 0.286 (0.214)" in md
  assert "checkpoints at steps rho1: 100, 300" in md
