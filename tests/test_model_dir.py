"""A MODEL_DIR's layout: the latest finished checkpoint, the records, metric rows by split, a copy at a step."""
import dataclasses
import json
import os

import pytest

from bliss_jax.models.config import as_record, preset
from bliss_jax.training.model_dir import MODEL_CONFIG, ModelDir


def _run(tmp_path):
  run = ModelDir(str(tmp_path / "run"))
  for step in ("2", "4", "6.orbax-checkpoint-tmp-1700000000000000"):
    os.makedirs(os.path.join(run.checkpoints_dir, step, "state"))
    with open(os.path.join(run.checkpoints_dir, step, "state", "x"), "w") as f:
      f.write(step)
  run.write_model_config(preset("tiny", vocab_size=128))
  run.write_run_config({"num_steps": 6})
  with open(run.metrics_path, "w") as f:
    f.write(json.dumps({"step": 2, "split": "train", "loss": 3.0}) + "\n\n")
    f.write(json.dumps({"step": 2, "split": "validation", "loss": 3.5}) + "\n")
  return run


def test_records_and_the_latest_finished_checkpoint(tmp_path):
  run = _run(tmp_path)
  assert run.latest_step() == 4  # an unfinished save's directory does not count
  assert ModelDir(str(tmp_path / "empty")).latest_step() is None
  assert run.read_model_config() == preset("tiny", vocab_size=128)
  assert run.read_run_config() == {"num_steps": 6} and ModelDir(str(tmp_path)).read_run_config() is None
  assert [r["loss"] for r in run.metrics()] == [3.0, 3.5]
  assert run.metrics("validation") == [{"step": 2, "split": "validation", "loss": 3.5}]
  assert ModelDir(str(tmp_path / "empty")).metrics("train") == []
  assert run.tensorboard_dir("train") == os.path.join(run.path, "tensorboard", "train")


def test_copy_at_step_takes_one_checkpoint_and_the_records_asked_for(tmp_path):
  run = _run(tmp_path)
  full, shape_only = str(tmp_path / "full"), str(tmp_path / "shape_only")
  run.copy_at_step(full, 2)
  run.copy_at_step(shape_only, 4, records=(MODEL_CONFIG,))
  assert sorted(os.listdir(full)) == ["checkpoints", "metrics.jsonl", "model_config.json", "run_config.json"]
  assert os.listdir(ModelDir(full).checkpoints_dir) == ["2"] and ModelDir(full).metrics() == run.metrics()
  assert sorted(os.listdir(shape_only)) == ["checkpoints", "model_config.json"]
  assert open(os.path.join(ModelDir(shape_only).checkpoint_dir(4), "state", "x")).read() == "4"
  # an existing MODEL_DIR is left as it is, and no temporary directory remains
  run.copy_at_step(full, 4)
  assert os.listdir(ModelDir(full).checkpoints_dir) == ["2"]
  assert not [d for d in os.listdir(tmp_path) if d.endswith(".tmp")]


def test_the_attention_kernel_is_in_no_record(tmp_path):
  """`ModelConfig.attention` picks a kernel for the same function: model_config.json, run records and stage inputs
  (`run_config.describe`) leave it out, so a run trained with cuDNN's kernel on a GPU is evaluated on a CPU, resumed
  under another kernel, and comparison directories written before the field existed keep their finished stages."""
  from bliss_jax.training import run_config, trainer  # pylint: disable=g-import-not-at-top
  fused = preset("tiny", vocab_size=128, dtype="bfloat16", attention="cudnn")
  run = ModelDir(str(tmp_path))
  run.write_model_config(fused)
  with open(run.model_config_path) as f:
    assert "attention" not in json.load(f)
  assert run.read_model_config() == preset("tiny", vocab_size=128, dtype="bfloat16")  # attention="einsum"
  plain = preset("tiny", vocab_size=128, dtype="bfloat16")
  assert run_config.describe({"model_config": fused}) == run_config.describe({"model_config": plain})
  assert "attention" not in run_config.describe(plain)
  assert trainer.TrainSpec(fused, num_steps=4).record() == trainer.TrainSpec(plain, num_steps=4).record()
  assert "attention" not in trainer.TrainSpec(plain, num_steps=4).record()["model_config"]


def test_the_head_dtype_is_recorded_only_when_set(tmp_path):
  """`ModelConfig.head_dtype` changes the numbers, so a model, run or stage record holds it when it is set; left at its
  default it is in no record, so records written before the field existed match the same configuration."""
  from bliss_jax.training import run_config, trainer  # pylint: disable=g-import-not-at-top
  plain = preset("tiny", vocab_size=128, dtype="bfloat16")
  half_head = dataclasses.replace(plain, head_dtype="bfloat16")
  for record in (as_record(plain), run_config.describe(plain), trainer.TrainSpec(plain, num_steps=4).record()[
      "model_config"]):
    assert "head_dtype" not in record and "vocab_size" in record
  assert as_record(half_head) == dict(as_record(plain), head_dtype="bfloat16")
  assert run_config.describe(half_head) == dict(run_config.describe(plain), head_dtype="bfloat16")
  assert trainer.TrainSpec(half_head, num_steps=4).record() != trainer.TrainSpec(plain, num_steps=4).record()
  # float32 is the untied head's default dtype, but set explicitly it is recorded (a tied head's None means bfloat16)
  assert as_record(dataclasses.replace(plain, head_dtype="float32"))["head_dtype"] == "float32"
  run = ModelDir(str(tmp_path))
  run.write_model_config(half_head)
  assert run.read_model_config() == half_head
  with pytest.raises(ValueError, match="ModelConfig.head_dtype"):
    dataclasses.replace(plain, head_dtype="float16")
