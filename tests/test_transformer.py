"""Behaviour of the decoder: masks, rotary, packing, prefix-LM, GQA/MQA, scan vs loop, bf16, cached decoding."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bliss_jax.models import transformer
from bliss_jax.models.config import preset
from bliss_jax.models.transformer import (Transformer, apply_rotary, attention_mask, cached_attention_mask,
                                         init_cache, stacked_layers)


def test_attention_mask_hand_computed():
  seg = jnp.array([[1, 1, 1, 2, 2, 0]])
  prefix = jnp.array([[1, 1, 0, 1, 0, 0]])
  m = np.asarray(attention_mask(seg, prefix))[0, 0].astype(int)
  expected = np.array([
      [1, 1, 0, 0, 0, 0],  # prefix token 0 sees prefix token 1 (bidirectional)
      [1, 1, 0, 0, 0, 0],
      [1, 1, 1, 0, 0, 0],  # target: causal
      [0, 0, 0, 1, 0, 0],  # new segment: nothing from segment 1
      [0, 0, 0, 1, 1, 0],
      [0, 0, 0, 0, 0, 1],  # padding attends only to padding
  ])
  np.testing.assert_array_equal(m, expected)
  causal = np.asarray(attention_mask(seg))[0, 0].astype(int)
  assert causal[0, 1] == 0 and causal[1, 0] == 1


def test_rotary_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)

  def score(pq, pk):
    rq = apply_rotary(q, jnp.array([[pq]]), 16, 10_000.0)
    rk = apply_rotary(k, jnp.array([[pk]]), 16, 10_000.0)
    return float(jnp.sum(rq * rk))

  assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-5)
  assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)
  # norms preserved; partial rotary leaves the tail untouched
  r = apply_rotary(q, jnp.array([[7]]), 4, 10_000.0)
  np.testing.assert_allclose(r[..., 4:], q[..., 4:])
  np.testing.assert_allclose(jnp.linalg.norm(r), jnp.linalg.norm(q), rtol=1e-6)


@pytest.fixture(scope="module", params=["tiny", "tiny_neox", "tiny_mqa"])
def model_and_params(request):
  cfg = preset(request.param)
  model = Transformer(cfg)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  return cfg, model, params


def test_packed_sequences_equal_separate_ones(model_and_params):
  _, model, params = model_and_params
  a, b = jnp.array([[3, 7, 9, 11, 4]]), jnp.array([[5, 6, 8]])
  packed = jnp.concatenate([a, b, jnp.zeros((1, 2), jnp.int32)], 1)
  seg = jnp.array([[1] * 5 + [2] * 3 + [0] * 2])
  pos = jnp.array([[0, 1, 2, 3, 4, 0, 1, 2, 0, 0]])
  out = model.apply({"params": params}, packed, segment_ids=seg, positions=pos)
  np.testing.assert_allclose(out[:, :5], model.apply({"params": params}, a), atol=2e-5)
  np.testing.assert_allclose(out[:, 5:8], model.apply({"params": params}, b), atol=2e-5)


def test_prefix_lm_sees_future_inside_prefix_only(model_and_params):
  _, model, params = model_and_params
  x = jnp.array([[3, 7, 9, 11, 4, 6]])
  y = x.at[0, 2].set(12)  # change a prefix token
  z = x.at[0, 4].set(12)  # change a target token
  prefix = jnp.array([[1, 1, 1, 0, 0, 0]])
  f = lambda t, p: model.apply({"params": params}, t, prefix_mask=p)
  # causal: position 0 cannot see position 2
  np.testing.assert_allclose(f(x, None)[:, 0], f(y, None)[:, 0], atol=1e-6)
  # prefix-LM: position 0 sees position 2 (inside the prefix) ...
  assert not np.allclose(f(x, prefix)[:, 0], f(y, prefix)[:, 0], atol=1e-4)
  # ... but no prefix position sees a target position
  np.testing.assert_allclose(f(x, prefix)[:, :4], f(z, prefix)[:, :4], atol=1e-6)


def test_gqa_equals_mha_with_repeated_kv_heads():
  cfg_gqa = preset("tiny", num_heads=4, num_kv_heads=2)
  cfg_mha = preset("tiny", num_heads=4, num_kv_heads=4)
  x = jnp.array([[3, 7, 9, 11, 4, 6]])
  p_gqa = nn.unbox(Transformer(cfg_gqa).init(jax.random.PRNGKey(1), x)["params"])
  p_mha = jax.tree.map(lambda a: a, p_gqa)
  for i in range(cfg_gqa.num_layers):
    att = dict(p_mha[f"layer_{i}"]["attention"])
    for name in ("key", "value"):
      att[name] = {"kernel": jnp.repeat(att[name]["kernel"], 2, axis=1)}  # kv head j serves query heads 2j, 2j+1
    p_mha[f"layer_{i}"] = dict(p_mha[f"layer_{i}"], attention=att)
  np.testing.assert_allclose(Transformer(cfg_gqa).apply({"params": p_gqa}, x),
                             Transformer(cfg_mha).apply({"params": p_mha}, x), atol=2e-5)


def test_scan_layers_equals_loop_with_stacked_params():
  cfg = preset("tiny")
  x = jnp.array([[3, 7, 9, 11, 4, 6]])
  p = nn.unbox(Transformer(cfg).init(jax.random.PRNGKey(2), x)["params"])
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *[p[f"layer_{i}"] for i in range(cfg.num_layers)])
  p_scan = {k: v for k, v in p.items() if not k.startswith("layer_")}
  p_scan["layers"] = {"block": stacked}
  scan_cfg = dataclasses.replace(cfg, scan_layers=True, remat=True)
  shapes = jax.eval_shape(lambda: nn.unbox(Transformer(scan_cfg).init(jax.random.PRNGKey(2), x)["params"]))
  assert jax.tree.structure(shapes) == jax.tree.structure(p_scan)
  np.testing.assert_allclose(Transformer(scan_cfg).apply({"params": p_scan}, x),
                             Transformer(cfg).apply({"params": p}, x), atol=2e-5)
  # `stacked_layers` builds that layout, differentiably: the scanned, rematerialised model on the stacked unscanned
  # parameters has the unscanned model's gradient
  jax.tree.map(np.testing.assert_array_equal, stacked_layers(cfg, p), p_scan)
  assert stacked_layers(scan_cfg, p_scan) is p_scan
  loss = lambda model, f: lambda q: jnp.sum(jax.nn.log_softmax(model.apply({"params": f(q)}, x))[0, :, 5])
  g_scan = jax.grad(loss(Transformer(scan_cfg), lambda q: stacked_layers(cfg, q)))(p)
  g_loop = jax.grad(loss(Transformer(cfg), lambda q: q))(p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_scan, g_loop)
  # boxed (logically partitioned) parameters: the scanned model's own boxes, "layers" first
  boxed = Transformer(cfg).init(jax.random.PRNGKey(2), x)["params"]
  boxed_scan = jax.eval_shape(lambda: Transformer(scan_cfg).init(jax.random.PRNGKey(2), x)["params"])
  names = lambda t: jax.tree.leaves(jax.tree.map(lambda b: b.names, t, is_leaf=lambda b: isinstance(b, nn.Partitioned)))
  assert names(stacked_layers(cfg, boxed)) == names(boxed_scan)


def test_bfloat16_compute_close_to_float32():
  cfg = preset("tiny")
  x = jnp.array([[3, 7, 9, 11, 4, 6]])
  p = nn.unbox(Transformer(cfg).init(jax.random.PRNGKey(3), x)["params"])
  out32 = Transformer(cfg).apply({"params": p}, x)
  out16 = Transformer(dataclasses.replace(cfg, dtype="bfloat16")).apply({"params": p}, x)
  assert out16.dtype == jnp.float32  # logits always come back in float32
  np.testing.assert_allclose(out16, out32, atol=0.05)
  assert not np.array_equal(out16, out32)


def test_parameters_carry_logical_axis_names():
  boxed = Transformer(preset("tiny")).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  specs = nn.get_partition_spec(boxed)
  assert tuple(specs["embed"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["layer_0"]["attention"]["query"]["kernel"]) == ("embed", "heads", "kv")
  assert tuple(specs["layer_0"]["mlp"]["wi"]["kernel"]) == ("embed", "mlp")
  assert tuple(specs["lm_head"]["kernel"]) == ("embed", "vocab")


# --- Incremental decoding from a key/value cache ------------------------------------------------------------------

DECODE_CONFIGS = {
    "gqa": preset("tiny"),  # 4 query heads over 2 key/value heads, full rotary, sequential residual
    "mha": preset("tiny", num_kv_heads=None),
    "mqa_geglu_tied": preset("tiny_mqa"),
    "neox_mha": preset("tiny_neox"),  # rotary on 25% of each head, parallel residual, LayerNorm with biases
    "neox_gqa": preset("tiny_neox", num_kv_heads=2),
    "gqa_scan_remat": preset("tiny", scan_layers=True, remat=True),
}


@pytest.mark.parametrize("name", sorted(DECODE_CONFIGS))
def test_cached_greedy_decoding_equals_step_by_step_full_forward(name, spread_params):
  cfg = DECODE_CONFIGS[name]
  model = Transformer(cfg)
  params = spread_params(nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]), 7)
  prompts = [[0, 17, 250, 3, 99, 402], [0, 5, 61]]  # rows of different lengths: the second is left-padded
  steps, width = 7, 6
  tokens = jnp.array([[0] * (width - len(p)) + p for p in prompts], jnp.int32)
  segments = jnp.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts], jnp.int32)
  positions = jnp.maximum(jnp.cumsum(segments, 1) - 1, 0)

  apply = jax.jit(model.apply)
  cache = init_cache(cfg, len(prompts), width + steps)
  logits, cache = apply({"params": params}, tokens, segment_ids=segments, positions=positions, cache=cache)
  assert int(cache["index"]) == width and cache["key"].shape == (cfg.num_layers, 2, width + steps, cfg.kv_heads,
                                                                   cfg.dim_per_head)
  last, position = logits[:, -1], positions[:, -1]
  cached = [[] for _ in prompts]
  cached_logits = [[] for _ in prompts]
  for _ in range(steps):
    token = jnp.argmax(last, -1)
    for row in range(len(prompts)):
      cached[row].append(int(token[row]))
      cached_logits[row].append(np.asarray(last[row]))
    position = position + 1
    logits, cache = apply({"params": params}, token[:, None], positions=position[:, None], cache=cache)
    last = logits[:, -1]

  for row, prompt in enumerate(prompts):  # each row alone, the whole sequence again at every step
    seq = list(prompt)
    for step in range(steps):  # (right-padded to one shape: causal attention leaves the sequence's logits alone)
      padded = jnp.array([seq + [0] * (width + steps - len(seq))], jnp.int32)
      full = apply({"params": params}, padded)[0, len(seq) - 1]
      np.testing.assert_allclose(cached_logits[row][step], full, atol=2e-4, rtol=1e-5)
      seq.append(int(jnp.argmax(full)))
    assert cached[row] == seq[len(prompt):], (name, row)
  assert len(set(cached[0] + cached[1])) > 2  # the model does not just repeat one token


def test_cached_attention_mask_hand_computed():
  # Cache of 5 positions, 3 written before (index 3): a left-padded row [pad, a, b] and a full row; 2 new tokens.
  cache_segments = jnp.array([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
  mask = np.asarray(cached_attention_mask(cache_segments, jnp.ones((2, 2), jnp.int32), 3))[:, 0].astype(int)
  np.testing.assert_array_equal(mask[0], [[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]])  # not the padding, not the future
  np.testing.assert_array_equal(mask[1], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def test_fused_attention_config_is_checked():
  with pytest.raises(ValueError, match="ModelConfig.attention"):
    preset("tiny", attention="flash")
  with pytest.raises(ValueError, match="bfloat16 or float16 only; dtype='float32'"):
    preset("tiny", attention="cudnn")


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="the refusal is for backends without cuDNN")
def test_cudnn_attention_off_gpu_is_refused():
  cfg = preset("tiny", attention="cudnn", dtype="bfloat16")
  x = jnp.array([[3, 7, 9, 11]])
  with pytest.raises(ValueError, match="runs on NVIDIA GPUs; this backend is 'cpu'"):
    Transformer(cfg).init(jax.random.PRNGKey(0), x)


def test_head_dtype_sets_the_output_matmul_dtype(spread_params):
  """`ModelConfig.head_dtype`: the output head's matmul in that dtype, its logits cast to float32. Untied in bfloat16:
  exactly the bfloat16 matmul of the final hidden states (what PyTorch's autocast computes), off the float32 head by
  bfloat16 rounding; tied in float32: the float32 matmul (None: the compute dtype)."""
  tokens = jnp.array([[3, 7, 9, 11, 4, 6, 8, 0]])
  for tied in (False, True):
    cfg = preset("tiny", dtype="bfloat16", tie_embeddings=tied)
    params = spread_params(nn.unbox(Transformer(cfg).init(jax.random.PRNGKey(3), tokens)["params"]), 5)
    weight = np.asarray(params["embed"]["embedding"]).T if tied else np.asarray(params["lm_head"]["kernel"])
    logits, hidden = Transformer(cfg).apply({"params": params}, tokens, return_hidden=True)
    by_dtype = {d: Transformer(dataclasses.replace(cfg, head_dtype=d)).apply({"params": params}, tokens)
                for d in ("float32", "bfloat16")}
    half = jnp.dot(hidden.astype(jnp.bfloat16), jnp.asarray(weight, jnp.bfloat16)).astype(jnp.float32)
    np.testing.assert_array_equal(by_dtype["bfloat16"], half)
    full = np.asarray(hidden, np.float64) @ weight.astype(np.float64)
    np.testing.assert_allclose(by_dtype["float32"], full, rtol=1e-5, atol=1e-5 * np.abs(full).max())
    np.testing.assert_array_equal(logits, by_dtype["bfloat16" if tied else "float32"])  # None's choice
    error = np.abs(np.asarray(half) - full).max() / np.abs(full).max()
    assert 1e-4 < error < 2e-2  # bfloat16 rounding, not a different function


@pytest.mark.parametrize("scan_layers", [False, True])
def test_fused_attention_equals_the_einsum_path(monkeypatch, spread_params, scan_layers):
  """ModelConfig.attention="cudnn" hands `jax.nn.dot_product_attention` the layer's queries, keys, values and mask;
  run with its XLA implementation (the cuDNN kernel needs a GPU) the model's logits equal the einsum path's to
  bfloat16 rounding: grouped-query heads (4 query heads on 2 key/value heads), a packed row with padding (causal
  flag on), and a prefix-LM row (causal flag off: the mask alone)."""
  monkeypatch.setattr(transformer, "FUSED_ATTENTION", "xla")
  einsum_cfg = preset("tiny", num_heads=4, num_kv_heads=2, dtype="bfloat16", scan_layers=scan_layers)
  fused_cfg = dataclasses.replace(einsum_cfg, attention="cudnn")
  tokens = jnp.array([[3, 7, 9, 11, 4, 6, 8, 0], [5, 6, 8, 2, 9, 1, 3, 7]])
  params = spread_params(nn.unbox(Transformer(einsum_cfg).init(jax.random.PRNGKey(3), tokens)["params"]), 11)
  packed = dict(segment_ids=jnp.array([[1, 1, 1, 1, 2, 2, 2, 0], [1] * 8]),
                positions=jnp.array([[0, 1, 2, 3, 0, 1, 2, 0], list(range(8))]))
  prefix = dict(prefix_mask=jnp.array([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]))
  for kwargs in (packed, prefix):
    want = Transformer(einsum_cfg).apply({"params": params}, tokens, **kwargs)
    got = Transformer(fused_cfg).apply({"params": params}, tokens, **kwargs)
    scale = float(jnp.max(jnp.abs(want)))
    assert scale > 1.0  # spread parameters: attention far from uniform, so a wrong mask or head order shows
    np.testing.assert_allclose(got, want, atol=1e-3 * scale)  # identical here; a wrong mask or head order: ~1x
