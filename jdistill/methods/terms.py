"""The loss terms methods share, written once: gold CE, a divergence term (logits or fused), the CE/KD mix.

Every term is a sum over the selected tokens divided by a global count the
caller passes (``ctx.num_tokens`` for the usual per-token mean), so micro-batch
terms add up to the full batch's.

Large vocabularies run *fused*: the term is computed in token chunks from the
last hidden states and the LM heads (``jdistill.losses.fused_*``), never
materialising ``[tokens, V]`` logits. Whether a method runs fused follows its
``fused`` setting (``'auto'``: from ``fused_min_vocab`` rows on).
"""

from __future__ import annotations

import jax

from jdistill import losses
from jdistill.methods.base import ModelFacts, ModelView
from jdistill.methods.settings import DivergenceSettings, LossSettings, MixSettings

# The extra keyword argument each divergence takes, and the setting it comes from.
DIVERGENCE_ARGUMENTS = {
    "generalized_jsd": ("beta", "jsd_beta"),
    "skew_forward_kl": ("alpha", "skew_alpha"),
    "skew_reverse_kl": ("alpha", "skew_alpha"),
    "adaptive_kl": ("mu", "akl_mu"),
}


def vocab_rows(settings: LossSettings, facts: ModelFacts) -> int | None:
    """The vocabulary rows the losses compare: the ``vocab_size`` setting, else the tokenizer's size."""
    return int(settings.vocab_size) or facts.vocab_size


MIN_CHUNK_BUDGET_MB = 512  # the chunk budget on hosts that report no device memory (CPU)


def default_chunk_budget_mb() -> int:
    """``fused_memory_mb = 0``: 1/32 of the first device's memory, at least 512 MB.

    Each chunk of the fused losses is one sequential step of a loop; on an
    H200 (139 GB) the 512 MB chunks of a 151,936-row vocabulary made the
    Qwen2.5-1.5B -> 0.5B step 2.2x slower than 4 GB chunks
    (``docs/benchmarks.md``, MFU), so accelerators get larger chunks.
    """
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    limit = int(stats.get("bytes_limit", 0))
    return max(MIN_CHUNK_BUDGET_MB, limit // 32 // 2**20)


def fused_options(settings: LossSettings, facts: ModelFacts) -> dict | None:
    """Options of the fused kernels when the method runs fused, else ``None``."""
    if settings.fused == "off":
        return None
    if settings.fused == "auto":
        rows = vocab_rows(settings, facts)
        if not rows or rows < int(settings.fused_min_vocab):
            return None
    budget_mb = int(settings.fused_memory_mb) or default_chunk_budget_mb()
    return {"memory_budget_bytes": budget_mb * 2**20}


def logits_call(fused: dict | None) -> dict:
    """Forward keyword arguments: no logits when the losses run fused."""
    return {"return_logits": False} if fused is not None else {}


def divergence_arguments(settings: DivergenceSettings) -> dict:
    """The configured divergence's extra keyword argument, e.g. ``{'alpha': 0.1}``."""
    argument = DIVERGENCE_ARGUMENTS.get(settings.divergence)
    if argument is None:
        return {}
    keyword, field = argument
    return {keyword: getattr(settings, field)}


def bound_divergence(settings: DivergenceSettings):
    """The configured divergence with its extra argument bound: ``f(s, t, temperature=)``."""
    kernel = losses.get_divergence(settings.divergence)
    extra = divergence_arguments(settings)

    def bound(student_logits, teacher_logits, **kwargs):
        return kernel(student_logits, teacher_logits, **extra, **kwargs)

    return bound


def logit_softcap(view: ModelView) -> float | None:
    """The final-logit soft-cap of a model's head (Gemma 2's ``final_logit_softcapping``), or ``None``.

    The fused losses rebuild logits from hidden states and the head, so they
    must apply the same ``tanh(z / cap) · cap`` the model's forward applies.
    """
    config = getattr(view.model, "config", None)
    return getattr(config, "final_logit_softcap", None)


def response_cross_entropy(student: ModelView, batch, ctx, *, fused: dict | None = None):
    """Summed CE of the gold targets over the response tokens, divided by ``ctx.num_tokens``."""
    if fused is not None:
        return losses.fused_cross_entropy(
            student.output.hidden_states, student.model.lm_head_weight(), batch["targets"], batch["loss_mask"],
            normalizer=ctx.num_tokens, logit_softcap=logit_softcap(student), **fused,
        )
    ce_BxT = losses.token_cross_entropy(student.output.logits, batch["targets"])
    return losses.token_mean(ce_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)


def divergence_term(student: ModelView, teacher: ModelView, weights_BxT, divergence, *, normalizer,
                    temperature=1.0, vocab_size: int | None = None, fused: dict | None = None, **arguments):
    """``Σ_tokens w · D(p_teacher, q_student) / normalizer``, from logits or fused from hidden states.

    Args:
      student, teacher: the two models' views (the teacher's outputs already
        under stop-gradient when it is frozen).
      weights_BxT: ``[B, T]`` per-token weights (the response mask, or finer weights).
      divergence: a divergence name or kernel of :mod:`jdistill.losses` (any
        kernel of the divergence contract, e.g. ``cald_token_divergence``).
      normalizer: the global count to divide by.
      temperature: divides both logits.
      vocab_size: compare only the first ``vocab_size`` rows (a padded head); ``None``: all.
      fused: options of the fused kernels, or ``None`` for the logits path.
      **arguments: the divergence's own arguments (``alpha``, ``beta``, ...).
    """
    if fused is not None:
        return losses.fused_kd_loss(
            student.output.hidden_states, student.model.lm_head_weight(),
            teacher.output.hidden_states, teacher.model.lm_head_weight(), weights_BxT,
            divergence=divergence, temperature=temperature, normalizer=normalizer, vocab_size=vocab_size,
            logit_softcap=(logit_softcap(student), logit_softcap(teacher)), **fused, **arguments,
        )
    kernel = losses.get_divergence(divergence) if isinstance(divergence, str) else divergence
    values_BxT = kernel(
        student.output.logits[..., :vocab_size], teacher.output.logits[..., :vocab_size],
        temperature=temperature, **arguments,
    )
    return losses.token_mean(values_BxT, weights_BxT, normalizer=normalizer)


def settings_divergence_term(settings: DivergenceSettings, facts: ModelFacts, student, teacher, batch, ctx,
                             fused: dict | None):
    """:func:`divergence_term` of the configured divergence over the response tokens, per response token."""
    return divergence_term(
        student, teacher, batch["loss_mask"], settings.divergence, normalizer=ctx.num_tokens,
        temperature=settings.temperature, vocab_size=vocab_rows(settings, facts), fused=fused,
        **divergence_arguments(settings),
    )


def mix(settings: MixSettings, ce, kd):
    """``(1 - kd_rate) · CE + kd_rate · KD``."""
    return (1.0 - settings.kd_rate) * ce + settings.kd_rate * kd


def token_logprobs(view: ModelView, targets_BxT, *, temperature=1.0, vocab_size=None, fused: dict | None = None):
    """``[B, T]`` log-probabilities of ``targets`` under a model, without gradient."""
    if fused is not None:
        return losses.fused_token_logprobs(
            view.output.hidden_states, view.model.lm_head_weight(), targets_BxT,
            temperature=temperature, vocab_size=vocab_size, logit_softcap=logit_softcap(view),
        )
    logits = view.output.logits[..., :vocab_size]
    return jax.lax.stop_gradient(losses.token_logprobs(logits, targets_BxT, temperature=temperature))
