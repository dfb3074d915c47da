"""`models.dense_dot`: the dense layers' dot_general on CPU has lax.dot_general's values and derivatives (reverse,
forward, second order), and its backward pass compiles to standard-layout dots only."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax.models.dense_dot import dense_dot_general, dense_dot_general_for_backend

DENSE = (((2,), (0,)), ((), ()))  # nn.Dense on [B, T, K] x [K, N]
DENSE_GENERAL_OUT = (((2, 3), (0, 1)), ((), ()))  # the attention's output projection: [B, T, H, D] x [H, D, N]
DENSE_3 = (((3,), (0,)), ((), ()))  # a head on chunks of positions: [n, B, length, K] x [K, N]


def _operands(x_shape, w_shape):
  return (jax.random.normal(jax.random.PRNGKey(0), x_shape), jax.random.normal(jax.random.PRNGKey(1), w_shape))


@pytest.mark.parametrize("x_shape,w_shape,dims", [((3, 5, 8), (8, 4), DENSE), ((3, 5, 8), (8, 4, 2), DENSE),
                                                  ((3, 5, 4, 2), (4, 2, 8), DENSE_GENERAL_OUT)])
def test_values_gradients_jvp_and_hvp_equal_lax_dot_general(x_shape, w_shape, dims):
  x, w = _operands(x_shape, w_shape)
  ref = lambda x, w: jnp.sum(jnp.sin(jax.lax.dot_general(x, w, dims)))
  ours = lambda x, w: jnp.sum(jnp.sin(dense_dot_general(x, w, dims)))
  tol = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dense_dot_general(x, w, dims), jax.lax.dot_general(x, w, dims), **tol)
  for a, b in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(ref, (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, **tol)
  tangents = (0.3 * x, -0.7 * w)
  np.testing.assert_allclose(jax.jvp(ours, (x, w), tangents)[1], jax.jvp(ref, (x, w), tangents)[1], **tol)
  hvp = lambda f: jax.jvp(jax.grad(f, 1), (x, w), tangents)[1]  # forward over reverse, as BLISS's HVP
  np.testing.assert_allclose(hvp(ours), hvp(ref), **tol)


def test_other_contractions_and_dtypes_go_to_lax_dot_general():
  x, w = _operands((3, 4), (5, 4))
  transposed = (((1,), (1,)), ((), ()))  # contracts the kernel's LAST axis: not a dense layer's
  np.testing.assert_allclose(dense_dot_general(x, w, transposed), x @ w.T, rtol=1e-6)
  y = dense_dot_general(x.astype(jnp.bfloat16), w.T, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  assert y.dtype == jnp.float32


def _dots(f, *args):
  text = jax.jit(f).lower(*args).compile().as_text()
  return re.findall(r"dot\([^\n]*?lhs_contracting_dims=\{([\d,]*)\}, rhs_contracting_dims=\{([\d,]*)\}", text)


def test_the_backward_pass_compiles_to_standard_layout_dots_only():
  """Every dot of the compiled gradient contracts the LHS's last axis with the RHS's first ([M, K] · [K, N], what
  XLA:CPU's library backend runs); autodiff through lax.dot_general leaves a transposed one."""
  x, w = _operands((16, 32, 64), (64, 128))
  grad = lambda f: jax.grad(lambda x, w: jnp.sum(jax.nn.silu(f(x, w, DENSE)) ** 2), (0, 1))
  ours, ref = _dots(grad(dense_dot_general), x, w), _dots(grad(jax.lax.dot_general), x, w)
  assert ours and set(ours) == {("1", "0")}, ours
  assert set(ref) != {("1", "0")}, ref  # the case the module exists for


def test_chosen_on_cpu_only(monkeypatch):
  monkeypatch.delenv("BLISS_JAX_DENSE_DOT", raising=False)
  assert dense_dot_general_for_backend("cpu") is dense_dot_general
  assert dense_dot_general_for_backend("tpu") is None and dense_dot_general_for_backend("gpu") is None
  monkeypatch.setenv("BLISS_JAX_DENSE_DOT", "xla")  # XLA's own dots on every backend
  assert dense_dot_general_for_backend("cpu") is None
  monkeypatch.setenv("BLISS_JAX_DENSE_DOT", "off")
  with pytest.raises(ValueError, match="BLISS_JAX_DENSE_DOT='off'"):
    dense_dot_general_for_backend("cpu")


def _computation(text, name):
  """The body of the computation `name` in compiled HLO text, with the computations it calls (fusions), recursively."""
  body = re.search(r"^%" + re.escape(name) + r" .*?\n(.*?)\n\}", text, re.M | re.S).group(1)
  return body + "".join(_computation(text, c) for c in re.findall(r"calls=%([\w.\-]+)", body))


def test_the_weights_transpose_is_computed_once_outside_a_loop_over_inputs():
  """The chunked output head's pattern: a scan over input chunks, each taking the vjp of x·W with the same W. Wᵀ
  does not depend on the chunk, so the compiled program transposes W once, outside the loop (xᵀ and Wᵀ sit behind
  separate barriers; behind one barrier, Wᵀ was recomputed in every iteration)."""
  x, w = _operands((4, 16, 64), (64, 96))

  def head(x, w):
    def body(d_w, chunk):
      y, pull = jax.vjp(lambda w, h: dense_dot_general(h, w, (((1,), (0,)), ((), ()))), w, chunk)
      dw, dh = pull(jnp.tanh(y))
      return d_w + dw, dh
    return jax.lax.scan(body, jnp.zeros_like(w), x)

  text = jax.jit(head).lower(x, w).compile().as_text()
  loop = _computation(text, re.search(r"while\(.*?body=%([\w.\-]+)", text).group(1))
  assert re.search(r"f32\[16,64\][^\n]*dot\(", loop)  # dh = ȳ·Wᵀ is in the loop ...
  assert not re.search(r"f32\[96,64\]\{[\d,]*\} (transpose|copy|fusion)", loop), loop  # ... Wᵀ is not made there
  assert re.search(r"f32\[96,64\]\{[\d,]*\} (transpose|copy|fusion)", text)  # it is made once, before the loop


def test_a_batch_axis_sharded_behind_an_unsharded_one_stays_sharded():
  """Rows sharded over 8 devices behind an unsharded leading axis ([n, B, length, d], the target's logits in the
  bilevel step's chunks): each device computes its own rows' outputs, as with `lax.dot_general`, instead of gathering
  every row (a merge of the leading axes hid the sharded one from XLA's SPMD partitioner)."""
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
  x = jax.ShapeDtypeStruct((4, 64, 16, 32), jnp.float32, sharding=NamedSharding(mesh, P(None, "data")))
  w = jax.ShapeDtypeStruct((32, 1024), jnp.float32, sharding=NamedSharding(mesh, P()))
  for dot in (jax.lax.dot_general, dense_dot_general):
    f = jax.jit(lambda a, b: dot(a, b, DENSE_3), out_shardings=NamedSharding(mesh, P(None, "data")))  # pylint: disable=cell-var-from-loop
    m = f.lower(x, w).compile().memory_analysis()
    # this device's outputs are 4 x 8 x 16 x 1024 floats (2 MiB); gathered, every row's would be 16 MiB of temporaries
    assert m.temp_size_in_bytes < m.output_size_in_bytes, (dot, m.temp_size_in_bytes, m.output_size_in_bytes)
