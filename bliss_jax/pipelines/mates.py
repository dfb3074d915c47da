"""MATES (Yu et al. 2024): model-aware data selection with a data influence model, as a per-round scorer.

Round r's three stages (run through `ctx.stage`, so `<method>_r<r>_probe|fit|score`, each resumable):
  probe   `num_probe` candidates drawn uniformly (seeded) from round r's pool; each one's oracle label is the reference
          loss of the CURRENT target after one optimizer step on that candidate alone, taken from the target's
          checkpoint at the round's start (parameters AND optimizer state, the target's own optimizer, clipping and
          learning rate at that step): `oracle_labels`
  fit     the data influence model — the proxy LM's backbone, mean-pooled, Linear(d, 1) (`models.score_model`) —
          regressed on the standardised labels by MSE (`selection.proxy_regression.fit`); a held-out tenth of the
          probes measures it (Spearman's ρ)
  score   its prediction for every pool example, stored negated (column "mates": larger = lower predicted reference
          loss = kept first)
`MatesScorer.select` then samples 20% by Gumbel-top-k on those scores (`rules.gumbel_top_k`, temperature 1 on the
standardised scale, as the reference code adds unit Gumbel noise to its standardised predictions).

Where this deviates from the reference code (cxcscmu/MATES):
- The data influence model is the proxy LM's backbone (same tokenizer) rather than BERT-base, fitted for a fixed
  number of AdamW steps rather than 5 epochs with the best checkpoint chosen by held-out Spearman's ρ (reported here).
- The label is F of `losses.bilevel.reference_objective` (token-mean CE per reference batch, averaged over the first
  `reference_batches` batches), BLISS's upper objective, so both methods aim at the same reference loss; the
  reference code averages LAMBADA's batch-mean CE over its whole training split.
- Selection: Gumbel-top-k of −prediction (sampling ∝ softmax(−prediction / τ)); the reference code takes the smallest
  prediction + Gumbel noise, i.e. reflected (negative-Gumbel) noise, which is not a softmax sample.
- Probes run one after another on `probe_devices` local devices (tensor-parallel when > 1); the reference spreads
  80,000 probes a round over 8 GPUs. Several hosts are untested (each process would probe every candidate).
"""
import dataclasses
import functools
import itertools
import json
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bliss_jax import partitioning
from bliss_jax.counting import fraction_to_count
from bliss_jax.losses.bilevel import reference_objective
from bliss_jax.losses.lm import make_lm_loss
from bliss_jax.models.config import ModelConfig
from bliss_jax.models.flops import (forward_flops_per_token, score_forward_flops_per_token,
                                    score_train_flops_per_token, train_flops_per_token)
from bliss_jax.models.score_model import ScoreModel, score_batch
from bliss_jax.models.transformer import Transformer
from bliss_jax.pipelines import common
from bliss_jax.selection import offline_scoring, proxy_regression, rules
from bliss_jax.bilevel import loop as bilevel_loop
from bliss_jax.training import checkpoints, trainer
from bliss_jax.training.model_dir import ModelDir

COLUMN = "mates"


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def oracle_labels(loss_fn: Callable, reference_loss_fn: Callable, tx: optax.GradientTransformation, params,
                  opt_state, candidates, reference_batches) -> jax.Array:
  """MATES's oracle data influence of each candidate, [n]:

      label(x) = (1/m) Σ_j F(θ'_x; R_j),   θ'_x = θ + u_x,   (u_x, ·) = tx.update(∇_θ ℓ(θ; {x}), s, θ)

  i.e. the mean reference loss after ONE optimizer step on x alone (a batch of one) from parameters θ and optimizer
  state s (a checkpoint's: the step count in s sets the learning rate). `loss_fn(params, batch) -> scalar` is the
  training loss ℓ, `reference_loss_fn(params, batch) -> scalar` the reference loss F; `candidates` is a pytree with
  one candidate per leading index, `reference_batches` one with the m reference batches stacked on axis 0.
  Candidates are processed one at a time (`lax.map`), so memory does not grow with n.
  """
  def reference_loss(p):
    return jnp.mean(jax.lax.map(lambda batch: reference_loss_fn(p, batch), reference_batches))

  def one(example):
    grads = jax.grad(loss_fn)(params, jax.tree.map(lambda a: a[None], example))
    updates, _ = tx.update(grads, opt_state, params)
    return reference_loss(optax.apply_updates(params, updates))

  return jax.lax.map(one, candidates)


def probe_flops(cfg: ModelConfig, sequence_length: int, reference_rows: int) -> float:
  """FLOPs of one oracle probe: a train step of the target on one row of T tokens, then its forward over the
  `reference_rows` reference rows of T tokens (`models.flops`; the optimizer update's O(N) is not counted)."""
  T = sequence_length
  return train_flops_per_token(cfg, T) * T + forward_flops_per_token(cfg, T) * reference_rows * T


def probe_sample(keys: Sequence[str], num_probe: int, seed) -> list:
  """A uniform sample of min(num_probe, n) keys without replacement, in the keys' order."""
  n = min(num_probe, len(keys))
  return [keys[i] for i in np.sort(np.random.default_rng(seed).choice(len(keys), size=n, replace=False))]


def spearman(a, b) -> float:
  """Spearman's rank correlation of two vectors (no ties expected: real-valued predictions and labels)."""
  rank = lambda v: np.argsort(np.argsort(np.asarray(v)))
  return float(np.corrcoef(rank(a), rank(b))[0, 1])


def _load_train_state(model_dir: str, step: int, tx, schedule, mesh, axis_rules, sequence_length: int):
  """(model config, TrainState) of MODEL_DIR's checkpoint at `step`: parameters, optimizer state and step count, laid
  out on `mesh` as the trainer lays them (call inside `partitioning.mesh_context`)."""
  cfg = ModelDir(model_dir).read_model_config()
  fns = trainer.build_step_functions(cfg, tx, schedule, mesh, axis_rules, sequence_length=sequence_length)
  manager = checkpoints.make_manager(model_dir, max_to_keep=None)
  try:
    restored = checkpoints.restore(manager, fns.abstract_state, step=step)
  finally:
    manager.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint at step {step} under {model_dir}/checkpoints")
  return cfg, restored[0]


def _save_npy(path: str, array) -> None:
  tmp = path + ".tmp.npy"
  np.save(tmp, array)
  os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class MatesScorer:
  """MATES's hyperparameters (reference code: 80,000 probes a round, BERT-base fitted 5 epochs at LR 5e-5, batch 64).

  num_probe: candidates probed by the oracle per round (all of the pool if it is smaller).
  probe_chunk: candidates per compiled oracle call (the last chunk is padded, its padding not counted in the FLOPs;
    a rerun of an unfinished probe stage skips the finished chunks).
  reference_batches: reference batches (from position 0 of `ctx.reference("train")`) averaged in every label.
  fit_steps / fit_batch_size / fit_learning_rate: the data influence model's AdamW regression.
  fit_holdout_fraction: probes kept out of the fit to measure it (Spearman's ρ of prediction vs label).
  temperature: of the Gumbel-top-k selection, in units of the labels' standard deviation.
  score_batch_size: the global batch of the pool's prediction pass.
  probe_devices: local devices the target is laid out on for the probes (tensor parallel over "model").
  """
  num_probe: int = 256
  probe_chunk: int = 16
  reference_batches: int = 4
  fit_steps: int = 200
  fit_batch_size: int = 16
  fit_learning_rate: float = 1e-3
  fit_holdout_fraction: float = 0.1
  temperature: float = 1.0
  score_batch_size: int = 64
  probe_devices: int = 1

  def score(self, ctx) -> dict:
    """Run round `ctx.round`'s probe, fit and score stages; returns the score store (column "mates" = −predicted
    reference loss over the whole pool, in `ctx.pool_keys` order), the auxiliary FLOPs and no carried state (the
    reference code fits a fresh data influence model every round)."""
    probe = ctx.stage("probe", functools.partial(self._probe, ctx), {
        "target_dir": ctx.target_dir, "target_step": ctx.target_step, "num_probe": self.num_probe,
        "reference_batches": self.reference_batches, "seed": [ctx.seed, ctx.round], "n_pool": len(ctx.pool_keys),
        "optimizer": dataclasses.asdict(ctx.target_spec.optimizer), "num_steps": ctx.target_spec.num_steps})
    fit = ctx.stage("fit", functools.partial(self._fit, ctx, probe), {
        "probe": probe["labels"], "proxy_dir": ctx.proxy_dir, "steps": self.fit_steps,
        "batch_size": self.fit_batch_size, "lr": self.fit_learning_rate, "holdout": self.fit_holdout_fraction})
    scored = ctx.stage("score", functools.partial(self._score, ctx, fit),
                       {"model": fit["model_dir"], "batch_size": self.score_batch_size})
    return {"store": scored["store"], "column": COLUMN,
            "aux_flops": {"probe": probe["flops"], "fit": fit["flops"], "predict": scored["flops"]},
            "state": None, "stages": {"probe": probe, "fit": fit, "score": scored}}

  def select(self, scores: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """floor(fraction·n) distinct indices sampled ∝ softmax(score / temperature) without replacement (Gumbel-top-k),
    in the order drawn."""
    return rules.gumbel_top_k(scores, fraction_to_count(len(scores), fraction), temperature=self.temperature,
                              seed=seed)

  def _probe(self, ctx, d: str) -> dict:
    L = ctx.sequence_length
    keys = probe_sample(ctx.pool_keys, self.num_probe, (ctx.seed, ctx.round))
    if not keys:
      raise ValueError(f"nothing to probe: num_probe={self.num_probe}, {len(ctx.pool_keys)} pool examples")
    pool = ctx.pool_scoring()
    found, rows = proxy_regression.collect_features(pool["task"], pool["split"], L, keys, chunks=pool["chunks"])
    if found != keys:
      raise ValueError(f"the pool's chunk store yielded {len(found)} of the {len(keys)} probe keys")
    reference = list(itertools.islice(ctx.reference("train", start_position=0), self.reference_batches))
    if not reference:
      raise ValueError("the reference source yielded no batch")
    reference = {k: np.stack([b[k] for b in reference]) for k in reference[0]}
    reference_rows = int(np.prod(reference["decoder_target_tokens"].shape[:2]))
    chunk_dir = os.path.join(d, f"chunks_of_{self.probe_chunk}")
    os.makedirs(chunk_dir, exist_ok=True)
    np.savez(os.path.join(d, "rows.npz"), **rows)
    common.write_json(os.path.join(d, "keys.json"), keys)

    tx, schedule = trainer.make_tx(ctx.target_spec.optimizer, ctx.target_spec.num_steps)
    mesh = partitioning.make_mesh(1, self.probe_devices, jax.local_devices()[:self.probe_devices])
    mesh_rules = partitioning.logical_rules()
    with partitioning.mesh_context(mesh, mesh_rules):
      cfg, state = _load_train_state(ctx.target_dir, ctx.target_step, tx, schedule, mesh, mesh_rules, L)
      lm_loss = make_lm_loss(Transformer(cfg))
      train_loss = lambda p, b: lm_loss(p, b, None)[0]
      ref_loss = functools.partial(reference_objective, Transformer(cfg))
      labels, n, c = [], len(keys), self.probe_chunk
      for i, start in enumerate(range(0, n, c)):
        path = os.path.join(chunk_dir, f"chunk-{i:06d}.npy")
        if not os.path.exists(path):
          idx = np.minimum(np.arange(start, start + c), n - 1)  # the last chunk padded with its last row
          chunk = jax.device_get(oracle_labels(train_loss, ref_loss, tx, state.params, state.opt_state,
                                               {k: v[idx] for k, v in rows.items()}, reference))
          _save_npy(path, np.asarray(chunk, np.float64)[:min(c, n - start)])
        labels.append(np.load(path))
    labels = np.concatenate(labels)
    if not np.isfinite(labels).all():
      raise FloatingPointError(f"{int((~np.isfinite(labels)).sum())} non-finite oracle label(s) in {d}")
    return {"labels": common.write_json(os.path.join(d, "labels.json"), dict(zip(keys, labels.tolist()))),
            "keys": os.path.join(d, "keys.json"), "rows": os.path.join(d, "rows.npz"), "n_probe": n,
            "restored_step": int(state.step), "reference_rows": reference_rows, "label_mean": float(labels.mean()),
            "label_std": float(labels.std()),
            "flops": n * probe_flops(cfg, L, reference_rows)}

  def _fit(self, ctx, probe: dict, d: str) -> dict:
    L = ctx.sequence_length
    labels = json.load(open(probe["labels"]))
    keys = json.load(open(probe["keys"]))
    with np.load(probe["rows"]) as z:
      rows = {k: z[k] for k in z.files}
    y = np.asarray([labels[k] for k in keys], np.float64)
    n_hold = fraction_to_count(len(keys), self.fit_holdout_fraction)
    held = np.zeros(len(keys), bool)
    held[np.random.default_rng((ctx.seed, ctx.round, 1)).choice(len(keys), size=n_hold, replace=False)] = True
    mean, std = float(y[~held].mean()), float(y[~held].std())
    std = std if std > 0 else 1.0
    train = dict({k: v[~held] for k, v in rows.items()}, target=((y[~held] - mean) / std).astype(np.float32))
    proxy_cfg = ModelDir(ctx.proxy_dir).read_model_config()
    model = ScoreModel(proxy_cfg)
    _, lm_params = checkpoints.load_params(ctx.proxy_dir)
    batch = min(self.fit_batch_size, int((~held).sum()))
    params, losses = proxy_regression.fit(model, lm_params, train, steps=self.fit_steps, batch_size=batch,
                                          learning_rate=self.fit_learning_rate, seed=ctx.seed + ctx.round)
    model_dir = os.path.join(d, "model")
    os.makedirs(model_dir, exist_ok=True)
    bilevel_loop.save_score_model(model_dir, jax.device_get(params), proxy_cfg, sigmoid=False, pooling=model.pooling)
    result = {"model_dir": model_dir, "n_fit": int((~held).sum()), "n_holdout": n_hold, "label_mean": mean,
              "label_std": std, "mse_first": losses[0] if losses else None, "mse_last": losses[-1] if losses else None,
              "holdout_spearman": None,
              "flops": score_train_flops_per_token(proxy_cfg, L) * self.fit_steps * batch * L}
    if n_hold >= 2:
      predicted = jax.jit(lambda p, b: score_batch(model, p, b))(params, {k: v[held] for k, v in rows.items()})
      result["holdout_spearman"] = spearman(np.asarray(predicted), y[held])
      result["flops"] += score_forward_flops_per_token(proxy_cfg, L) * n_hold * L
    return result

  def _score(self, ctx, fit: dict, d: str) -> dict:
    model, params = bilevel_loop.load_score_model(fit["model_dir"])
    table = offline_scoring.score_split(lambda p, b: {COLUMN: -score_batch(model, p, b)}, params,
                                        store_dir=os.path.join(d, "store"), batch_size=self.score_batch_size,
                                        model_dirs=(ctx.proxy_dir,), progress=ctx.progress_bar, **ctx.pool_scoring())
    if table.keys() != list(ctx.pool_keys):
      raise ValueError(f"scored {len(table)} pool examples whose keys differ from ctx.pool_keys "
                       f"({len(ctx.pool_keys)})")
    tokens = int(table.num_tokens.sum())
    return {"store": os.path.join(d, "store"), "scored_examples": len(table), "scored_tokens": tokens,
            "flops": score_forward_flops_per_token(model.cfg, ctx.sequence_length) * tokens}
