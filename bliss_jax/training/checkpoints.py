"""Orbax checkpoints of the train state plus the data-pipeline position, keep-last-N, resume from the latest.

Each checkpoint directory `MODEL_DIR/checkpoints/<step>/` holds two items: `state` (the sharded TrainState, written by
every process) and `data` (JSON: the batch iterator's position and anything else the loop needs to resume exactly).
Orbax writes to a temporary directory and renames it when complete, so a killed save never shadows a good checkpoint.
"""
import dataclasses
import json
import os
from typing import Optional

import jax
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


def write_model_config(model_dir: str, cfg) -> None:
  """MODEL_DIR/model_config.json: the resolved shape, so a checkpoint can be loaded without the training config."""
  with open(os.path.join(model_dir, "model_config.json"), "w") as f:
    json.dump(dataclasses.asdict(cfg), f, indent=1, sort_keys=True)


def read_model_config(model_dir: str):
  from bliss_jax.models.config import ModelConfig  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, "model_config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {model_dir} a bliss_jax MODEL_DIR?")
  with open(path) as f:
    return ModelConfig(**json.load(f))


def abstract_params_on_device(cfg, device):
  """ShapeDtypeStructs of `Transformer(cfg)`'s parameters, placed on one device."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from bliss_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(lambda: nn.unbox(Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
                                           ["params"]))
  sharding = jax.sharding.SingleDeviceSharding(device)
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)


def load_params(model_dir: str, abstract_params=None, step: Optional[int] = None):
  """(step, params) of a MODEL_DIR's checkpoint (default: latest) without its optimizer state.

  `abstract_params`: ShapeDtypeStructs with shardings to lay the parameters out on a mesh; default: the shapes of
  MODEL_DIR/model_config.json on the first local device. Only the parameters are read, not the optimizer state.
  """
  if abstract_params is None:
    abstract_params = abstract_params_on_device(read_model_config(model_dir), jax.local_devices()[0])
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(model_dir), "checkpoints"),
                                  item_names=("state", "data"))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {model_dir}/checkpoints")
  item = {"params": abstract_params}
  restore_args = ocp.checkpoint_utils.construct_restore_args(item)
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)))
  manager.close()
  return step, out.state["params"]
