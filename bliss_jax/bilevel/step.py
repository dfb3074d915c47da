"""One BLISS bilevel step (spec §One bilevel step), compiled with `jax.jit` over a device mesh.

  1. K_in AdamW steps (global-norm clip) on the proxy θp with G (`losses.bilevel`, eq. G) on K_in candidate batches:
     the score model's weights P (eq. P) are constants here, the target's logits too (for the KL; computed once per
     batch in the chunks of positions the objectives' heads run over, `losses.bilevel.logit_chunks`).
  2. ∇_{θp}F on a reference batch at the updated θp (eq. F).
  3. On the last candidate batch: z solving (∇²G + λ_z I) z = ∇F (`hypergradient.solve_adjoint`, eq. H1), then
     ∇Φ(θs) = −∇_{θs}Σ_i P_i a_i (eq. H3, `mixed="jvp"`: one jvp through the proxy, one vjp through the score model)
     or the general vjp of θs ↦ ∇_{θp}G (eq. H2, `mixed="vjp"`, second order through the score model; for checks).
  4. Per-tensor clip of ∇Φ, AdamW on θs. Both optimizers follow cosine schedules over the run's steps.
That is `schedule="sequential"`, the reference code's order. `schedule="single_pass"` updates θp, z and θs together
from one point (the single-loop scheme of SOBA, Dagréou et al. 2022): on the last candidate batch ONE
forward-over-reverse pass along the carried z gives ∇G (the lower step), ∇²G·z (one solver `iteration` on z) and,
as the tangents of the per-sample losses, the alignments a_i = ⟨∇L_i, z⟩ (eq. H3); with ∇F at the same θp. It costs
one HVP-sized pass instead of a gradient, `solver_iters` HVPs and a jvp; z lags one iteration behind.
The objectives' heads run over chunks of positions (`losses.bilevel.chunked_sample_terms`, ∇F by
`losses.lm.head_cross_entropy`): no [B, T, V] proxy logits, nor their tangents, exist at once. With `remat=True`
every pass through the proxy and the score model runs them scanned over their layers with each block
rematerialised (`jax.checkpoint`): a pass keeps one block input per layer instead of every block's activations (in
forward-over-reverse, and their tangents), for about one more forward per pass. Scanned, because XLA:CPU merges a
rematerialised forward outside a loop with the original one (no memory saved); the parameters keep their layout
(`models.transformer.stacked_layers` stacks them inside the step). With `microbatches=m` the second-order passes
(the solver's HVPs, the alignments' jvp, the single pass) sum G's per-sample CE and KL over m microbatches of rows in
turn, so that one microbatch's activations and tangents live at a time (with remat, the forward-over-reverse pass
through one block is where the peak was); the first-order passes (the K_in lower steps, ∇F) take the whole batch
(split, they were slower and their peak no lower); the softmax weights P stay over the whole batch.

`BilevelState` is one pytree (what checkpoints store): step, proxy and score parameters with their optimizer states,
and z (kept for warm starts). `build_bilevel_functions` lays every leaf out on the mesh from the models' logical axis
names, like `trainer.build_step_functions`; batches are split over "data" (the softmax over the batch stays global).
"""
import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu
from jax.sharding import NamedSharding, PartitionSpec as P

from bliss_jax import partitioning
from bliss_jax.bilevel import hypergradient, solvers
from bliss_jax.choices import check_choice
from bliss_jax.losses import bilevel as objectives
from bliss_jax.losses.entropy import entropy
from bliss_jax.losses.lm import model_logits
from bliss_jax.models.config import ModelConfig
from bliss_jax.models import flops
from bliss_jax.models.score_model import HEAD_INITS, POOLINGS, ScoreModel, score_batch
from bliss_jax.models.transformer import Transformer, head_weight, stacked_layers
from bliss_jax.training import optimizers


SCHEDULES = ("sequential", "single_pass")


@dataclasses.dataclass(frozen=True)
class BilevelConfig:
  """Hyperparameters of the bilevel step; defaults are the reference implementation's (spec §Hyperparameters)."""
  gamma: float = 1e-2  # γ, weight of KL(target ‖ proxy) in G (0: no KL, the ablation)
  l2: float = 1e-7  # λ, weight of ‖θp‖² in G
  weighting: str = "softmax"  # P: "softmax" (eq. P) or "normalized" (s/Σs, the no-reparameterisation ablation)
  kl_direction: str = "target_proxy"
  sigmoid: bool = True  # sigmoid on the score model's output
  inner_steps: int = 1  # K_in lower-level steps per bilevel step
  solver: str = "normalized"  # "cg", "neumann" or "normalized" (the reference code's)
  solver_iters: int = 3
  solver_alpha: float = 1e-2  # step of "neumann" / "normalized"
  solver_normalize: str = "tensor"  # "normalized": cap each tensor's step ("tensor", the reference's) or the pytree's
  damping: float = 1e-2  # λ_z
  warm_start: bool = False  # start the solver from the previous step's z
  mixed: str = "jvp"  # "jvp" (eq. H3) or "vjp" (eq. H2)
  schedule: str = "sequential"  # "sequential" (the reference's) or "single_pass" (module docstring)
  remat: bool = False  # the proxy and score model scanned over layers, blocks rematerialised (module docstring)
  microbatches: int = 1  # G's terms over this many microbatches of rows in the second-order passes (module docstring)
  proxy_lr: float = 1e-5
  score_lr: float = 1e-5
  weight_decay: float = 0.1
  decay_on: str = "all"  # AdamW decay on every parameter ("all", the reference's torch AdamW) or "matrices"
  b1: float = 0.9
  b2: float = 0.95
  proxy_clip: float = 1.0  # global norm
  score_clip: float = 1.0  # per tensor
  warmup_steps: int = 0
  final_fraction: float = 0.0  # cosine decays to this fraction of each peak LR (the reference's: to 0)
  score_head_init: str = "uniform"  # round 1's Linear(d, 1): "uniform" (torch's default, U(±1/√d)) or "zeros"
  score_pooling: str = "all"  # the score model's mean pool: over all row positions (the reference's) or "tokens"
  seed: int = 0  # the score head's initialisation

  def __post_init__(self):
    check_choice("weighting", self.weighting, objectives.WEIGHTINGS)
    if self.weighting == "normalized" and not self.sigmoid:
      raise ValueError("weighting='normalized' (P = s/Σs) needs positive scores: set sigmoid=True")
    check_choice("kl_direction", self.kl_direction, objectives.KL_DIRECTIONS)
    check_choice("solver", self.solver, solvers.SOLVERS)
    check_choice("mixed", self.mixed, ("jvp", "vjp"))
    check_choice("solver_normalize", self.solver_normalize, solvers.NORMALIZATIONS)
    check_choice("decay_on", self.decay_on, optimizers.DECAY_ON)
    check_choice("score_head_init", self.score_head_init, HEAD_INITS)
    check_choice("score_pooling", self.score_pooling, POOLINGS)
    if self.microbatches < 1:
      raise ValueError(f"microbatches={self.microbatches} must be >= 1")
    if self.inner_steps < 1:
      raise ValueError(f"inner_steps={self.inner_steps} must be >= 1")
    check_choice("schedule", self.schedule, SCHEDULES)
    if self.schedule == "single_pass":
      if self.solver not in solvers.ITERATIVE or self.mixed != "jvp" or self.solver_iters != 1 or not self.warm_start:
        raise ValueError(
            f"schedule='single_pass' makes one warm-started iteration of a stationary solver per step and takes the "
            f"alignments from its pass: it needs solver in {solvers.ITERATIVE}, mixed='jvp', solver_iters=1 and "
            f"warm_start=True (got solver={self.solver!r}, mixed={self.mixed!r}, solver_iters={self.solver_iters}, "
            f"warm_start={self.warm_start})")


@flax.struct.dataclass
class BilevelState:
  step: jax.Array
  proxy: Any
  proxy_opt: Any
  score: Any
  score_opt: Any
  z: Any


def clip_per_tensor(max_norm: float) -> optax.GradientTransformation:
  """Rescale each tensor of the update to L2 norm ≤ max_norm (the reference code clips the hypergradient per tensor;
  optax has global-norm and block-RMS clipping but not this)."""
  def update(updates, state, params=None):
    del params
    clip = lambda g: g * jnp.minimum(1.0, max_norm / jnp.maximum(jnp.linalg.norm(g.reshape(-1)), 1e-12))
    return jax.tree.map(clip, updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizers(cfg: BilevelConfig, num_steps: int):
  """(proxy tx, score tx, proxy schedule, score schedule): AdamW with cosine schedules over `num_steps`."""
  sched = lambda lr: optimizers.make_schedule("cosine", peak_lr=lr, total_steps=max(num_steps, 1),
                                              warmup_steps=cfg.warmup_steps, final_fraction=cfg.final_fraction)
  p_sched, s_sched = sched(cfg.proxy_lr), sched(cfg.score_lr)
  adamw = lambda s: optimizers.make_optimizer("adamw", schedule=s, weight_decay=cfg.weight_decay, b1=cfg.b1,
                                              b2=cfg.b2, clip_norm=None, decay_on=cfg.decay_on)
  proxy_tx = optax.chain(optax.clip_by_global_norm(cfg.proxy_clip), adamw(p_sched)) if cfg.proxy_clip else adamw(
      p_sched)
  score_tx = optax.chain(clip_per_tensor(cfg.score_clip), adamw(s_sched)) if cfg.score_clip else adamw(s_sched)
  return proxy_tx, score_tx, p_sched, s_sched


class _Rematerialised(NamedTuple):
  """A `Transformer` or `ScoreModel` (`module`, built scanned and rematerialised from the unscanned `cfg`) applied to
  parameters in the unscanned model's layout."""
  module: nn.Module
  cfg: ModelConfig

  def apply(self, variables, *args, **kwargs):
    p = variables["params"]
    if isinstance(self.module, ScoreModel):
      p = dict(p, backbone=stacked_layers(self.cfg, p["backbone"]))
    else:
      p = stacked_layers(self.cfg, p)
    return self.module.apply({"params": p}, *args, **kwargs)


def _rematerialised(model, cfg: BilevelConfig):
  """`model`, or with `cfg.remat` the `_Rematerialised` view of it."""
  if not cfg.remat:
    return model
  return _Rematerialised(model.clone(cfg=dataclasses.replace(model.cfg, scan_layers=True, remat=True)), model.cfg)


def _microbatches(tree, m: int, axis: int = 0):
  """Each leaf's rows (its `axis`) as m microbatches [m, ..., B / m, ...], strided (microbatch c holds rows c, c + m,
  ...), so that rows laid out over the mesh's "data" axis leave every microbatch laid out alike."""
  def split(x):
    rows = x.shape[axis]
    if rows % m:
      raise ValueError(f"microbatches={m} does not divide the batch's {rows} rows")
    return jnp.moveaxis(x.reshape(x.shape[:axis] + (rows // m, m) + x.shape[axis + 1:]), axis + 1, 0)
  return jax.tree.map(split, tree)


def _rows(x):
  """The inverse of `_microbatches` for one array: [m, B / m, ...] -> [B, ...]."""
  return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def _summed_over_microbatches(cfg: BilevelConfig, one: Callable, arg_row_axis: int = 0) -> Callable:
  """`f(θp, batch, *row_args)` computed by `one` (same signature, returning per-row values [B] and token means over
  the batch's loss-carrying tokens) on `cfg.microbatches` microbatches in turn (`lax.scan`), so that one
  microbatch's activations live at a time when differentiated; the per-row values rejoined, the token means
  recombined with each microbatch's token count. `row_args` hold the rows on `arg_row_axis`; `one` gets each
  microbatch's slice as the scan reads it (no op between the two, so that a differentiated scan keeps the slices it
  needs by reference instead of stacking copies). `one` is checkpointed unless `cfg.remat` (its blocks are)."""
  m = cfg.microbatches
  if m == 1:
    return one
  body = one if cfg.remat else jax.checkpoint(one)

  def f(p, batch, *row_args):
    w = batch["decoder_loss_weights"].astype(jnp.float32)
    tokens = lambda b: jnp.maximum(jnp.sum(b["decoder_loss_weights"].astype(jnp.float32)), 1.0)

    def step(_, x):
      b, args = x
      rows, means = body(p, b, *args)
      return None, (rows, jax.tree.map(lambda v: v * tokens(b), means))
    _, (rows, sums) = jax.lax.scan(step, None, (_microbatches(batch, m), _microbatches(row_args, m, arg_row_axis)))
    return _rows(rows), jax.tree.map(lambda v: jnp.sum(v) / jnp.maximum(jnp.sum(w), 1.0), sums)
  return f


def _sample_terms(proxy: Transformer, cfg: BilevelConfig) -> Callable:
  """`terms(θp, batch, target logit chunks or None) -> (L [B], KL or None)`, the head over chunks of positions
  (the target's logits as `losses.bilevel.logit_chunks`, [n, B, length, V]), over `cfg.microbatches` microbatches of
  rows."""
  def one(p, batch, t_chunks, chunk_tokens):
    hidden = model_logits(proxy, p, batch, return_hidden="only")
    return objectives.chunked_sample_terms(proxy.cfg, head_weight(proxy.cfg, p), hidden, batch, t_chunks,
                                           cfg.kl_direction, chunk_tokens=chunk_tokens)

  def terms(p, batch, t_logits):
    b, t = batch["decoder_target_tokens"].shape
    # the microbatches' chunks keep the whole batch's length (the target's chunks are laid out by it)
    chunk_tokens = objectives.chunk_length(b, t) * (b // cfg.microbatches)
    return _summed_over_microbatches(cfg, lambda q, bb, tc: one(q, bb, tc, chunk_tokens), arg_row_axis=1)(
        p, batch, t_logits)
  return terms


def _lower_objective(proxy: Transformer, cfg: BilevelConfig) -> Callable:
  """`lower(θp, weights, batch, target logit chunks) -> (G, (parts, L [B]))`: (G) of `losses.bilevel` with the
  config's γ, λ and KL direction, the head over chunks of positions (`chunked_sample_terms`)."""
  def lower(p, weights, batch, t_logits):
    ce, kl = _sample_terms(proxy, cfg)(p, batch, t_logits)
    g, parts = objectives.lower_objective(ce, weights, p, kl=kl, gamma=cfg.gamma, l2=cfg.l2)
    return g, (parts, ce)
  return lower


def _weights(score_model: ScoreModel, cfg: BilevelConfig) -> Callable:
  """P(θs; batch) (eq. P): the score model's scores of the batch's rows turned into weights by `cfg.weighting`."""
  return lambda s_params, batch: objectives.sample_weights(score_batch(score_model, s_params, batch), cfg.weighting)


def make_hypergradient(proxy: Transformer, score_model: ScoreModel, cfg: BilevelConfig) -> Callable:
  """`hypergradient(θp, θs, batch, val_batch, t_logits, x0) -> (∇Φ(θs), z, aux)`, steps 2-3 of the bilevel step at
  the proxy parameters θp (`t_logits`: the target's `losses.bilevel.logit_chunks` of `batch`, or None without KL):
  ∇F on `val_batch`, z of (H1) on the candidate `batch` (the solver started from `x0`, None: its own start), and ∇Φ
  by (H3) or (H2) (`cfg.mixed`). `aux`: F, the scores, weights and alignments a.
  `schedule="single_pass"` solves nothing: ∇Φ is (H3) along the carried z = `x0`, the direction its step takes."""
  lower = _lower_objective(proxy, cfg)
  weights_of = _weights(score_model, cfg)

  def at(p, score, batch, val_batch, t_logits, x0=None):
    scores = score_batch(score_model, score, batch)
    weights = objectives.sample_weights(scores, cfg.weighting)
    f_val, grad_f = jax.value_and_grad(lambda q: objectives.reference_objective(proxy, q, val_batch))(p)
    inner = lambda q, w: lower(q, w, batch, t_logits)[0]
    if cfg.schedule == "single_pass":
      z = x0
    else:
      z = hypergradient.solve_adjoint(inner, p, weights, grad_f, solver=cfg.solver, iters=cfg.solver_iters,
                                      damping=cfg.damping, alpha=cfg.solver_alpha, x0=x0,
                                      normalize=cfg.solver_normalize)
    if cfg.mixed == "jvp":
      per_sample = lambda q: _sample_terms(proxy, cfg)(q, batch, None)[0]  # the CE alone: no KL in the jvp
      hyper, a = hypergradient.weighted_sum_hypergradient(per_sample, lambda s: weights_of(s, batch), p, score, z)
    else:
      hyper = otu.tree_scale(-1.0, hypergradient.mixed_term(lambda q, s: inner(q, weights_of(s, batch)), p, score,
                                                            z))
      a = jnp.zeros_like(scores)
    return hyper, z, {"F": f_val, "scores": scores, "weights": weights, "a": a}

  return at


def make_single_pass(proxy: Transformer, score_model: ScoreModel, cfg: BilevelConfig) -> Callable:
  """`single_pass(θp, θs, z, batch, val_batch, t_logits) -> (∇G, (G, parts), ∇Φ(θs), z', aux)` of
  `schedule="single_pass"`, all at θp: one `jax.jvp` along z of θp ↦ (∇G, L) gives ∇G, ∇²G·z and a = ⟨∇L_i, z⟩;
  z' is one solver `iteration` on the residual (∇²G + λ_z I)z − ∇F; ∇Φ = −vjp of P at θs with a (eq. H3)."""
  lower = _lower_objective(proxy, cfg)

  def run(p, score, z, batch, val_batch, t_logits):
    scores, pull_scores = jax.vjp(lambda s: score_batch(score_model, s, batch), score)
    weights, pull_weights = jax.vjp(lambda x: objectives.sample_weights(x, cfg.weighting), scores)
    w = jax.lax.stop_gradient(weights)

    def grad_and_terms(q):
      (g, (parts, ce)), grad = jax.value_and_grad(lower, has_aux=True)(q, w, batch, t_logits)
      return grad, (g, parts, ce)

    (grad, (g, parts, _)), (hz, (_, _, a)) = jax.jvp(grad_and_terms, (p,), (z,))
    f_val, grad_f = jax.value_and_grad(lambda q: objectives.reference_objective(proxy, q, val_batch))(p)
    residual = otu.tree_sub(otu.tree_add_scale(hz, cfg.damping, z), grad_f)
    z_new = solvers.iteration(cfg.solver, z, residual, alpha=cfg.solver_alpha, normalize=cfg.solver_normalize)
    hyper = pull_scores(pull_weights(-jax.lax.stop_gradient(a))[0])[0]
    return grad, (g, parts), hyper, z_new, {"F": f_val, "scores": scores, "weights": weights, "a": a}

  return run


def make_bilevel_step(proxy: Transformer, score_model: ScoreModel, target: Optional[Transformer], cfg: BilevelConfig,
                      proxy_tx, score_tx, proxy_schedule=None, score_schedule=None) -> Callable:
  """`step(state, train_batches [K_in, B, T], val_batch [B, T], target_params) -> (state, metrics)`, unjitted."""
  use_kl = bool(cfg.gamma)
  if use_kl and target is None:
    raise ValueError("gamma > 0 needs the target model (its logits enter the KL term)")
  proxy, score_model = _rematerialised(proxy, cfg), _rematerialised(score_model, cfg)
  lower = _lower_objective(proxy, dataclasses.replace(cfg, microbatches=1))  # first order: the whole batch
  hypergradient_at = make_hypergradient(proxy, score_model, cfg)
  single_pass_at = make_single_pass(proxy, score_model, cfg)

  def target_logits(tp, batch):
    if not use_kl:
      return None
    hidden = model_logits(target, tp, batch, return_hidden="only")
    # Rows over "data" and the head weight gathered: left to XLA:SPMD, the FSDP-sharded weight's model dimension
    # makes it gather every row's hidden state and all-reduce the whole batch's [B, T, V] logits on every device.
    hidden = partitioning.constrain(hidden, ("batch", "length", None))
    weight = partitioning.constrain(head_weight(target.cfg, tp),
                                    ("vocab", None) if target.cfg.tie_embeddings else (None, "vocab"))
    chunks = objectives.logit_chunks(target.cfg, weight, hidden)
    return jax.lax.stop_gradient(partitioning.constrain(chunks, (None, "batch", "length", "vocab")))

  def lower_metrics(g_val, parts, grads):
    return dict(parts, G=g_val, proxy_grad_norm=otu.tree_norm(grads))

  def step(state: BilevelState, train_batches: dict, val_batch: dict, target_params=None):
    def lower_step(carry, batch):
      p, opt, kept = carry
      t_logits = target_logits(target_params, batch)
      w = jax.lax.stop_gradient(_weights(score_model, cfg)(state.score, batch))
      (g_val, (parts, _)), grads = jax.value_and_grad(lower, has_aux=True)(p, w, batch, t_logits)
      updates, opt = proxy_tx.update(grads, opt, p)
      kept = None if kept is None else t_logits
      return (optax.apply_updates(p, updates), opt, kept), lower_metrics(g_val, parts, grads)

    hb = jax.tree.map(lambda x: x[-1], train_batches)
    if cfg.schedule == "single_pass":
      # K_in - 1 plain lower steps (carrying no target logits), then the last batch's lower step inside the single
      # pass
      (p, popt, _), _ = jax.lax.scan(lower_step, (state.proxy, state.proxy_opt, None),
                                     jax.tree.map(lambda x: x[:-1], train_batches))
      t_logits = target_logits(target_params, hb)
      grads, (g_val, parts), hyper, z, aux = single_pass_at(p, state.score, state.z, hb, val_batch, t_logits)
      last = lower_metrics(g_val, parts, grads)
      updates, popt = proxy_tx.update(grads, popt, p)
      p = optax.apply_updates(p, updates)
    else:
      # The last candidate batch's target logits leave the scan in its carry: the hypergradient reuses them.
      no_logits = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                               jax.eval_shape(lambda: target_logits(target_params, hb)))
      (p, popt, t_logits), per_step = jax.lax.scan(lower_step, (state.proxy, state.proxy_opt, no_logits),
                                                   train_batches)
      last = jax.tree.map(lambda x: x[-1], per_step)
      hyper, z, aux = hypergradient_at(p, state.score, hb, val_batch, t_logits, state.z if cfg.warm_start else None)
    updates, sopt = score_tx.update(hyper, state.score_opt, state.score)
    new = BilevelState(step=state.step + 1, proxy=p, proxy_opt=popt, score=optax.apply_updates(state.score, updates),
                       score_opt=sopt, z=z)
    metrics = {"lower_" + k: v for k, v in last.items()}
    scores, weights, a = aux["scores"], aux["weights"], aux["a"]
    metrics.update(upper_F=aux["F"], hypergrad_norm=otu.tree_norm(hyper), z_norm=otu.tree_norm(z),
                   score_mean=jnp.mean(scores), score_std=jnp.std(scores), weight_max=jnp.max(weights),
                   weight_entropy=entropy(probs=weights),
                   influence_mean=jnp.mean(a), influence_std=jnp.std(a))
    if proxy_schedule is not None:
      metrics.update(proxy_lr=proxy_schedule(state.step), score_lr=score_schedule(state.step))
    return new, metrics

  return step


class BilevelFunctions(NamedTuple):
  proxy: Transformer
  score_model: ScoreModel
  target: Optional[Transformer]
  init: Callable  # (proxy params, score params) -> BilevelState, laid out on the mesh
  step: Callable  # jitted (state, train_batches, val_batch, target_params) -> (state, metrics)
  abstract_state: Any  # BilevelState of ShapeDtypeStructs with shardings
  state_shardings: Any
  train_batch_sharding: NamedSharding  # [K_in, B, T]: rows over "data"
  val_batch_sharding: NamedSharding


def build_bilevel_functions(proxy_cfg: ModelConfig, target_cfg: Optional[ModelConfig], cfg: BilevelConfig,
                            num_steps: int, mesh, rules, *, target_shardings=None,
                            sequence_length: int = 8) -> BilevelFunctions:
  """Models, optimizers, shardings and the jitted step. Call inside `partitioning.mesh_context(mesh, rules)`.

  `target_shardings`: the shardings of the target's parameters (e.g. from `trainer.abstract_params`).
  """
  if target_cfg is not None and target_cfg.vocab_size != proxy_cfg.vocab_size:
    raise ValueError(f"the target's vocab_size ({target_cfg.vocab_size}) differs from the proxy's "
                     f"({proxy_cfg.vocab_size}): the KL term needs the same tokenizer and padded vocabulary")
  proxy = Transformer(proxy_cfg)
  score_model = ScoreModel(proxy_cfg, sigmoid=cfg.sigmoid, pooling=cfg.score_pooling)
  target = Transformer(target_cfg) if target_cfg is not None and cfg.gamma else None
  proxy_tx, score_tx, p_sched, s_sched = make_optimizers(cfg, num_steps)
  dummy = jnp.zeros((1, sequence_length), jnp.int32)

  def make_state(p, s):
    return BilevelState(step=jnp.zeros((), jnp.int32), proxy=p, proxy_opt=proxy_tx.init(p), score=s,
                        score_opt=score_tx.init(s), z=jax.tree.map(jnp.zeros_like, p))

  def init_boxed(rng):
    return make_state(proxy.init(rng, dummy)["params"], score_model.init(rng, dummy)["params"])

  rng = jax.random.PRNGKey(0)
  plain = jax.eval_shape(lambda r: jax.tree.map(lambda x: x, nn.unbox(init_boxed(r))), rng)
  state_sh = partitioning.shardings_for(jax.eval_shape(init_boxed, rng), plain, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), plain, state_sh)
  init = jax.jit(make_state, out_shardings=state_sh)
  train_sh, val_sh = NamedSharding(mesh, P(None, "data")), partitioning.batch_sharding(mesh)
  step = make_bilevel_step(proxy, score_model, target, cfg, proxy_tx, score_tx, p_sched, s_sched)
  jitted = jax.jit(step, in_shardings=(state_sh, train_sh, val_sh, target_shardings),
                   out_shardings=(state_sh, partitioning.replicated(mesh)), donate_argnums=(0,))
  return BilevelFunctions(proxy, score_model, target, init, jitted, abstract, state_sh, train_sh, val_sh)


def step_flops(proxy_cfg: ModelConfig, target_cfg: Optional[ModelConfig], cfg: BilevelConfig, batch_size: int,
               sequence_length: int) -> float:
  """FLOPs of one bilevel step on [B, T] candidate and reference batches, from `models.flops`' passes:
  K_in × (proxy train + score forward + target forward) for the lower level; a proxy train pass for ∇F; the
  hypergradient batch's score forward (its target logits are the last lower step's); `solvers.matvec_count` HVPs of
  the proxy; the jvp of the per-sample losses along z (`mixed="vjp"`: a second-order pass through the proxy instead);
  and the score model's train pass (its vjp). `schedule="single_pass"`: the last lower step's gradient, the HVP and
  the jvp are one HVP pass that keeps the gradient. Score-model passes have no LM head."""
  L = sequence_length
  train_p = flops.train_flops_per_token(proxy_cfg, L)
  score_f = flops.score_forward_flops_per_token(proxy_cfg, L)
  fwd_t = flops.forward_flops_per_token(target_cfg, L) if target_cfg is not None and cfg.gamma else 0.0
  hvp = flops.hvp_flops_per_token(proxy_cfg, L)
  lower = train_p + score_f + fwd_t
  score_train = flops.score_train_flops_per_token(proxy_cfg, L)
  if cfg.schedule == "single_pass":
    per_token = ((cfg.inner_steps - 1) * lower + fwd_t + score_train + train_p
                 + flops.hvp_flops_per_token(proxy_cfg, L, with_gradient=True))
  else:
    hvps = solvers.matvec_count(cfg.solver, cfg.solver_iters)
    mixed = score_train + (flops.jvp_flops_per_token(proxy_cfg, L) if cfg.mixed == "jvp" else hvp)
    per_token = cfg.inner_steps * lower + train_p + score_f + hvps * hvp + mixed
  return per_token * batch_size * L
