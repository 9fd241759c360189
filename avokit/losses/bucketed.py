"""Bucketed top-k divergence at common boundaries (teacher top-k in the student's vocabulary).

At a common boundary both models predict "the token that starts here", but over different
vocabularies. The teacher's cache holds only its top-k ids and log-probs. Each top-k id is
mapped to the student id with the same bytes (``-1`` when the student has no such token).
The outcomes compared are

* one bucket per *distinct* mapped student id ``s``: teacher mass = the sum of the top-k
  entries mapped to ``s`` (twins such as a regular token and its byte-fallback copy merge
  their mass), student mass = ``q(s)``;
* one OTHER bucket: everything else. Teacher: ``1 - sum(mapped top-k mass)`` (the unmapped
  top-k entries plus the tail the cache never saw). Student: the exact mass of every student
  id outside the mapped set, from its own logits.

So the divergence is over ``|mapped| + 1`` outcomes. Unmapped teacher mass is never moved
onto some student token; it only says "not one of the mapped tokens". With a single mapped
entry the term is a binary divergence ``{that token, anything else}``; with nothing mapped
the only outcome is OTHER and the term is exactly zero (the row is reported as
uninformative so the caller can leave it out of the mean).

If the mapped set covers the whole student vocabulary (``k >= V`` with everything mapped),
the student cannot put mass on OTHER; the OTHER outcome is dropped and the teacher
distribution is re-normalised over the mapped buckets. With identical vocabularies and
``k = V`` this is exactly the full-vocabulary divergence.

Temperature ``T`` is applied to both bucket distributions (``p^(1/T)`` re-normalised over
the buckets). The cache only knows the teacher's tail as a total, so tempering the full
vocabulary and then bucketing is not computable; tempering the buckets is, treats both
sides alike and is the identity at ``T = 1``. No ``T^2`` factor is applied: the loss weight
in the recipe sets the scale.

Cost: ``O(M k^2)`` for the twin merge (a batched mat-vec) and one masked log-sum-exp over
the ``[M, V]`` student rows. The OTHER mass is computed from the unmapped logits directly,
not as ``1 - sum(mapped)``: that difference loses all relative precision in float32 exactly
when the student is confident, which is when a wrong OTHER mass hurts most. No tensor over
the teacher's vocabulary and no ``[B, T, V]`` scatter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from avokit.losses.divergences import DivergenceName, divergence, tempered


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate on both sides of ``-ln 2`` (Maechler 2012)."""
    x = x.clamp(max=0.0)
    near_zero = x > -math.log(2.0)
    # evaluate each branch only where it is accurate; the other branch gets a harmless input
    a = torch.log(-torch.expm1(torch.where(near_zero, x, torch.full_like(x, -1.0))))
    b = torch.log1p(-torch.exp(torch.where(near_zero, torch.full_like(x, -1.0), x)))
    return torch.where(near_zero, a, b)


def bucket_distributions(
    student_logprobs: Tensor, topk_student_ids: Tensor, topk_logprobs: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher and student distributions over the ``k + 1`` bucket slots of each boundary.

    Shapes: ``student_logprobs`` float [M, V] (log_softmax of the student's boundary rows);
    ``topk_student_ids`` long [M, k] (``-1`` = unmapped); ``topk_logprobs`` float [M, k]
    (teacher raw log-probs, any order). Returns ``(teacher [M, k+1], student [M, k+1],
    present bool [M, k+1])``: slot ``i < k`` is the bucket of top-k entry ``i`` if it is the
    first entry mapped to its student id, slot ``k`` is OTHER. Absent slots are ``-inf``.
    """
    if student_logprobs.dim() != 2:
        raise ValueError(f"student_logprobs must be [M, V], got {tuple(student_logprobs.shape)}")
    if topk_student_ids.shape != topk_logprobs.shape or topk_student_ids.dim() != 2:
        raise ValueError(
            f"topk_student_ids {tuple(topk_student_ids.shape)} and topk_logprobs "
            f"{tuple(topk_logprobs.shape)} must both be [M, k]"
        )
    m, vocab = student_logprobs.shape
    if topk_student_ids.shape[0] != m:
        raise ValueError(f"{topk_student_ids.shape[0]} top-k rows for {m} student rows")
    k = topk_student_ids.shape[1]
    ids = topk_student_ids.long()
    if ids.numel() and int(ids.max()) >= vocab:
        raise ValueError(
            f"topk_student_ids holds id {int(ids.max())} >= student vocabulary {vocab}"
        )
    valid = ids >= 0
    neg_inf = torch.tensor(-math.inf, dtype=student_logprobs.dtype, device=student_logprobs.device)

    # twins: entries i, j mapped to the same student id; entry i represents its bucket if no
    # earlier entry maps there
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & valid.unsqueeze(1)  # equal ids: i valid too
    earlier = torch.ones(k, k, dtype=torch.bool, device=ids.device).tril(-1)
    rep = valid & ~(same & earlier).any(dim=-1)

    # teacher side in float64: the OTHER mass is 1 - (mapped mass), a cancellation whose
    # rounding error temperature would amplify; [M, k] is cheap at any precision
    teacher = topk_logprobs.detach().to(torch.float64)
    neg_inf64 = torch.tensor(-math.inf, dtype=torch.float64, device=teacher.device)
    # quantised caches can make the top-k sum exceed 1 by rounding; re-normalise only then
    total = torch.logsumexp(teacher, dim=-1, keepdim=True)
    teacher = teacher - total.clamp(min=0.0).nan_to_num(0.0)
    # twin sums as a batched mat-vec in probability space (float64 holds e^-700): far cheaper
    # than a log-sum-exp over [M, k, k]
    probs = teacher.exp()
    merged = torch.bmm(same.to(torch.float64), probs.unsqueeze(-1)).squeeze(-1).log()
    teacher_mapped = torch.where(rep, merged, neg_inf64).to(student_logprobs.dtype)
    mapped_mass = torch.where(valid, probs, torch.zeros_like(probs)).sum(dim=-1).log()
    teacher_other = log1mexp(mapped_mass).to(student_logprobs.dtype)

    student_mapped = torch.where(rep, student_logprobs.gather(1, ids.clamp(min=0)), neg_inf)
    in_mapped = torch.zeros(m, vocab + 1, dtype=torch.bool, device=ids.device)
    in_mapped.scatter_(1, torch.where(valid, ids, vocab), True)
    in_mapped = in_mapped[:, :vocab]
    other_ok = rep.sum(dim=-1) < vocab
    # rows without an OTHER outcome keep one finite entry so log-sum-exp has no -inf/-inf
    # backward (those rows are discarded below)
    fill = in_mapped & other_ok.unsqueeze(1)
    outside = student_logprobs.masked_fill(fill, -math.inf)
    # a student that cannot reach any unmapped id (-inf there: a masked vocabulary) has OTHER
    # mass 0; log-sum-exp of an all -inf row has a NaN backward, so such rows sum a finite
    # stand-in (no gradient flows to it) and are set to -inf after
    unreachable = torch.isneginf(outside).all(dim=-1, keepdim=True)
    student_other = torch.logsumexp(outside.masked_fill(unreachable, 0.0), dim=-1)
    student_other = student_other.masked_fill(unreachable.squeeze(1), -math.inf)

    present = torch.cat([rep, other_ok.unsqueeze(1)], dim=1)
    teacher_b = torch.where(
        present, torch.cat([teacher_mapped, teacher_other.unsqueeze(1)], 1), neg_inf
    )
    student_b = torch.where(
        present, torch.cat([student_mapped, student_other.unsqueeze(1)], 1), neg_inf
    )
    return teacher_b, student_b, present


def bucketed_divergence(
    student_logprobs: Tensor,
    topk_student_ids: Tensor,
    topk_logprobs: Tensor,
    *,
    kind: DivergenceName = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Per-boundary bucketed divergence between teacher top-k and student.

    Shapes: ``student_logprobs`` float [M, V]; ``topk_student_ids`` long [M, k];
    ``topk_logprobs`` float [M, k]. Returns ``(divergence [M], informative bool [M])``;
    ``informative`` is False where no top-k entry maps (the divergence is then 0).
    """
    teacher_b, student_b, present = bucket_distributions(
        student_logprobs, topk_student_ids, topk_logprobs
    )
    return bucket_divergence(teacher_b, student_b, present, kind=kind, beta=beta, temperature=temperature)


def bucket_divergence(
    teacher_b: Tensor,
    student_b: Tensor,
    present: Tensor,
    *,
    kind: DivergenceName = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """:func:`bucketed_divergence` from the buckets :func:`bucket_distributions` returned (for a
    caller that also reads them, e.g. :mod:`avokit.losses.gate`, without building them twice)."""
    teacher_t = tempered(teacher_b, temperature, present)
    student_t = tempered(student_b, temperature, present)
    values = divergence(kind, teacher_t, student_t, beta=beta, present=present)
    informative = present[:, :-1].any(dim=-1)
    return values, informative
