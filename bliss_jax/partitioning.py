"""Device mesh, logical-axis rules, shardings for train state and batches, and multi-host start-up.

Models name their axes logically ("batch", "embed", "mlp", ...); this module maps those names to the mesh axes
("data", "model") with an ordered list of rules, as t5x does. A logical axis takes the first rule whose mesh axis is not
already used by another dimension of the same array, so ("embed", "data") shards parameters FSDP-style while
activations, whose "batch" already holds "data", keep "embed" unsharded.
"""
import contextlib
import logging
import os
import warnings
from typing import Iterable, Iterator, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.interpreters import pxla
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "model")

# Data parallel over "data", tensor (Megatron) parallel over "model".
STANDARD_RULES = (
    ("batch", "data"),
    ("vocab", "model"),
    ("heads", "model"),
    ("mlp", "model"),
    ("kv_heads", None),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("layers", None),
)
# Also shard every parameter's "embed" dimension over "data" (ZeRO-3 / FSDP): parameters and optimizer state are
# split across data-parallel replicas and all-gathered for use.
FSDP_RULES = (("batch", "data"), ("embed", "data")) + STANDARD_RULES[1:]


def logical_rules(fsdp: bool = False):
  return FSDP_RULES if fsdp else STANDARD_RULES


def make_mesh(data: int = -1, model: int = 1, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A ("data", "model") mesh over `devices` (default: all). `data=-1` takes every device left after `model`."""
  devices = list(jax.devices() if devices is None else devices)
  if data == -1:
    if len(devices) % model:
      raise ValueError(f"model parallelism {model} does not divide the {len(devices)} devices")
    data = len(devices) // model
  if data * model != len(devices):
    raise ValueError(f"mesh data={data} x model={model} != {len(devices)} devices")
  if len(devices) == len(jax.devices()):
    # Topology-aware device order on TPU/GPU. Auto axes: XLA's sharding propagation fills in what the logical
    # constraints leave open (JAX's default for make_mesh is Explicit sharding-in-types).
    return jax.make_mesh((data, model), MESH_AXES, devices=devices, axis_types=(AxisType.Auto,) * 2)
  return Mesh(np.asarray(devices).reshape(data, model), MESH_AXES)


def _fit(spec: P, shape, mesh: Mesh) -> P:
  """Replicate leaves whose spec does not fit them: another rank, or a dimension its mesh axes do not divide (e.g.
  Adafactor's factored moments and its (1,)-shaped placeholders for vectors)."""
  if len(spec) != len(shape):
    return P()
  for dim, axes in zip(shape, spec):
    names = () if axes is None else axes if isinstance(axes, tuple) else (axes,)
    if dim % int(np.prod([mesh.shape[n] for n in names])):
      return P()
  return spec


def constrain(x: jax.Array, logical_axes: Sequence[Optional[str]]) -> jax.Array:
  """`x` laid out over the current mesh by its logical axis names (the rules of `mesh_context`; a dimension its mesh
  axes do not divide leaves `x` unconstrained) with `jax.lax.with_sharding_constraint`; `x` itself outside a mesh.
  flax 0.12's `nn.with_logical_constraint` adds no constraint under `mesh_context` on JAX 0.10 (tested)."""
  mesh = pxla.thread_resources.env.physical_mesh
  if mesh.empty:
    return x
  spec = _fit(nn.logical_to_mesh_axes(tuple(logical_axes)), x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec)) if len(spec) else x


def shardings_for(abstract_boxed, abstract_unboxed, mesh: Mesh, rules) -> object:
  """NamedShardings for a pytree from its logically-annotated abstract value.

  `abstract_boxed` is the `jax.eval_shape` of the tree built from boxed (nn.LogicallyPartitioned) parameters;
  `abstract_unboxed` the same tree as it is used (plain arrays), which fixes the structure and ranks.
  """
  specs = nn.logical_to_mesh(nn.get_partition_spec(abstract_boxed), rules)
  return jax.tree.map(lambda s, x: NamedSharding(mesh, _fit(s, np.shape(x), mesh)), specs, abstract_unboxed,
                      is_leaf=lambda s: isinstance(s, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Examples split over "data" (and replicated over "model")."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_array(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A (possibly multi-host) global array from the full host value `x` that every process holds."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def replicate_params(params, mesh: Mesh):
  """`params` replicated over `mesh`, leaving leaves that already live on it (e.g. tensor-parallel shards) alone."""
  repl = replicated(mesh)

  def place(x):
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
      return x
    return global_array(np.asarray(x), repl)

  return jax.tree.map(place, params)


def global_batch_from_local(local_batch: dict, mesh: Mesh) -> dict:
  """Assemble each process's slice of the batch (leading dim = global batch / process_count) into global arrays. With
  one process the slice is the whole batch: one `jax.device_put` of the dict (one call for all its arrays)."""
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put({k: np.asarray(v) for k, v in local_batch.items()}, sharding)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def aligned_over_processes(local_batches: Iterable[dict]) -> Iterator[dict]:
  """This process's batches, continued with all-zero batches of the same shapes until every process has run out, so
  that all processes assemble the same number of global batches (zero rows carry no loss weight). With one process,
  `local_batches` as they are."""
  if jax.process_count() == 1:
    yield from local_batches
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local_batches, last = iter(local_batches), None
  while True:
    batch = next(local_batches, None)
    if not multihost_utils.process_allgather(np.array(batch is not None)).any():
      return
    if batch is None:
      if last is None:
        raise ValueError(f"process {jax.process_index()} has no batch of a split the others read")
      batch = {k: np.zeros_like(v) for k, v in last.items()}
    last = batch
    yield batch


def initialize_distributed(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, cpu_collectives: str = "gloo") -> bool:
  """Start multi-host JAX when asked to (flags, or BLISS_JAX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID env vars).

  On TPU pods and SLURM/Kubernetes clusters, `jax.distributed.initialize()` with no arguments discovers the job; set
  BLISS_JAX_DISTRIBUTED=auto for that. Returns whether distributed mode was started. On CPU the cross-process
  collectives use gloo.
  """
  coordinator_address = coordinator_address or os.environ.get("BLISS_JAX_COORDINATOR")
  if num_processes is None and "BLISS_JAX_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["BLISS_JAX_NUM_PROCESSES"])
  if process_id is None and "BLISS_JAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["BLISS_JAX_PROCESS_ID"])
  auto = os.environ.get("BLISS_JAX_DISTRIBUTED") == "auto"
  if not coordinator_address and not auto:
    return False
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if auto:
    jax.distributed.initialize()
  else:
    if num_processes is None or process_id is None:
      raise ValueError("multi-host: a coordinator address was given without num_processes and process_id")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules):
  """Activate `mesh` and the logical-axis `rules` for tracing (`constrain` and flax's parameter layouts read both).

  Uses the `with mesh:` context, which `constrain` reads (flax 0.12's `with_logical_constraint` adds nothing here);
  `jax.set_mesh` trips flax's DenseGeneral kernel constraints on this JAX version, so the deprecation warning is
  silenced here, in one place.
  """
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*with mesh.*deprecated", category=DeprecationWarning)
    with mesh, nn.logical_axis_rules(rules):
      yield
