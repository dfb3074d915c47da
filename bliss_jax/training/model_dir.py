"""A training run's directory (MODEL_DIR) and where each of its records lives.

  checkpoints/<step>/          orbax checkpoints (`checkpoints`); rejected_checkpoints/<step>/ those set aside
  model_config.json            the resolved model shape
  run_config.json              the computation-relevant configuration (`run_config`)
  vocabulary.json              the vocabulary the model was trained with and the tasks read (`model_vocabulary`)
  metrics.jsonl                one JSON object per step and split (`metric_writers`)
  tensorboard/<split>/         TensorBoard event files
"""
import json
import os
import shutil
from typing import List, Optional, Sequence

from bliss_jax.training import run_config

CHECKPOINTS = "checkpoints"
REJECTED_CHECKPOINTS = "rejected_checkpoints"
MODEL_CONFIG = "model_config.json"
RUN_CONFIG = "run_config.json"
VOCABULARY = "vocabulary.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"


class ModelDir:
  """The files of the MODEL_DIR at `path` (which need not exist yet)."""

  def __init__(self, path: str):
    self.path = os.fspath(path)

  def __repr__(self) -> str:
    return f"ModelDir({self.path!r})"

  def file(self, name: str) -> str:
    """The path of record `name` (a plain file name) in this MODEL_DIR."""
    return os.path.join(self.path, name)

  @property
  def checkpoints_dir(self) -> str:
    return self.file(CHECKPOINTS)

  def checkpoint_dir(self, step: int) -> str:
    return os.path.join(self.checkpoints_dir, str(step))

  @property
  def rejected_dir(self) -> str:
    return self.file(REJECTED_CHECKPOINTS)

  def checkpoint_steps(self) -> List[int]:
    """The finished checkpoints' steps, ascending; unfinished saves' directories do not count."""
    ckpt = self.checkpoints_dir
    return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) if os.path.isdir(ckpt) else []

  def latest_step(self) -> Optional[int]:
    """The newest finished checkpoint's step (None if there is none)."""
    return max(self.checkpoint_steps(), default=None)

  @property
  def model_config_path(self) -> str:
    return self.file(MODEL_CONFIG)

  def write_model_config(self, cfg) -> None:
    """model_config.json: the resolved shape, so a checkpoint can be loaded without the training config."""
    from bliss_jax.models.config import as_record  # pylint: disable=g-import-not-at-top
    run_config.write_json(self.model_config_path, as_record(cfg))

  def read_model_config(self):
    from bliss_jax.models.config import ModelConfig  # pylint: disable=g-import-not-at-top
    path = self.model_config_path
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found: is {self.path} a bliss_jax MODEL_DIR?")
    with open(path) as f:
      return ModelConfig(**json.load(f))

  @property
  def run_config_path(self) -> str:
    return self.file(RUN_CONFIG)

  def _read_json(self, path: str) -> Optional[dict]:
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def read_run_config(self) -> Optional[dict]:
    """run_config.json's record, or None if the run has none."""
    return self._read_json(self.run_config_path)

  def write_run_config(self, record: dict) -> None:
    run_config.write_json(self.run_config_path, record)

  @property
  def vocabulary_path(self) -> str:
    return self.file(VOCABULARY)

  def read_vocabulary(self) -> Optional[dict]:
    """vocabulary.json's record (`data.vocabulary.vocabulary_record` plus the `tasks` trained on), or None if the run
    recorded none (written before runs recorded their vocabulary, or trained on a source without SeqIO tasks)."""
    return self._read_json(self.vocabulary_path)

  def write_vocabulary(self, record: dict) -> None:
    run_config.write_json(self.vocabulary_path, record)

  @property
  def metrics_path(self) -> str:
    return self.file(METRICS)

  def metrics(self, split: Optional[str] = None) -> List[dict]:
    """The rows of metrics.jsonl in file order (those of `split` only, if given); [] when there is no file."""
    if not os.path.exists(self.metrics_path):
      return []
    with open(self.metrics_path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    return rows if split is None else [r for r in rows if r.get("split") == split]

  def tensorboard_dir(self, split: Optional[str] = None) -> str:
    root = self.file(TENSORBOARD)
    return root if split is None else os.path.join(root, split)

  def copy_at_step(self, dst: str, step: int, records: Sequence[str] = (MODEL_CONFIG, RUN_CONFIG, VOCABULARY, METRICS)) -> None:
    """Start MODEL_DIR `dst` from this one's checkpoint at `step`, with copies of those of `records` that exist here;
    atomically (written under `dst`.tmp, then renamed). Nothing happens when `dst` exists."""
    if os.path.exists(dst):
      return
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    copy = ModelDir(tmp)
    shutil.copytree(self.checkpoint_dir(step), copy.checkpoint_dir(step))
    for name in records:
      if os.path.exists(self.file(name)):
        shutil.copy(self.file(name), copy.file(name))
    os.replace(tmp, dst)
