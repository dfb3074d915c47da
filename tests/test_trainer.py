"""The training loop in-process: a NaN stops it with a clear error and keeps the last good checkpoint; it learns."""
import os

import numpy as np
import pytest

from bliss_jax.data.synthetic import synthetic_source
from bliss_jax.models.config import preset
from bliss_jax.training import run_loop, trainer


def _poisoned_source(poison_position):
  """The synthetic stream, with float loss weights that are NaN in batch `poison_position`."""
  base = synthetic_source(vocab_size=128, batch_size=4, sequence_length=16)

  def source(split, *, start_position=0, **kw):
    it = base(split, start_position=start_position, **kw)

    def gen():
      for b in it:
        w = b["decoder_loss_weights"].astype(np.float32)
        if split == "train" and it.position - 1 == poison_position:
          w[0, 3] = np.nan
        yield dict(b, decoder_loss_weights=w)
    return gen()
  return source


@pytest.mark.parametrize("prefetch", [0, 2])
def test_nan_loss_stops_with_named_step_and_keeps_last_good_checkpoint(tmp_path, prefetch):
  with pytest.raises(run_loop.NonFiniteLossError, match=r"at step 6.*last good checkpoint \(step 4\)"):
    spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=128), num_steps=10, batch_size=4,
                             sequence_length=16, optimizer=trainer.OptimizerConfig(warmup_steps=2), eval_every=0,
                             checkpoint_every=2)
    trainer.train(model_dir=str(tmp_path), spec=spec, batch_source=_poisoned_source(poison_position=5),
                  progress_bar=False, mesh_data=1, devices=__import__("jax").devices()[:1], prefetch_batches=prefetch)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_vocab_mismatch_is_refused(tmp_path):
  with pytest.raises(ValueError, match="smaller than the task vocabulary"):
    trainer.train(model_dir=str(tmp_path), spec=trainer.TrainSpec(model_config=preset("tiny", vocab_size=100),
                                                                   num_steps=1000),
                  vocab_size=300, batch_source=None, progress_bar=False)


@pytest.mark.integration
def test_adafactor_on_a_4x2_mesh_matches_one_device(tmp_path):
  """Adafactor's factored moments have other ranks than their parameters; they are replicated, and training
  on a 4 x 2 mesh follows the 1-device run."""
  import jax
  from bliss_jax.training import checkpoints

  def run(name, **mesh):
    src = synthetic_source(vocab_size=128, batch_size=8, sequence_length=16)
    spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=128), num_steps=3, batch_size=8,
                             sequence_length=16, optimizer=trainer.OptimizerConfig(name="adafactor", warmup_steps=1),
                             eval_every=0, checkpoint_every=3)
    return trainer.train(model_dir=str(tmp_path / name), spec=spec, batch_source=src, progress_bar=False, **mesh)

  one = run("one", mesh_data=1, devices=jax.devices()[:1])
  sharded = run("sharded", mesh_data=4, mesh_model=2)
  assert np.isfinite(one.last_train_metrics["loss"])
  assert sharded.last_train_metrics["loss"] == pytest.approx(one.last_train_metrics["loss"], rel=1e-5)
  _, p1 = checkpoints.load_params(str(tmp_path / "one"))
  _, p8 = checkpoints.load_params(str(tmp_path / "sharded"))
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_rerunning_a_finished_run_keeps_one_final_evaluation_and_returns_it(tmp_path):
  from bliss_jax.training.model_dir import ModelDir
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=128), num_steps=3, batch_size=4, sequence_length=16,
                           optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=2, checkpoint_every=2)
  kw = dict(model_dir=str(tmp_path), spec=spec, progress_bar=False, mesh_data=1,
            devices=__import__("jax").devices()[:1], eval_batches=2,
            batch_source=synthetic_source(vocab_size=128, batch_size=4, sequence_length=16))
  first = trainer.train(**kw)
  again = trainer.train(**kw)
  rows = ModelDir(str(tmp_path)).metrics("validation")
  assert [r["step"] for r in rows] == [2, 3]
  assert again.last_eval == first.last_eval and again.final_step == 3


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_training_stream_without_a_batch_is_named_not_a_bare_stop_iteration(tmp_path, prefetch):
  def empty_source(split, *, start_position=0, **kw):
    return iter(())
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=128), num_steps=3, batch_size=4, sequence_length=16,
                           optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=0, checkpoint_every=2)
  with pytest.raises(ValueError, match=r"training data \(the batch source\) yields no batch: its 'train' split is "
                                       r"empty or shorter than one batch of 4 x 16 tokens"):
    trainer.train(model_dir=str(tmp_path), spec=spec, batch_source=empty_source, progress_bar=False, mesh_data=1,
                  devices=__import__("jax").devices()[:1], prefetch_batches=prefetch)


def test_batches_prefetched_on_a_thread_train_bit_identically(tmp_path):
  """`prefetch_batches` changes where batches are read and placed, not which: same metrics rows, same parameters."""
  import jax
  from bliss_jax.training import checkpoints
  from bliss_jax.training.model_dir import ModelDir
  spec = trainer.TrainSpec(model_config=preset("tiny", vocab_size=128), num_steps=5, batch_size=4, sequence_length=16,
                           optimizer=trainer.OptimizerConfig(warmup_steps=1), eval_every=0, checkpoint_every=5,
                           log_every=1)
  rows, params = {}, {}
  for k in (0, 3):
    trainer.train(model_dir=str(tmp_path / str(k)), spec=spec, progress_bar=False, mesh_data=1,
                  devices=jax.devices()[:1], prefetch_batches=k,
                  batch_source=synthetic_source(vocab_size=128, batch_size=4, sequence_length=16))
    rows[k] = [{key: v for key, v in r.items() if key != "tokens_per_sec"}
               for r in ModelDir(str(tmp_path / str(k))).metrics("train")]
    params[k] = checkpoints.load_params(str(tmp_path / str(k)))[1]
  assert len(rows[0]) == 5 and rows[3] == rows[0]
  for a, b in zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[3])):
    np.testing.assert_array_equal(a, b)
