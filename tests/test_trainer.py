"""The training loop in-process: a NaN stops it with a clear error and keeps the last good checkpoint; it learns."""
import os

import numpy as np
import pytest

from bliss_jax.data.synthetic import synthetic_source
from bliss_jax.models.config import preset
from bliss_jax.training import trainer


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


def test_nan_loss_stops_with_named_step_and_keeps_last_good_checkpoint(tmp_path):
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step 6.*last good checkpoint \(step 4\)"):
    trainer.train(model_dir=str(tmp_path), model_config=preset("tiny", vocab_size=128),
                  batch_source=_poisoned_source(poison_position=5), num_steps=10, batch_size=4, sequence_length=16,
                  optimizer=trainer.OptimizerConfig(warmup_steps=2), eval_every=0, checkpoint_every=2,
                  progress_bar=False, mesh_data=1,
                  devices=__import__("jax").devices()[:1])
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_vocab_mismatch_is_refused(tmp_path):
  with pytest.raises(ValueError, match="smaller than the task vocabulary"):
    trainer.train(model_dir=str(tmp_path), model_config=preset("tiny", vocab_size=100), vocab_size=300,
                  batch_source=None, progress_bar=False)
