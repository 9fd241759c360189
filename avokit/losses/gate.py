"""Per-position gate of the token-level KD term: keep a position only where KD agrees with gold.

A pretrained student is already right at many positions where a teacher's aligned target is
not: the transfer study measured the byte-conditional targets giving the gold token less mass
than the untouched SmolLM2-135M at ~39% of positions (bench/results/transfer_signal.md). There
the KD term pulls the student *away* from the text it is trained on, against the CE term.

In the bucketed divergence the student's mass inside one bucket keeps its own proportions, so
the target's probability of the gold token is ``q(gold) * t(B) / s(B)`` where ``B`` is the
gold token's bucket (its own bucket when the teacher's top-k maps to it, else OTHER), ``t``
the teacher's and ``s`` the student's bucket mass. The forward-KL gradient on the gold
logit is ``q(gold) * (1 - t(B) / s(B))``: KD raises the gold token exactly when
``t(B) > s(B)``. The gate keeps those positions ("the teacher is better than the student
here, by the gold text's own measure") and drops the others; CE still trains every position.
It reads the gold text, as CE does, and carries no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avokit.losses.bucketed import bucket_distributions


def gold_bucket_slot(topk_student_ids: Tensor, gold: Tensor) -> Tensor:
    """The bucket slot of the gold token at each position: the first top-k entry mapped to it,
    else ``k`` (OTHER), matching :func:`~avokit.losses.bucketed.bucket_distributions`' slots.

    Shapes: ``topk_student_ids`` long [M, k] (-1 unmapped); ``gold`` long [M]. Returns long [M].
    """
    if gold.shape != topk_student_ids.shape[:1]:
        raise ValueError(f"gold must be [M={topk_student_ids.shape[0]}], got {tuple(gold.shape)}")
    k = topk_student_ids.shape[1]
    match = topk_student_ids.long() == gold.long().unsqueeze(1)
    first = match.to(torch.int8).argmax(dim=1)
    return torch.where(match.any(dim=1), first, torch.full_like(first, k))


def teacher_better_gate(
    student_logprobs: Tensor, topk_student_ids: Tensor, topk_logprobs: Tensor, gold: Tensor
) -> Tensor:
    """bool [M]: positions where the teacher's bucket holding the gold token has more mass than
    the student's (where the bucketed KD term raises the gold token's probability).

    Shapes: ``student_logprobs`` float [M, V]; ``topk_student_ids`` long [M, k];
    ``topk_logprobs`` float [M, k] (raw, T = 1); ``gold`` long [M], the student's gold token
    at each position. A position with no bucket for the gold token at all (every slot absent)
    is closed.
    """
    with torch.no_grad():
        buckets = bucket_distributions(student_logprobs.detach(), topk_student_ids, topk_logprobs)
    return gate_from_buckets(*buckets, gold_bucket_slot(topk_student_ids, gold))


def gate_from_buckets(teacher_b: Tensor, student_b: Tensor, present: Tensor, slot: Tensor) -> Tensor:
    """:func:`teacher_better_gate` from buckets already built (``bucket_distributions``' outputs,
    [M, k+1] each) and the gold token's slot [M]."""
    with torch.no_grad():
        slot = slot.unsqueeze(1)
        t = teacher_b.gather(1, slot).squeeze(1)
        s = student_b.gather(1, slot).squeeze(1)
        return present.gather(1, slot).squeeze(1) & (t > s)
