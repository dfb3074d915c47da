"""Metrics to `MODEL_DIR/metrics.jsonl` (one JSON object per step and split) and to TensorBoard event files.

TensorBoard writing and the writer interface are clu's; clu has no JSON-lines writer, so `JsonlWriter` adds one.
A text value among the scalars (e.g. the held-out rows' `eval_sample`, which batches they average) goes to
metrics.jsonl only. Only process 0 writes.
"""
import json
import os

import jax
from clu import metric_writers

from bliss_jax.training.model_dir import ModelDir


class JsonlWriter(metric_writers.MetricWriter):
  """Appends `{"step": s, "split": ..., **scalars}` lines (text values as they are); flushed every write, so a killed
  run keeps its history."""

  def __init__(self, path: str, split: str):
    self._path, self._split = path, split

  def write_scalars(self, step, scalars):
    row = {"step": int(step), "split": self._split}
    row.update({k: v if isinstance(v, str) else float(v) for k, v in scalars.items()})
    with open(self._path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class SummaryWriter(metric_writers.SummaryWriter):
  """clu's TensorBoard writer, given the numeric scalars only (TensorBoard has no text scalars)."""

  def write_scalars(self, step, scalars):
    super().write_scalars(step, {k: v for k, v in scalars.items() if not isinstance(v, str)})


def make_writer(model_dir: str, split: str, *, start_step: int) -> metric_writers.MetricWriter:
  """TensorBoard under MODEL_DIR/tensorboard/<split> plus MODEL_DIR/metrics.jsonl (no-op on processes > 0), for a run
  that continues after `start_step`: `split` rows past it (written by a run that died before its next checkpoint) are
  dropped first."""
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  run = ModelDir(model_dir)
  _truncate_jsonl(run.metrics_path, split, start_step)
  tb = SummaryWriter(run.tensorboard_dir(split))
  return metric_writers.MultiWriter([tb, JsonlWriter(run.metrics_path, split)])


def _truncate_jsonl(path: str, split: str, after_step: int) -> None:
  """Drop `split` rows past `after_step`."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    rows = [line for line in f if line.strip()]
  keep = [r for r in rows if not (json.loads(r).get("split") == split and json.loads(r)["step"] > after_step)]
  if len(keep) != len(rows):
    with open(path, "w") as f:
      f.writelines(keep)
