"""SALT / SALT_DS: ω(step) per transition strategy, the KD loss at a step, the teacher's absence after n_KD (jaxpr),
bit-exact resumption on either side of n_KD, the SALT_DS score (eq. 11) by hand, a tiny end-to-end pipeline, and the
paper-shaped steps traced abstractly."""
import itertools
import json
import os
import types

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from bliss_jax import cli, partitioning
from bliss_jax.data import pipeline as data_pipeline
from bliss_jax.data import seqio_tasks, ul2
from bliss_jax.data.chunk_store import ChunkStore, write_chunk_store
from bliss_jax.data.synthetic import synthetic_source
from bliss_jax.losses import kd
from bliss_jax.losses.lm import make_lm_loss
from bliss_jax.losses.salt import make_salt_kd_loss, omega_schedule, salt_kd_loss_factory
from bliss_jax.models.config import preset
from bliss_jax.models.flops import forward_flops_per_token, train_flops_per_token
from bliss_jax.models.transformer import Transformer
from bliss_jax.pipelines import common
from bliss_jax.pipelines import salt as salt_pipeline
from bliss_jax.selection import score_store
from bliss_jax.selection.salt_ds import in_top_k, make_salt_ds_scorer, masked_median, salt_ds_score
from bliss_jax.selection.selected_task import selected_examples
from bliss_jax.selection.selected_ul2 import register_selected_ul2_mixture
from bliss_jax.training import checkpoints, trainer
from bliss_jax.training.model_dir import ModelDir


# --- ω(step) (SALT Algorithm 1 and App. H), hand values ---------------------------------------------------------------
def test_step_transition():
  w = omega_schedule("step", omega=0.667, n_kd=36_000)
  assert [float(w(j)) for j in (1, 36_000, 36_001, 208_000)] == pytest.approx([0.667, 0.667, 0.0, 0.0])


def test_linear_transition():
  w = omega_schedule("linear", omega=0.667, n_kd_start=32_000, n_kd=36_000)
  # ω0 up to n_KD,1; 0.667·(36K − j)/4K on [32K, 36K]: 3/4, 1/2, 1/4 of 0.667 at 33K, 34K, 35K; 0 from 36K on
  got = [float(w(j)) for j in (1, 32_000, 33_000, 34_000, 35_000, 36_000, 36_001)]
  assert got == pytest.approx([0.667, 0.667, 0.50025, 0.3335, 0.16675, 0.0, 0.0], abs=1e-6)


def test_linear_ratio_transition():
  w = omega_schedule("linear_ratio", omega=2 / 3, n_kd_start=32_000, n_kd=36_000)
  # r = ω/(1 − ω) = 2 at 32K, decaying linearly to 0 at 36K: r = 1.5, 1, 0.5 -> ω = r/(1 + r) = 0.6, 0.5, 1/3
  got = [float(w(j)) for j in (1, 32_000, 33_000, 34_000, 35_000, 36_000, 40_000)]
  assert got == pytest.approx([2 / 3, 2 / 3, 0.6, 0.5, 1 / 3, 0.0, 0.0], abs=1e-6)


def test_schedules_trace_and_validate():
  w = omega_schedule("linear_ratio", omega=2 / 3, n_kd_start=32_000, n_kd=36_000)
  assert float(jax.jit(w)(jnp.int32(34_000))) == pytest.approx(0.5, abs=1e-6)
  assert float(jax.jit(omega_schedule("step", omega=0.667, n_kd=3))(jnp.int32(4))) == 0.0
  with pytest.raises(ValueError, match="n_kd_start < n_kd"):
    omega_schedule("linear", omega=0.667, n_kd=36_000)
  with pytest.raises(ValueError, match="transition"):
    omega_schedule("cosine", omega=0.667, n_kd=10)


def test_salt_kd_loss_is_kd_at_omega_of_step():
  class Fake:
    def __init__(self, logits):
      self.logits, self.cfg = jnp.array(logits)[None], types.SimpleNamespace(vocab_size=4)

    def apply(self, variables, tokens, **kw):
      return self.logits

  student = Fake([[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.0, 0.0], [0.3, -0.2, 0.1, 1.0]])
  teacher = Fake([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
  batch = {"decoder_input_tokens": jnp.zeros((1, 3), jnp.int32), "decoder_target_tokens": jnp.array([[0, 1, 3]]),
           "decoder_loss_weights": jnp.array([[1, 1, 0]])}
  loss_fn = make_salt_kd_loss(student, {"teacher": teacher}, omega_schedule("step", omega=0.667, n_kd=2), rho=0.25)
  for step, omega in ((1, 0.667), (2, 0.667), (3, 0.0)):
    want, _ = kd.make_kd_loss(student, {"teacher": teacher}, omega=omega, rho=0.25)({}, batch, None, {"teacher": {}})
    got, metrics = loss_fn({}, batch, None, {"teacher": {}}, jnp.int32(step))
    assert float(got) == pytest.approx(float(want), rel=1e-6) and float(metrics["omega"]) == pytest.approx(omega)
  with pytest.raises(ValueError, match="shared tokenizer"):
    make_salt_kd_loss(student, {"teacher": types.SimpleNamespace(cfg=types.SimpleNamespace(vocab_size=8))})


# --- SALT_DS score (eq. 11), hand-computed ---------------------------------------------------------------------------
# k = 2 of V = 4. Row 0: 5 valid positions; row 1: 4 valid (+1 padding); row 2: none.
LOGITS = np.array([
    [[2, 0, 0, 0], [2, 1, 0, 0], [0, 0, 0, 0], [1, 3, 0, 0], [0, 0, 5, 5]],
    [[0, 0, 0, 0], [3, 2, 1, 0], [3, 2, 1, 0], [1, 0, 0, 0], [0, 9, 0, 0]],
    [[0, 0, 0, 0]] * 5], np.float32)
TARGETS = np.array([[0, 2, 3, 0, 2], [1, 3, 1, 0, 0], [0] * 5], np.int32)
WEIGHTS = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [0] * 5], np.int32)
e = np.e
# Masked token losses by hand: −log softmax at the target where fewer than 2 logits are strictly larger, else 0.
ROW0 = [np.log(e**2 + 3) - 2,           # rank 0: 0.3408
        0.0,                            # target 2 (logit 0) has 2 and 1 above it: outside the top 2
        np.log(4.0),                    # all tied: rank 0: 1.3863
        np.log(e + e**3 + 2) - 1,       # one logit (3) above: rank 1: 2.2110
        np.log(2 + 2 * e**5) - 5]       # tied at the top (a tie counts for the target): 0.6999
ROW1 = [np.log(4.0),                    # 1.3863
        0.0,                            # 3 logits above target 3
        np.log(e**3 + e**2 + e + 1) - 2,  # one above: 1.4402
        np.log(e + 3) - 1]              # 0.7437; the 5th position is padding
# "zero" (eq. 11 as typeset): the median of all loss-carrying positions, out-of-top-k ones as 0. Odd count: the middle
# value; even count: the mean of the two middle values; no position: 0.
HAND_SCORES = [np.log(2 + 2 * e**5) - 5, ((np.log(e + 3) - 1) + np.log(4.0)) / 2, 0.0]
# "remove" (the paper's prose, the default): the median of the in-top-k positions only; none: −1 (below any CE).
# Row 0 keeps 0.3408 0.6999 | 1.3863 2.2110, row 1 keeps 0.7437 1.3863 1.4402.
HAND_SCORES_REMOVED = [(np.log(2 + 2 * e**5) - 5 + np.log(4.0)) / 2, np.log(4.0), -1.0]


def test_salt_ds_score_hand_computed():
  args = (jnp.array(LOGITS), jnp.array(TARGETS), jnp.array(WEIGHTS))
  np.testing.assert_allclose(salt_ds_score(*args, k=2, out_of_top_k="zero"), HAND_SCORES, rtol=1e-5)
  assert sorted(ROW0)[2] == pytest.approx(HAND_SCORES[0]) and np.median(ROW1) == pytest.approx(HAND_SCORES[1])
  # k = V: every token is in the top k and the score is the plain median CE (row 1: 0.7437 1.3863 | 1.4402 3.4402)
  row1_all = [np.log(4.0), np.log(e**3 + e**2 + e + 1), np.log(e**3 + e**2 + e + 1) - 2, np.log(e + 3) - 1]
  for mode in ("zero", "remove"):
    assert float(salt_ds_score(*args, k=4, out_of_top_k=mode)[1]) == pytest.approx(
        (row1_all[0] + row1_all[2]) / 2, rel=1e-5)


def test_salt_ds_score_removes_out_of_top_k_losses_by_default():
  """The paper's prose: the out-of-top-k losses are removed before the median, not counted as 0."""
  args = (jnp.array(LOGITS), jnp.array(TARGETS), jnp.array(WEIGHTS))
  np.testing.assert_allclose(salt_ds_score(*args, k=2), HAND_SCORES_REMOVED, rtol=1e-5)
  assert np.median([v for v in ROW0 if v > 0]) == pytest.approx(HAND_SCORES_REMOVED[0])
  assert np.median([v for v in ROW1 if v > 0]) == pytest.approx(HAND_SCORES_REMOVED[1])
  # Most positions outside the top k: zeroing ties the row at 0, removing ranks it by its in-top-k losses.
  logits = jnp.array([[[3.0, 2, 1, 0]] * 4])
  targets, weights = jnp.array([[0, 3, 3, 3]]), jnp.ones((1, 4), jnp.int32)
  assert float(salt_ds_score(logits, targets, weights, k=1, out_of_top_k="zero")[0]) == 0.0
  assert float(salt_ds_score(logits, targets, weights, k=1)[0]) == pytest.approx(np.log(1 + e**-1 + e**-2 + e**-3))
  with pytest.raises(ValueError, match="out_of_top_k"):
    salt_ds_score(*args, k=2, out_of_top_k="drop")


def test_top_k_membership_and_median_edges():
  logits = jnp.arange(12, dtype=jnp.float32)[None]  # token v has 11 − v tokens strictly above it
  assert [bool(in_top_k(logits, jnp.array([v]), 10)[0]) for v in (0, 1, 2, 11)] == [False, False, True, True]
  values = jnp.array([[5.0, 1.0, 3.0, 100.0], [2.0, 4.0, 0.0, 0.0]])
  np.testing.assert_allclose(masked_median(values, jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]])), [3.0, 3.0])


class FixedLogits(nn.Module):
  @nn.compact
  def __call__(self, tokens, **unused):
    return self.param("logits", lambda *_: jnp.array(LOGITS))


def test_scorer_columns():
  batch = {"decoder_input_tokens": jnp.zeros((3, 5), jnp.int32), "decoder_target_tokens": jnp.array(TARGETS),
           "decoder_loss_weights": jnp.array(WEIGHTS)}
  out = make_salt_ds_scorer(FixedLogits(), k=2, with_token_scores=True)({"logits": jnp.array(LOGITS)}, batch)
  np.testing.assert_allclose(out["salt_ds"], HAND_SCORES_REMOVED, rtol=1e-5)
  zeroed = make_salt_ds_scorer(FixedLogits(), k=2, out_of_top_k="zero")({"logits": jnp.array(LOGITS)}, batch)
  np.testing.assert_allclose(zeroed["salt_ds"], HAND_SCORES, rtol=1e-5)
  np.testing.assert_allclose(out["tok_salt_ds"][0], ROW0, rtol=1e-5)
  np.testing.assert_allclose(out["tok_salt_ds"][1], ROW1 + [0.0], rtol=1e-5)
  np.testing.assert_allclose(out["frac_in_top_k"], [4 / 5, 3 / 4, 0.0])


# --- the teacher runs in the KD step and not after n_KD ---------------------------------------------------------------
def _dot_generals(jaxpr):
  """Operand shapes of every dot_general, nested jaxprs (jit, custom_vjp, scan) included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(tuple(tuple(v.aval.shape) for v in eqn.invars))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found += _dot_generals(inner)
  return found


def test_teacher_forward_only_in_the_kd_step():
  student_cfg = preset("tiny", vocab_size=128)                              # d 64, d_ff 256, head 16
  teacher_cfg = preset("tiny", vocab_size=128, d_model=48, d_ff=96, num_layers=1)  # dims the student lacks
  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  rules = partitioning.logical_rules()
  tx, schedule = trainer.make_tx(trainer.OptimizerConfig(warmup_steps=1), 10)
  batch = next(synthetic_source(vocab_size=128, batch_size=2, sequence_length=8)("train"))
  with partitioning.mesh_context(mesh, rules):
    frozen = {"teacher": trainer.abstract_params(teacher_cfg, mesh, rules)}
    # the plain loss from full logits (chunk_tokens=0), as the KD loss computes the student's, so that the two
    # steps' matmuls differ by the teacher's forward alone
    fns = trainer.build_step_functions(student_cfg, tx, schedule, mesh, rules, sequence_length=8,
                                       loss_factory=lambda m, fm: make_lm_loss(m, fm, chunk_tokens=0),
                                       frozen_models={"teacher": Transformer(teacher_cfg)},
                                       frozen_shardings=jax.tree.map(lambda x: x.sharding, frozen))
    rng = jax.random.PRNGKey(0)
    kd_step = fns.make_train_step(salt_kd_loss_factory(0.667, 0.25, n_kd=3))
    dots_kd = _dot_generals(jax.make_jaxpr(kd_step)(fns.abstract_state, batch, rng, frozen).jaxpr)
    dots_plain = _dot_generals(jax.make_jaxpr(fns.train_step)(fns.abstract_state, batch, rng, frozen).jaxpr)
    teacher_fwd = _dot_generals(jax.make_jaxpr(lambda p: make_lm_loss(Transformer(teacher_cfg), chunk_tokens=0)(p, batch, None)[0])(
        frozen["teacher"]).jaxpr)
  uses_teacher = lambda dot: any({48, 96} & set(shape) for shape in dot)  # dot = its operands' shapes
  assert sum(map(uses_teacher, dots_kd)) > 0 and sum(map(uses_teacher, dots_plain)) == 0
  # exactly one teacher forward (no backward through it) on top of the plain step
  assert len(dots_kd) == len(dots_plain) + len(teacher_fwd)


# --- a tiny end-to-end pipeline ---------------------------------------------------------------------------------------
def test_evaluation_steps_and_kd_steps():
  assert salt_pipeline.evaluation_steps(208_000, 36_000) == {"switch": 36_000, "70%": 145_600, "100%": 208_000}
  assert salt_pipeline.evaluation_steps(10, 10, (1.0,)) == {"100%": 10}  # RKD-like: no switch inside the run
  assert [salt_pipeline.kd_steps(s, 208_000, 36_000) for s in salt_pipeline.STUDENTS] == [0, 208_000, 36_000, 36_000]


VOCAB = seqio.ByteVocabulary(extra_ids=40)
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()


def _docs(prefix, n, seed):
  return [(f"{prefix}:{i}", " ".join(WORDS[(i * 5 + j * seed) % len(WORDS)] for j in range(4 + (i * 7) % 30)))
          for i in range(n)]


def _random_docs(prefix, n, seed):
  """Documents of random letters: no two chunks of them are equal, so a chunk is known by its tokens."""
  rng = np.random.default_rng(seed)
  return [(f"{prefix}:{i}", "".join(rng.choice(list("abcdefghij klmnop"), size=int(rng.integers(20, 150)))))
          for i in range(n)]


@pytest.fixture(scope="module")
def fixture_tasks():
  seqio_tasks.register_document_task("salt_fixture", lambda: _random_docs("t", 60, 3), VOCAB,
                                     validation_fraction=0.2)
  ul2.register_ul2_mixture("salt_fixture_ul2", "salt_fixture")
  seqio_tasks.register_document_task("salt_fixture_pool", lambda: _docs("p", 40, 2), VOCAB, validation_fraction=0.0)


def test_selected_ul2_mixture_serves_exactly_the_selected_chunks(fixture_tasks, tmp_path):
  keys = ["p:3#0", "p:7#1", "p:11#0"]
  chunks = {f"{e['doc_id']}#{e['chunk_index']}": list(e["targets"][:-1])  # the chunk without its EOS
            for e in selected_examples("salt_fixture_pool", "train", keys, 32)}
  write_chunk_store(str(tmp_path / "store"), "salt_fixture_pool", "train", 32, num_shards=2)
  store = ChunkStore(str(tmp_path / "store"))
  mixture = register_selected_ul2_mixture("salt_fixture_sel", store, keys)
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == pytest.approx(
      {f"salt_fixture_sel_{d.name}": r for d, r in zip(ul2.SALT_DENOISERS, (0.6, 0.2, 0.1, 0.1))})
  n_sentinels = ul2.num_sentinels(VOCAB)
  for denoiser in ul2.SALT_DENOISERS:
    task = seqio.get_mixture_or_task(f"salt_fixture_sel_{denoiser.name}")
    pieces = {}
    for x in task.get_dataset({"inputs": 16, "targets": 16}, split="train", shuffle=False).as_numpy_iterator():
      assert x["targets"][-1] == VOCAB.eos_id
      pieces.setdefault(x["doc_id"].decode(), {})[int(x["chunk_index"])] = ul2.fill_in_sentinels(
          x["inputs"].tolist(), x["targets"].tolist(), VOCAB.vocab_size, n_sentinels)
    assert {k: sum((p[i] for i in range(len(p))), []) for k, p in pieces.items()} == chunks
  # Shuffled, the chunks come in the order a SeqIO source of the selection's examples gives for the seed (as when
  # the selection was held in memory): every epoch a fresh permutation of the same chunks.
  many = [f"p:{i}#0" for i in range(0, 40, 3)]
  mixture = register_selected_ul2_mixture("salt_fixture_sel_many", store, many)
  source = seqio.get_mixture_or_task(mixture.tasks[0].name).source
  got = [x["doc_id"].decode() for x in source.get_dataset("train", shuffle=True, seed=5).repeat(2).as_numpy_iterator()]
  expected = list(tf.data.Dataset.from_tensor_slices(many).shuffle(len(many), seed=5, reshuffle_each_iteration=True)
                  .repeat(2).as_numpy_iterator())
  assert got == [k.decode() for k in expected] and got[:len(many)] != got[len(many):]
  assert sorted(got[:len(many)]) == sorted(many)


@pytest.fixture(scope="module")
def pipeline_report(tmp_path_factory, fixture_tasks):
  opt = trainer.OptimizerConfig(warmup_steps=1)
  student = trainer.TrainSpec(model_config=preset("tiny_mqa", vocab_size=None), num_steps=5, batch_size=8,
                              sequence_length=32, optimizer=opt, checkpoint_every=100, log_every=1)
  teacher = student.replace(model_config=preset("tiny_mqa", vocab_size=None, num_layers=1), num_steps=3)
  # SALT_DS, the student with every stage (scoring, selection, KD on the selection, then plain on the stream); the
  # other students are the same `train_segments` with other n_KD and no selection (see the resumption test). The
  # plain LM objective keeps this test short; the UL2 pieces are tested above and in the paper-shaped trace. The
  # candidates are the stream's own documents (the paper's "remainder" once ζ_{n0}'s data is left out).
  kw = dict(root=str(tmp_path_factory.mktemp("salt")), task="salt_fixture", student=student, teacher=teacher,
            scorer_step=2, n_kd=2, students=("salt_ds",), pool_task="salt_fixture", pool_split="train",
            score_batch_size=8, eval_fractions=(1.0,), mesh_data=1, devices=jax.devices()[:1], progress_bar=False)
  return kw, salt_pipeline.run(**kw)


@pytest.mark.integration
def test_pipeline_student_evaluations_and_cost(pipeline_report):
  _, report = pipeline_report
  assert set(report["summary"]) == {"slm", "salt_ds"} and report["summary"]["slm"]["final"]["step"] == 3
  res = report["students"]["salt_ds"]
  assert {k: v["step"] for k, v in res["heldout"].items()} == {"switch": 2, "100%": 5}
  assert all(np.isfinite(v["loss"]) and 0 <= v["accuracy"] <= 1 for v in res["heldout"].values())
  rows = [r for r in map(json.loads, open(os.path.join(res["model_dir"], "metrics.jsonl"))) if r["split"] == "train"]
  assert [r["step"] for r in rows if "omega" in r] == [1, 2] and len(rows) == 5  # KD for n_KD = 2 of 5 steps
  assert sorted(os.listdir(os.path.join(res["model_dir"], "checkpoints"))) == ["2", "5"]
  # cost: 5 student steps + 2 teacher forwards of (2 N_t + attention) / (6 N_s + attention) student steps each
  t_cfg = ModelDir(report["teacher"]["model_dir"]).read_model_config()
  s_cfg = ModelDir(res["model_dir"]).read_model_config()
  ratio = forward_flops_per_token(t_cfg, 32) / train_flops_per_token(s_cfg, 32)
  assert res["step_equivalents"] == pytest.approx(5 + 2 * ratio) and res["kd_steps"] == 2
  # the early checkpoint (n0 = 2) scored; the teacher trained on to 3
  assert sorted(os.listdir(os.path.join(report["teacher"]["scorer_dir"], "checkpoints"))) == ["2"]
  assert common.latest_step(report["teacher"]["model_dir"]) == 3


@pytest.mark.integration
def test_pipeline_reports_flops_equal_to_a_hand_count(pipeline_report):
  """`tiny_mqa` (d 64, 4 heads of 16, 1 kv head, GeGLU d_ff 128, RMSNorm, tied embeddings, vocab V): per layer
  64·16·6 + 4·16·64 + 3·64·128 + 2·64 = 34,944; N = layers·34,944 + 64 (final norm) + 64·V (the tied head), so a
  forward at T = 32 is 2N + 4·layers·4·16·32 per token; student 2 layers, teacher (and its early checkpoint) 1."""
  _, report = pipeline_report
  V = ModelDir(report["teacher"]["model_dir"]).read_model_config().vocab_size
  fwd = lambda layers: 2 * (layers * 34_944 + 64 + 64 * V) + 4 * layers * 4 * 16 * 32
  res = report["students"]["salt_ds"]
  assert res["train_flops"] == pytest.approx(3 * fwd(2) * 5 * 8 * 32, rel=1e-12)
  assert res["teacher_forward_flops"] == pytest.approx(fwd(1) * 2 * 8 * 32, rel=1e-12)
  assert report["teacher"]["train_flops"] == pytest.approx(3 * fwd(1) * 3 * 8 * 32, rel=1e-12)
  assert report["scoring"]["flops"] == pytest.approx(fwd(1) * report["scoring"]["scored_tokens"], rel=1e-12)


@pytest.mark.integration
def test_pipeline_selects_top_m_by_the_score(pipeline_report):
  _, report = pipeline_report
  table = score_store.read_scores(report["scoring"]["store"])
  selected = json.load(open(report["selection"]["selected"]))
  assert len(selected) == min(2 * 8, len(table)) == report["selection"]["n_selected"]  # m = n_KD × batch
  s = dict(zip(table.keys(), table.columns["salt_ds"]))
  threshold = min(s[k] for k in selected)
  assert all(v <= threshold for k, v in s.items() if k not in set(selected))


@pytest.mark.integration
def test_pipeline_scores_only_what_the_early_checkpoint_did_not_train_on(pipeline_report):
  """The paper's "remainder": every chunk of the stream's documents except those in the first n0 = 2 batches of the
  teacher's stream (found here by their tokens in those batches, as the teacher read them)."""
  kw, report = pipeline_report
  teacher = kw["teacher"]
  batches = data_pipeline.seqio_batch_source("salt_fixture", batch_size=teacher.batch_size,
                                             sequence_length=teacher.sequence_length, seed=teacher.seed)("train")
  seen = set()
  for batch in itertools.islice(batches, 2):
    for tokens, ids in zip(batch["decoder_target_tokens"], batch["decoder_segment_ids"]):
      seen |= {tuple(tokens[ids == i]) for i in range(1, ids.max() + 1)}
  provider = seqio.get_mixture_or_task("salt_fixture")
  chunks = {f"{x['doc_id'].decode()}#{x['chunk_index']}": tuple(x["targets"]) for x in provider.get_dataset(
      {"targets": 32}, split="train", shuffle=False, num_epochs=1).as_numpy_iterator()}
  assert len(set(chunks.values())) == len(chunks) and seen <= set(chunks.values())
  remainder = {k for k, tokens in chunks.items() if tokens not in seen}
  assert 10 < len(seen) and len(remainder) > 2 * 8  # more candidates than m = n_KD × batch
  assert set(score_store.read_scores(report["scoring"]["store"]).keys()) == remainder
  assert set(json.load(open(report["selection"]["selected"]))) <= remainder


@pytest.mark.integration
def test_pipeline_reports_the_tie_fraction(pipeline_report):
  _, report = pipeline_report
  s = score_store.read_scores(report["scoring"]["store"]).columns["salt_ds"]
  values, counts = np.unique(s, return_counts=True)
  assert report["selection"]["tie_fraction_pool"] == pytest.approx(counts.max() / len(s))
  assert report["selection"]["tie_score_pool"] == pytest.approx(values[counts.argmax()])
  assert report["config"]["out_of_top_k"] == "remove" and report["config"]["average"] == "sequence"


@pytest.mark.integration
def test_pipeline_rerun_reuses_every_stage(pipeline_report):
  import glob  # pylint: disable=g-import-not-at-top
  kw, report = pipeline_report
  marks = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(kw["root"], "*", "stage.json"))}
  assert len(marks) == 6  # teacher, teacher_eval, scorer_data, score, select, student_salt_ds
  again = salt_pipeline.run(**kw)
  assert {p: os.stat(p).st_mtime_ns for p in marks} == marks and again["summary"] == report["summary"]


# --- resuming on either side of n_KD continues exactly ----------------------------------------------------------------
def _params(model_dir, step=None):
  return jax.tree.leaves(checkpoints.load_params(model_dir, step=step)[1])


@pytest.mark.integration
def test_resume_on_either_side_of_the_switch_is_bit_exact(tmp_path, pipeline_report):
  teacher_dir = pipeline_report[1]["teacher"]["model_dir"]  # a tiny teacher trained for 3 steps (vocabulary 384)
  V, B, T, n_kd, steps = 384, 8, 16, 3, 6
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=V), num_steps=steps, batch_size=B,
                           sequence_length=T, optimizer=trainer.OptimizerConfig(warmup_steps=1), checkpoint_every=100,
                           log_every=1)
  source = synthetic_source(vocab_size=V, batch_size=B, sequence_length=T)
  factory = salt_kd_loss_factory(0.667, 0.25, n_kd=n_kd)
  kw = dict(spec=spec, batch_source=source, keep_checkpoints=None, progress_bar=False, loss_phases=[(n_kd, factory)],
            frozen_model_dirs={"teacher": teacher_dir}, mesh_data=1, devices=jax.devices()[:1])
  straight = trainer.train(model_dir=str(tmp_path / "straight"), **kw)
  for stop in (4, None):  # pre-empted after the switch: the resumed run picks the plain phase from the step
    resumed = trainer.train(model_dir=str(tmp_path / "resumed"), stop_at_step=stop, **kw)
  # the pipeline's segments: stopped at 2 and resumed into the KD phase, stopped at n_KD = 3 and resumed without the
  # teacher (after n_KD it is not even loaded)
  salt_pipeline.train_segments(str(tmp_path / "segments"), spec, source, vocab_size=None, stops=[2], n_kd=n_kd,
                               kd_factory=factory, teacher_dir=teacher_dir, mesh_data=1, devices=jax.devices()[:1],
                               progress_bar=False)
  assert sorted(os.listdir(tmp_path / "segments" / "checkpoints")) == ["2", "3", "6"]
  want = _params(str(tmp_path / "straight"))
  for name in ("resumed", "segments"):
    for a, b in zip(want, _params(str(tmp_path / name))):
      np.testing.assert_array_equal(a, b)
  assert resumed.last_train_metrics["loss"] == straight.last_train_metrics["loss"]
  rows = [r for r in map(json.loads, open(tmp_path / "segments" / "metrics.jsonl")) if r["split"] == "train"]
  assert [r["step"] for r in rows if "omega" in r] == [1, 2, 3] and [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


# --- the SALT configs: the paper's settings -----------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["methods/salt_cpu.gin", "paper/salt_2p8b.gin"])
def test_salt_configs_follow_the_paper(config):
  """UL2 examples that fill the row, evaluated at the full length; per-sequence means (Algorithm 1); eq. 11 with the
  out-of-top-k losses removed; SALT_DS's candidates the stream's split less what ζ_{n0} trained on."""
  import inspect  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    cli.setup(cli.parse_args([f"--gin_file={config}"]))

    def value(name):
      try:
        return gin.query_parameter(f"salt.{name}")
      except ValueError:
        return inspect.signature(salt_pipeline.run).parameters[name].default

    assert value("eval_sequence_length") in (None, gin.query_parameter("%L"))
    assert value("feature_converter") == "prefix_lm_shared"
    assert (value("average"), value("out_of_top_k"), value("pool_split"), value("exclude_scorer_data")) == (
        "sequence", "remove", "train", True)
  finally:
    gin.clear_config()


# --- the paper's configuration, traced abstractly ---------------------------------------------------------------------
@pytest.fixture
def paper_specs():
  gin.clear_config()
  cli.setup(cli.parse_args(["--gin_file=paper/salt_2p8b.gin"]))  # imports `tasks` (ul2_mixture)
  specs = {}
  for scope in ("teacher", "student"):
    with gin.config_scope(scope):
      specs[scope] = gin.get_configurable("TrainSpec")()
  n_kd, omega, rho = gin.query_parameter("%N_KD"), gin.query_parameter("salt.omega"), gin.query_parameter("salt.rho")
  yield specs, n_kd, omega, rho
  gin.clear_config()


def test_paper_config_kd_and_plain_steps_trace(paper_specs):
  specs, n_kd, omega, rho = paper_specs
  student, teacher = specs["student"], specs["teacher"]
  assert (student.batch_size, student.sequence_length, student.num_steps, n_kd, omega, rho) == (
      2048, 1280, 208_000, 36_000, 0.667, 0.25)
  assert student.model_config.vocab_size == teacher.model_config.vocab_size == 256_000
  assert (student.model_config.num_layers, teacher.model_config.num_layers) == (92, 44)
  opt = student.optimizer
  assert (opt.name, opt.schedule, opt.peak_lr, opt.warmup_steps, opt.peak_lr * opt.final_fraction) == (
      "adafactor", "cosine", 1e-3, 4000, pytest.approx(1e-4))
  # FSDP as the config asks (Adafactor's placeholders that the mesh cannot split are replicated).
  common_kw = dict(batch_size=student.batch_size, sequence_length=student.sequence_length, optimizer=opt,
                   num_steps=student.num_steps, prefix_lm=True, fsdp=True)
  _, kd_metrics = trainer.abstract_train_step(
      student.model_config, loss_factory=salt_kd_loss_factory(omega, rho, n_kd=n_kd),
      frozen_configs={"teacher": teacher.model_config}, **common_kw)
  assert {"omega", "kd", "kl_teacher_student"} <= set(kd_metrics)
  state, plain_metrics = trainer.abstract_train_step(student.model_config, **common_kw)
  assert "omega" not in plain_metrics and plain_metrics["loss"].shape == () and int(state.step.size) == 1
