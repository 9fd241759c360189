"""Divergences between two categorical distributions given as log-probabilities.

Every function here compares a *teacher* distribution ``P`` with a *student* distribution
``Q`` over the last dimension (``n`` outcomes) and returns one value per leading index.
They are used twice: by the bucketed top-k term (``n = |mapped| + 1`` buckets) and by the
chunk term (``n = 2``: "the chunk" and "not the chunk").

Absent outcomes. An outcome whose log-probability is ``-inf`` on *both* sides (a twin that
was merged into another bucket, an OTHER bucket the student cannot represent) is not an
outcome at all: it contributes exactly zero and receives zero gradient, also where a
caller's explicit ``present`` mask (which can only remove outcomes) marks it present.

Numerics. Teacher log-probabilities are data (no gradient); they are floored at
``TEACHER_LOGPROB_FLOOR`` so that a teacher that puts (numerically) zero mass on an outcome
gives a large but finite reverse-KL penalty instead of ``inf``. The floor is far below
float32's smallest normal probability (``e^-87``), so it changes no probability that float32
can represent. Student log-probabilities come from finite logits and are used as they are:
clamping them would silently kill the gradient that should raise an under-predicted
outcome. A student ``-inf`` (probability 0) contributes ``0 log 0 = 0`` where the student
is the weighting side (reverse KL, JSD, TVD) and an honest ``+inf`` in forward KL when the
teacher puts mass there. Every ``-inf`` on a weighting side is replaced by a finite value
*before* any arithmetic, so no ``0 * inf`` reaches the forward or backward pass.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

DivergenceName = Literal["forward_kl", "reverse_kl", "jsd", "tvd"]

TEACHER_LOGPROB_FLOOR = -100.0


def _prepare(
    teacher_logp: Tensor, student_logp: Tensor, present: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Shared input handling: present mask, floored teacher, finite student (shapes [..., n])."""
    if teacher_logp.shape != student_logp.shape:
        raise ValueError(
            f"teacher and student log-probs differ in shape: "
            f"{tuple(teacher_logp.shape)} vs {tuple(student_logp.shape)}"
        )
    # -inf on both sides is no outcome, even where a caller's mask says present (a bucketed
    # OTHER the teacher gives no mass and the student cannot reach): 0, not 0 * inf
    both_absent = torch.isneginf(teacher_logp) & torch.isneginf(student_logp)
    present = ~both_absent if present is None else present & ~both_absent
    teacher = torch.where(
        present,
        teacher_logp.detach().clamp(min=TEACHER_LOGPROB_FLOOR),
        torch.zeros_like(teacher_logp),
    )
    student = torch.where(present, student_logp, torch.zeros_like(student_logp))
    return present, teacher, student


def _masked_sum(values: Tensor, present: Tensor) -> Tensor:
    return torch.where(present, values, torch.zeros_like(values)).sum(dim=-1)


def _weighted_log_ratio(log_a: Tensor, log_b: Tensor) -> Tensor:
    """``a * (log a - log b)`` elementwise with ``0 * log 0 = 0`` (no NaN from ``a = 0``)."""
    finite = torch.isfinite(log_a)
    safe_a = torch.where(finite, log_a, torch.zeros_like(log_a))
    return torch.where(finite, safe_a.exp() * (safe_a - log_b), torch.zeros_like(log_a))


def forward_kl(teacher_logp: Tensor, student_logp: Tensor, present: Tensor | None = None) -> Tensor:
    """KL(P || Q) = sum_i p_i (log p_i - log q_i): mode-covering; the classic KD objective.

    Shapes: ``teacher_logp``, ``student_logp`` [..., n] (log-probabilities, each summing to 1
    over the present outcomes); ``present`` bool [..., n] or None. Returns [...] in nats.
    """
    present, lp, lq = _prepare(teacher_logp, student_logp, present)
    return _masked_sum(_weighted_log_ratio(lp, lq), present)


def reverse_kl(teacher_logp: Tensor, student_logp: Tensor, present: Tensor | None = None) -> Tensor:
    """KL(Q || P) = sum_i q_i (log q_i - log p_i): mode-seeking.

    Shapes as :func:`forward_kl`. Returns [...] in nats.
    """
    present, lp, lq = _prepare(teacher_logp, student_logp, present)
    return _masked_sum(_weighted_log_ratio(lq, lp), present)


def generalized_jsd(
    teacher_logp: Tensor, student_logp: Tensor, beta: float = 0.5, present: Tensor | None = None
) -> Tensor:
    """Generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024).

    ``M = beta * P + (1 - beta) * Q``;  ``JSD_beta = beta * KL(P || M) + (1 - beta) * KL(Q || M)``.
    Symmetric at ``beta = 0.5``; bounded by ``ln 2``-scale values; as ``beta -> 0`` it behaves
    like ``beta * KL(P || Q)``. Shapes as :func:`forward_kl`; ``0 < beta < 1``. Returns [...].
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"jsd beta must lie strictly between 0 and 1, got {beta}")
    present, lp, lq = _prepare(teacher_logp, student_logp, present)
    log_m = torch.logaddexp(lp + math.log(beta), lq + math.log1p(-beta))
    kl_pm = _weighted_log_ratio(lp, log_m)
    kl_qm = _weighted_log_ratio(lq, log_m)
    return _masked_sum(beta * kl_pm + (1.0 - beta) * kl_qm, present)


def total_variation(
    teacher_logp: Tensor, student_logp: Tensor, present: Tensor | None = None
) -> Tensor:
    """Total variation distance ``0.5 * sum_i |p_i - q_i|``, in [0, 1].

    Shapes as :func:`forward_kl`. Returns [...].
    """
    present, lp, lq = _prepare(teacher_logp, student_logp, present)
    return 0.5 * _masked_sum((lp.exp() - lq.exp()).abs(), present)


def divergence(
    name: DivergenceName,
    teacher_logp: Tensor,
    student_logp: Tensor,
    *,
    beta: float = 0.5,
    present: Tensor | None = None,
) -> Tensor:
    """Dispatch on the recipe's ``loss.divergence`` name; shapes as :func:`forward_kl`."""
    if name == "forward_kl":
        return forward_kl(teacher_logp, student_logp, present)
    if name == "reverse_kl":
        return reverse_kl(teacher_logp, student_logp, present)
    if name == "jsd":
        return generalized_jsd(teacher_logp, student_logp, beta, present)
    if name == "tvd":
        return total_variation(teacher_logp, student_logp, present)
    raise ValueError(f"unknown divergence {name!r}; choose forward_kl, reverse_kl, jsd or tvd")


def tempered(logp: Tensor, temperature: float, present: Tensor | None = None) -> Tensor:
    """Re-normalise ``p^(1/T)`` over the present outcomes: log_softmax(logp / T) on [..., n].

    Absent outcomes stay ``-inf``. ``T = 1`` returns a re-normalised copy of ``logp``.
    """
    if temperature <= 0.0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if present is None:
        present = ~torch.isneginf(logp)
    scaled = torch.where(present, logp / temperature, torch.full_like(logp, -math.inf))
    return torch.log_softmax(scaled, dim=-1)
