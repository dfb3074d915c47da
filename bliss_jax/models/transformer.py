"""One decoder-only Transformer (Flax linen) for every shape in `config.PRESETS`.

Inputs are SeqIO decoder features: `tokens` [B, T] (the shifted `decoder_input_tokens`), optional `segment_ids`
and `positions` (packed sequences; 0 = padding) and optional `prefix_mask` (`decoder_causal_attention`: 1 on the
prefix, which attends bidirectionally, as in a prefix LM). Parameters carry logical axis names ("vocab", "embed",
"heads", "kv_heads", "kv", "mlp", "layers"); activations are constrained with ("batch", "length", ...). The mapping of
logical names to mesh axes lives in `bliss_jax.partitioning`.

Incremental decoding passes a key/value cache (`init_cache`): the call's tokens are the next positions of each row,
their keys and values are written into the cache at its `index`, the queries attend to everything written so far,
and the call returns the logits and the updated cache. Without a cache the forward pass is the training one.
"""
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from bliss_jax import partitioning
from bliss_jax.models.config import ModelConfig
from bliss_jax.models.blocked_attention import blocked_attention
from bliss_jax.models.dense_dot import dense_dot_general_for_backend

_INIT_STD = 0.02


def _init(names, std=_INIT_STD):
  return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def _zeros(names):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _ones(names):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


def attention_mask(segment_ids: jax.Array, prefix_mask: Optional[jax.Array] = None) -> jax.Array:
  """Boolean [B, 1, T, T] mask: query q may attend key k.

  Causal (k <= q) within the same segment; with `prefix_mask`, also every k inside the prefix when q is in it
  (prefix-LM, bidirectional over the inputs).
  """
  t = segment_ids.shape[-1]
  causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
  allowed = jnp.broadcast_to(causal, segment_ids.shape[:1] + (t, t))
  if prefix_mask is not None:
    p = prefix_mask.astype(bool)
    allowed = allowed | (p[:, :, None] & p[:, None, :])
  same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
  return (allowed & same_segment)[:, None]


def init_cache(cfg: ModelConfig, batch_size: int, length: int) -> dict:
  """An empty key/value cache of `length` positions for `Transformer.__call__(..., cache=)`: "key" and "value"
  [num_layers, B, length, kv_heads, head_dim] in the compute dtype, "segment_ids" [B, length] (0: not written, or
  padding) and "index", the number of positions written (int32 scalar)."""
  shape = (cfg.num_layers, batch_size, length, cfg.kv_heads, cfg.dim_per_head)
  return {"key": jnp.zeros(shape, cfg.compute_dtype), "value": jnp.zeros(shape, cfg.compute_dtype),
          "segment_ids": jnp.zeros((batch_size, length), jnp.int32), "index": jnp.zeros((), jnp.int32)}


def cached_attention_mask(cache_segment_ids: jax.Array, segment_ids: jax.Array, index: jax.Array) -> jax.Array:
  """Boolean [B, 1, t, S] mask of the t new tokens (cache positions index .. index + t - 1) over the S cache
  positions: `attention_mask`'s rule, causal (s <= index + q) within the same segment (padding sees only padding)."""
  t, s = segment_ids.shape[-1], cache_segment_ids.shape[-1]
  causal = jnp.arange(s)[None, :] <= index + jnp.arange(t)[:, None]
  same_segment = segment_ids[:, :, None] == cache_segment_ids[:, None, :]
  return (causal[None] & same_segment)[:, None]


def apply_rotary(x: jax.Array, positions: jax.Array, rotary_dim: int, theta: float) -> jax.Array:
  """GPT-NeoX rotary embedding (rotate-half layout) on the first `rotary_dim` dims of each head of x [B,T,H,D]."""
  if rotary_dim == 0:
    return x
  rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, rotary_dim/2]
  cos = jnp.cos(jnp.concatenate([angles, angles], -1))[:, :, None, :]
  sin = jnp.sin(jnp.concatenate([angles, angles], -1))[:, :, None, :]
  half = rotary_dim // 2
  rotated = jnp.concatenate([-rot[..., half:], rot[..., :half]], -1)
  out = rot.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin
  return jnp.concatenate([out.astype(x.dtype), rest], -1)


class Norm(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    xf = x.astype(jnp.float32)
    scale = self.param("scale", _ones(("embed",)), (cfg.d_model,), jnp.float32)
    if cfg.norm == "rmsnorm":
      y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + cfg.norm_eps) * scale
    else:
      mean = jnp.mean(xf, -1, keepdims=True)
      var = jnp.mean(jnp.square(xf - mean), -1, keepdims=True)
      bias = self.param("bias", _zeros(("embed",)), (cfg.d_model,), jnp.float32)
      y = (xf - mean) * jax.lax.rsqrt(var + cfg.norm_eps) * scale + bias
    return y.astype(cfg.compute_dtype)


FUSED_ATTENTION = "cudnn"  # `jax.nn.dot_product_attention`'s implementation for ModelConfig.attention="cudnn"


def fused_attention(q, k, v, mask, causal: bool):
  """Attention [B, T, heads, d] of queries q [B, T, heads, d] over keys and values [B, S, kv_heads, d] by
  `jax.nn.dot_product_attention` (`FUSED_ATTENTION`): scale 1/sqrt(d), `mask` [B, 1, T, S] (a query's heads that
  share a key/value head are contiguous, as in the einsum path); `causal`: the mask is causal as well, so the kernel
  may skip the blocks above the diagonal."""
  if FUSED_ATTENTION == "cudnn" and jax.default_backend() != "gpu":
    raise ValueError(f"ModelConfig.attention='cudnn' runs on NVIDIA GPUs; this backend is "
                     f"{jax.default_backend()!r} (use attention='einsum')")
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation=FUSED_ATTENTION)


def einsum_attention(q, k, v, mask, kv_heads: int, dtype):
  """softmax(q·kᵀ/√d, masked)·v written out: q [B, T, h, d], k and v [B, S, kv_heads, d] (the query heads that share
  a key/value head contiguous), `mask` boolean [B, 1, T, S]; scores and softmax in float32, the probabilities cast to
  `dtype` for the product with v. Returns [B, T, h, d]."""
  b, t, h, hd = q.shape
  q = q.reshape(b, t, kv_heads, h // kv_heads, hd)  # group the query heads that share a key/value head
  logits = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(hd)
  logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
  return jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(b, t, h, hd)


class Attention(nn.Module):
  """Multi-head / grouped-query / multi-query attention. Returns (output, None), or with a layer's cache
  `kv_cache` = (keys, values) [B, S, kv_heads, head_dim] and its write position `index`, (output, the updated
  (keys, values)). `causal`: `mask` holds only causal pairs (no bidirectional prefix), for `fused_attention`."""
  cfg: ModelConfig
  causal: bool = False

  @nn.compact
  def __call__(self, x, mask, positions, kv_cache=None, index=None):
    cfg = self.cfg
    h, kv, hd = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
    dense = functools.partial(nn.DenseGeneral, dtype=cfg.compute_dtype, use_bias=cfg.use_bias or cfg.qkv_bias,
                              dot_general=dense_dot_general_for_backend())
    q = dense((h, hd), kernel_init=_init(("embed", "heads", "kv")), bias_init=_zeros(("heads", "kv")), name="query")(x)
    k = dense((kv, hd), kernel_init=_init(("embed", "kv_heads", "kv")), bias_init=_zeros(("kv_heads", "kv")),
              name="key")(x)
    v = dense((kv, hd), kernel_init=_init(("embed", "kv_heads", "kv")), bias_init=_zeros(("kv_heads", "kv")),
              name="value")(x)
    q = apply_rotary(q, positions, cfg.rotary_dim, cfg.rope_theta)
    k = apply_rotary(k, positions, cfg.rotary_dim, cfg.rope_theta)
    if kv_cache is not None:  # the new keys and values join the cache; queries attend to all of it (mask: written)
      k, v = (partitioning.constrain(jax.lax.dynamic_update_slice(c, new.astype(c.dtype), (0, index, 0, 0)),
                                         ("batch", "length", "kv_heads", "kv")) for c, new in zip(kv_cache, (k, v)))
    q = partitioning.constrain(q, ("batch", "length", "heads", "kv"))
    if cfg.attention == "cudnn" and kv_cache is None:
      out = fused_attention(q, k, v, mask, self.causal)
    elif kv_cache is None and dense_dot_general_for_backend() is not None:  # XLA:CPU: einsum_attention rewritten
      out = blocked_attention(q, k, v, mask, kv, self.causal)
    else:
      out = einsum_attention(q, k, v, mask, kv, cfg.compute_dtype)
    out = partitioning.constrain(out, ("batch", "length", "heads", "kv"))
    out = nn.DenseGeneral(cfg.d_model, axis=(-2, -1), dtype=cfg.compute_dtype, use_bias=cfg.use_bias,
                          dot_general=dense_dot_general_for_backend(),
                          kernel_init=_init(("heads", "kv", "embed"), _INIT_STD / jnp.sqrt(2 * cfg.num_layers)),
                          bias_init=_zeros(("embed",)), name="out")(out)
    return out, (None if kv_cache is None else (k, v))


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dense = functools.partial(nn.Dense, dtype=cfg.compute_dtype, use_bias=cfg.use_bias,
                              dot_general=dense_dot_general_for_backend())
    up = dense(cfg.d_ff, kernel_init=_init(("embed", "mlp")), bias_init=_zeros(("mlp",)), name="wi")(x)
    if cfg.mlp == "gelu":
      hidden = nn.gelu(up, approximate=False)
    else:
      gate = dense(cfg.d_ff, kernel_init=_init(("embed", "mlp")), bias_init=_zeros(("mlp",)), name="wi_gate")(x)
      act = nn.silu if cfg.mlp == "swiglu" else functools.partial(nn.gelu, approximate=False)
      hidden = act(gate) * up
    hidden = partitioning.constrain(hidden, ("batch", "length", "mlp"))
    return dense(cfg.d_model, kernel_init=_init(("mlp", "embed"), _INIT_STD / jnp.sqrt(2 * cfg.num_layers)),
                 bias_init=_zeros(("embed",)), name="wo")(hidden)


class Block(nn.Module):
  """One layer; returns (x, None), or with a layer's cache (`Attention`), (x, the updated (keys, values))."""
  cfg: ModelConfig
  causal: bool = False

  @nn.compact
  def __call__(self, x, mask, positions, kv_cache=None, index=None):
    cfg = self.cfg
    attn = Attention(cfg, self.causal, name="attention")
    mlp = Mlp(cfg, name="mlp")
    attended, kv_cache = attn(Norm(cfg, name="attn_norm")(x), mask, positions, kv_cache, index)
    if cfg.parallel_residual:
      x = x + attended + mlp(Norm(cfg, name="mlp_norm")(x))
    else:
      x = x + attended
      x = x + mlp(Norm(cfg, name="mlp_norm")(x))
    return partitioning.constrain(x, ("batch", "length", "embed")), kv_cache


class _ScanBlock(nn.Module):
  """`Block` with the (carry, xs) -> (carry, ys) signature `nn.scan` wants; xs and ys are the layer's cache (or
  None)."""
  cfg: ModelConfig
  causal: bool = False

  @nn.compact
  def __call__(self, x, kv_cache, mask, positions, index):
    return Block(self.cfg, self.causal, name="block")(x, mask, positions, kv_cache, index)


class OutputKernel(nn.Module):
  """The untied output head's kernel [d, V] (float32), as a parameter named "kernel"."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self):
    return self.param("kernel", _init(("embed", "vocab")), (self.cfg.d_model, self.cfg.vocab_size), jnp.float32)


def head_weight(cfg: ModelConfig, params) -> jax.Array:
  """The output head's weight in a `Transformer(cfg)`'s parameters: the untied kernel [d, V], or the input embedding
  [V, d] when tied (unboxed from flax's logical partitioning metadata where `params` carry it)."""
  return nn.unbox(params["embed"]["embedding"] if cfg.tie_embeddings else params["lm_head"]["kernel"])


def stacked_layers(cfg: ModelConfig, params: dict) -> dict:
  """A `Transformer(cfg)`'s parameters in the layout of the same model with `scan_layers=True`: the blocks'
  parameters ("layer_0" ... "layer_{n-1}") stacked on a leading axis as "layers"/"block"; the same dict when `cfg`
  already scans. Differentiable (a stack), so a scanned, rematerialised copy of the model can run on unscanned
  parameters and return their gradients. Logically partitioned leaves keep their box, "layers" prepended to its
  axis names (as `nn.scan` names the stacked axis)."""
  if cfg.scan_layers:
    return params

  def stack(*xs):  # a leaf, or flax's logical-partitioning box of one (its axis names gain the scan's "layers")
    if isinstance(xs[0], nn.Partitioned):
      return xs[0].replace(value=jnp.stack([x.value for x in xs]), names=("layers",) + tuple(xs[0].names))
    return jnp.stack(xs)

  blocks = [params[f"layer_{i}"] for i in range(cfg.num_layers)]
  rest = {k: v for k, v in params.items() if not k.startswith("layer_")}
  return dict(rest, layers={"block": jax.tree.map(stack, *blocks, is_leaf=lambda x: isinstance(x, nn.Partitioned))})


def head_logits(cfg: ModelConfig, weight: jax.Array, hidden: jax.Array) -> jax.Array:
  """The output head: logits [..., V] (float32) of final normed hidden states [..., d] with `head_weight`.

  hidden @ kernel (untied) or hidden @ embeddingᵀ (tied) in `cfg.head_compute_dtype`, then cast to float32.
  """
  dtype = cfg.head_compute_dtype
  if cfg.tie_embeddings:
    return jnp.dot(hidden.astype(dtype), weight.astype(dtype).T).astype(jnp.float32)
  dot = dense_dot_general_for_backend() or jax.lax.dot_general
  return dot(hidden.astype(dtype), weight.astype(dtype), (((hidden.ndim - 1,), (0,)), ((), ()))).astype(jnp.float32)


class Transformer(nn.Module):
  """Decoder-only LM. `__call__` returns logits [B, T, V] (float32); with `return_hidden=True` also the final normed
  hidden states [B, T, d]; with `return_hidden="only"` just those (the output head is neither run nor created).

  With `cache` (`init_cache`): `tokens` [B, t] are each row's next t positions (default `positions`: index ..
  index + t - 1; give per-row ones for left-padded rows, whose padding has segment id 0), and the call returns
  (logits [B, t, V], the updated cache).
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens, segment_ids=None, positions=None, prefix_mask=None, return_hidden=False, cache=None):
    cfg = self.cfg
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    kv = index = None
    causal = prefix_mask is None  # no bidirectional prefix: the mask is causal within segments
    if cache is None:
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[-1]), tokens.shape)
      mask = attention_mask(segment_ids, prefix_mask)
    else:
      if prefix_mask is not None or return_hidden:
        raise ValueError("decoding with a cache takes no prefix_mask and returns logits only")
      kv, index = (cache["key"], cache["value"]), cache["index"]
      if positions is None:
        positions = jnp.broadcast_to(index + jnp.arange(tokens.shape[-1]), tokens.shape)
      cache_segment_ids = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids.astype(jnp.int32),
                                                       (0, index))
      mask = cached_attention_mask(cache_segment_ids, segment_ids, index)
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=_init(("vocab", "embed")), dtype=cfg.compute_dtype,
                     name="embed")
    x = partitioning.constrain(embed(tokens), ("batch", "length", "embed"))
    if cfg.scan_layers:
      block = nn.remat(_ScanBlock) if cfg.remat else _ScanBlock
      layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                       in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                       metadata_params={nn.PARTITION_NAME: "layers"})(cfg, causal, name="layers")
      x, kv = layers(x, kv, mask, positions, index)
    else:
      block = nn.remat(Block) if cfg.remat else Block
      layers_kv = []
      for i in range(cfg.num_layers):
        layer_cache = None if kv is None else (kv[0][i], kv[1][i])
        x, layer_kv = block(cfg, causal, name=f"layer_{i}")(x, mask, positions, layer_cache, index)
        layers_kv.append(layer_kv)
      if kv is not None:
        kv = tuple(jnp.stack(arrays) for arrays in zip(*layers_kv))
    hidden = Norm(cfg, name="final_norm")(x)
    if return_hidden == "only":
      return hidden
    weight = embed.embedding if cfg.tie_embeddings else OutputKernel(cfg, name="lm_head")()
    logits = partitioning.constrain(head_logits(cfg, weight, hidden), ("batch", "length", "vocab"))
    if cache is not None:
      return logits, {"key": kv[0], "value": kv[1], "segment_ids": cache_segment_ids,
                      "index": index + tokens.shape[-1]}
    return (logits, hidden) if return_hidden else logits
