"""Orbax checkpoints of the train state plus the data-pipeline position, keep-last-N, resume from the latest.

Each checkpoint directory `MODEL_DIR/checkpoints/<step>/` holds two items: `state` (the sharded TrainState, written by
every process) and `data` (JSON: the batch iterator's position and anything else the loop needs to resume exactly).
Orbax writes to a temporary directory and renames it when complete, so a killed save never shadows a good checkpoint.
"""
import os
from typing import Optional

import orbax.checkpoint as ocp


def make_manager(model_dir: str, *, max_to_keep: Optional[int] = 3, save_interval_steps: int = 1) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
                                         create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(model_dir), "checkpoints"), options=options,
                               item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state, data: dict, *, force: bool = False) -> bool:
  saved = manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     data=ocp.args.JsonSave(data)), force=force)
  manager.wait_until_finished()
  return saved


def restore(manager: ocp.CheckpointManager, abstract_state, step: Optional[int] = None):
  """(state, data) of `step` (default: latest), or None if there is none.

  `abstract_state` is a pytree of `jax.ShapeDtypeStruct`s carrying the target shardings.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                      data=ocp.args.JsonRestore()))
  return out.state, out.data
