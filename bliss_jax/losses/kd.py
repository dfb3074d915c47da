"""Token-level knowledge distillation from a frozen teacher (SALT eqs. 2-4; MiniPLM's Vanilla KD).

Per loss-carrying position t, with teacher logits z_ζ and student distribution P_θ:
  P_{ζ,ρ} = softmax(ρ · z_ζ)                                               (SALT eq. 3; ρ multiplies the logits)
  ℓ^ω_t = (1 − ω) · CE(onehot(x_t), P_θ) + ω · CE(P_{ζ,ρ}, P_θ)              (SALT eq. 4)
        = CE((1 − ω)·onehot(x_t) + ω·P_{ζ,ρ}, P_θ)
and the loss is the batch mean of ℓ^ω_t over `decoder_loss_weights`, normalised exactly like the LM loss, so ω = 0
is plain CE: over all tokens (`average="token"`) or over sequences of each one's token mean (`"sequence"`: SALT's
l^ω(x) = (1/T) Σ_t ℓ^ω_t per sequence, averaged over the batch as in its Algorithm 1; `lm.averaging_weights`).
No τ² factor; the student is not temperature-scaled. Vanilla KD (MiniPLM's baseline: token-level forward
KL(p_teacher ‖ q_student)) is ω = 1, ρ = 1: KL = CE(p, q) − H(p), and H(p) does not depend on the student.
"""
import jax
import jax.numpy as jnp

from bliss_jax.choices import check_choice
from bliss_jax.losses.entropy import entropy, soft_cross_entropy
from bliss_jax.losses.lm import (AVERAGES, averaging_weights, masked_mean, model_logits, token_correct,
                                 token_cross_entropy)


def teacher_distribution(teacher_logits: jax.Array, rho: float) -> jax.Array:
  """P_{ζ,ρ} = softmax(ρ · teacher_logits) (SALT eq. 3), float32."""
  return jax.nn.softmax(rho * teacher_logits.astype(jnp.float32), axis=-1)


def kd_token_loss(student_logits, teacher_logits, targets, *, omega, rho) -> jax.Array:
  """ℓ^ω_t = (1 − ω)·CE(onehot(x_t), P_θ) + ω·CE(P_{ζ,ρ}, P_θ) per position (SALT eq. 4)."""
  teacher = jax.lax.stop_gradient(teacher_distribution(teacher_logits, rho))
  return (1.0 - omega) * token_cross_entropy(student_logits, targets) + omega * soft_cross_entropy(teacher,
                                                                                                  student_logits)


def make_kd_loss(model, frozen_models, *, omega: float = 0.667, rho: float = 0.25, teacher: str = "teacher",
                 average: str = "token"):
  """KD loss with the frozen model `frozen_models[teacher]` run on the identical batch inside the same step.

  The teacher may have another shape than the student but must share its vocabulary (checked at trace time).
  `average`: `"token"` or `"sequence"` (module docstring). Metrics: loss, CE against the data, KD term, forward
  KL(P_{ζ,ρ} ‖ P_θ), accuracy (each averaged as the loss), num_tokens; with `"sequence"` also num_sequences and
  denominator (= num_sequences, the weight of gradient accumulation).
  """
  check_choice("average", average, AVERAGES)
  if teacher not in frozen_models:
    raise ValueError(f"KD needs a frozen model named {teacher!r} (train.frozen_model_dirs); got "
                     f"{sorted(frozen_models)}")
  teacher_model = frozen_models[teacher]
  if teacher_model.cfg.vocab_size != model.cfg.vocab_size:
    raise ValueError(f"teacher vocab_size {teacher_model.cfg.vocab_size} != student vocab_size "
                     f"{model.cfg.vocab_size}: KD needs one shared tokenizer")

  def loss_fn(params, batch, rng, frozen):
    del rng
    logits = model_logits(model, params, batch)
    t_logits = jax.lax.stop_gradient(model_logits(teacher_model, frozen[teacher], batch))
    c, n = averaging_weights(batch, average)
    mean = lambda x: masked_mean(x, c, count=n)
    targets = batch["decoder_target_tokens"]
    loss = mean(kd_token_loss(logits, t_logits, targets, omega=omega, rho=rho))
    p_t = teacher_distribution(t_logits, rho)
    soft = soft_cross_entropy(p_t, logits)
    return loss, {"loss": loss, "ce": mean(token_cross_entropy(logits, targets)), "kd": mean(soft),
                  "kl_teacher_student": mean(soft - entropy(probs=p_t)),  # KL = CE − H (module docstring)
                  "accuracy": mean(token_correct(logits, targets)),
                  "num_tokens": jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)),
                  **({"num_sequences": n, "denominator": n} if average == "sequence" else {})}

  return loss_fn
