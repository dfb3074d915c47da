"""On 8 forced host CPU devices, data x model meshes (and FSDP) give the loss and gradients of 1 device.

Tolerance: 1e-5 relative / 1e-6 absolute in float32; the sharded program reduces in a different order only.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax import partitioning
from bliss_jax.data.synthetic import SyntheticBatches
from bliss_jax.losses.lm import make_lm_loss
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import Transformer

pytestmark = pytest.mark.integration  # 8 devices (paper configs: traced at paper scale)


@pytest.fixture(scope="module")
def problem():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (tests/conftest.py forces 8 host CPU devices)")
  cfg = preset("tiny", vocab_size=128)
  model = Transformer(cfg)
  boxed = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"]
  batch = next(SyntheticBatches(vocab_size=128, batch_size=8, sequence_length=16, seed=3))
  grad_fn = jax.value_and_grad(lambda p, b: make_lm_loss(model)(p, b, None)[0])
  params = nn.unbox(boxed)
  with partitioning.mesh_context(partitioning.make_mesh(1, 1, jax.devices()[:1]), partitioning.logical_rules()):
    reference = jax.jit(grad_fn)(params, batch)
  return boxed, params, batch, grad_fn, reference


@pytest.mark.parametrize("data,model,fsdp", [(4, 2, False), (2, 4, False), (8, 1, True), (4, 2, True)])
def test_sharded_loss_and_grads_equal_single_device(problem, data, model, fsdp):
  boxed, params, batch, grad_fn, (ref_loss, ref_grads) = problem
  mesh = partitioning.make_mesh(data, model)
  rules = partitioning.logical_rules(fsdp)
  with partitioning.mesh_context(mesh, rules):
    p_sh = partitioning.shardings_for(boxed, params, mesh, rules)
    sharded_params = jax.device_put(params, p_sh)
    gbatch = partitioning.global_batch_from_local(batch, mesh)
    loss, grads = jax.jit(grad_fn, in_shardings=(p_sh, partitioning.batch_sharding(mesh)),
                          out_shardings=(partitioning.replicated(mesh), p_sh))(sharded_params, gbatch)
  # the parameters really are split: e.g. the MLP's hidden dimension over "model"
  wi = sharded_params["layer_0"]["mlp"]["wi"]["kernel"]
  assert wi.sharding.shard_shape(wi.shape)[1] == wi.shape[1] // model
  if fsdp:
    assert wi.sharding.shard_shape(wi.shape)[0] == wi.shape[0] // data
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_constrain_lays_out_by_logical_axes_inside_a_mesh_only():
  """`partitioning.constrain` adds the rules' sharding under `mesh_context` (flax's `nn.with_logical_constraint`
  adds none there on this JAX), leaves a dimension its mesh axes do not divide unconstrained, and is the identity
  outside a mesh."""
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  constraints = lambda jaxpr: [e.params["sharding"].spec for e in jaxpr.eqns
                               if e.primitive.name == "sharding_constraint"]
  axes = ("batch", "length", "vocab")
  x = jnp.ones((8, 4, 16))
  assert constraints(jax.make_jaxpr(lambda y: partitioning.constrain(y, axes))(x)) == []
  with partitioning.mesh_context(partitioning.make_mesh(4, 2, jax.devices()[:8]), partitioning.logical_rules()):
    assert constraints(jax.make_jaxpr(lambda y: partitioning.constrain(y, axes))(x)) == [P("data", None, "model")]
    assert constraints(jax.make_jaxpr(lambda y: partitioning.constrain(y, axes))(jnp.ones((6, 4, 16)))) == []
