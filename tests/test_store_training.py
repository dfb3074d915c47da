"""Training and scoring over a chunk store: the same losses as training on the selection's packed SeqIO task in the
same seeded order; a run stopped and resumed at an arbitrary step ends bit-exactly where the uninterrupted one does; scores as
columns equal `score_split`'s, and an interrupted scoring resumes."""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from bliss_jax import partitioning
from bliss_jax.data import chunk_store, pipeline, seqio_tasks
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer
from bliss_jax.selection import offline_scoring, score_columns, scorers
from bliss_jax.selection.selected_task import register_selected_task, selected_store_source
from bliss_jax.training import checkpoints, trainer

L, B = 16, 4
TASK = "store_train_lm"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
  words = "a value is set to each name in the list as it ends".split()  # chunks of 2 to 16 bytes: rows pack
  docs = [(f"t:{i}", " ".join(words[(i + j) % len(words)] for j in range(1 + (5 * i) % 9))) for i in range(24)]
  seqio_tasks.register_document_task(TASK, lambda: docs, seqio.ByteVocabulary(), validation_fraction=0.0)
  directory = str(tmp_path_factory.mktemp("chunks") / "store")
  chunk_store.write_chunk_store(directory, TASK, "train", L, num_shards=2)
  return directory


def _train(model_dir, source, **over):
  spec = dict(model_config=preset("tiny", vocab_size=512), num_steps=6, batch_size=B, sequence_length=L,
              optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=0, checkpoint_every=1, log_every=1)
  spec.update(over.pop("spec", {}))
  return trainer.train(model_dir=str(model_dir), spec=trainer.TrainSpec(**spec), batch_source=source,
                       progress_bar=False, mesh_data=1, devices=jax.devices()[:1], **over)


def _losses(model_dir):
  rows = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def test_store_source_trains_as_the_selected_seqio_task_in_the_same_order(store, tmp_path):
  """The pipelines' replacement of a registered selection: the same packed batches in the same seeded order."""
  keys = chunk_store.ChunkStore(store).keys()
  selection = [keys[i] for i in np.random.default_rng(1).permutation(len(keys))[:10]]
  register_selected_task("store_train_selected", TASK, selection, sequence_length=L)
  _train(tmp_path / "seqio", pipeline.seqio_batch_source("store_train_selected", batch_size=B, sequence_length=L,
                                                         seed=3))
  source = selected_store_source(store, selection, batch_size=B, seed=3)
  _train(tmp_path / "store", source)
  seqio_losses, store_losses = _losses(tmp_path / "seqio"), _losses(tmp_path / "store")
  assert sorted(store_losses) == list(range(1, 7)) and store_losses == seqio_losses
  packed = [next(source("train", start_position=b)) for b in range(6)]
  assert max(x["decoder_segment_ids"].max() for x in packed) > 1  # rows hold several chunks


def test_stop_and_resume_at_an_arbitrary_step_is_bit_exact(store, tmp_path):
  source = selected_store_source(store, chunk_store.ChunkStore(store).keys()[::2], batch_size=B, seed=5)
  _train(tmp_path / "straight", source)
  _train(tmp_path / "resumed", source, stop_at_step=3)
  source.store.records_read = 0
  _train(tmp_path / "resumed", source)
  read = source.store.records_read
  # the 3 batches trained on plus at most Grain's prefetch of 2: their rows' chunks, whatever the position
  chunks = [next(source("train", start_position=b))["decoder_segment_ids"].max(axis=1).sum() for b in range(3, 8)]
  assert read <= sum(chunks)
  assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
  _, straight = checkpoints.load_params(str(tmp_path / "straight"))
  _, resumed = checkpoints.load_params(str(tmp_path / "resumed"))
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_scoring_the_store_gives_score_splits_scores_as_columns_and_resumes(store, tmp_path):
  model = Transformer(preset("tiny", vocab_size=512))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, L), jnp.int32))["params"])
  score_fn = scorers.make_lm_scorer(model)
  mesh = partitioning.make_mesh(1, 1, devices=jax.devices()[:1])
  table = offline_scoring.score_split(score_fn, params, task=TASK, split="train", store_dir=str(tmp_path / "table"),
                                      sequence_length=L, batch_size=B, mesh=mesh, progress=False)
  reader = chunk_store.ChunkStore(store)
  order = [table.keys().index(k) for k in reader.keys()]
  assert offline_scoring.score_chunk_store(score_fn, params, store_dir=store, batch_size=B, mesh=mesh,
                                           checkpoint_every=2, progress=False, stop_after_batches=3) is None
  columns = offline_scoring.score_chunk_store(score_fn, params, store_dir=store, batch_size=B, mesh=mesh,
                                              checkpoint_every=2, progress=False)
  assert sorted(columns) == ["mean_logp", "sum_logp"]
  for name, values in columns.items():
    np.testing.assert_allclose(values, table.columns[name][order], rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(score_columns.read_column(store, name), values)


_POOL_WRITER = """
import sys
import seqio
from bliss_jax.data import seqio_tasks
from bliss_jax.pipelines import common
docs = [(f"w:{i}", " ".join(["value", "name", "list", str(i)] * (20 + i % 7))) for i in range(3000)]
seqio_tasks.register_document_task("pool_race_lm", lambda: docs, seqio.ByteVocabulary(), validation_fraction=0.0)
store = common.pool_store(sys.argv[1], "pool_race_lm", "train", 64)
print(len(store), len(store.read(range(len(store)))))
"""


@pytest.mark.integration
def test_two_processes_asking_for_one_pool_store_write_it_once(tmp_path):
  """Seeds of a comparison run as processes reach the shared pool store together: one writes it, the other waits and
  reads it (they both wrote one shard's temporary file and renamed it over the other's: a corrupt or missing shard)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  procs = [subprocess.Popen([sys.executable, "-c", _POOL_WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
  counts = [tuple(int(x) for x in out.strip().splitlines()[-1].split()) for out, _ in outs]
  assert counts[0] == counts[1] and counts[0][0] == counts[0][1] > 0  # every chunk read back by both
  assert not [n for n in os.listdir(tmp_path / "chunk_stores" / "pool_race_lm.train.L64") if n.endswith(".tmp")]
