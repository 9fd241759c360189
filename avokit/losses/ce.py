"""Next-token cross-entropy and the student's gold-token log-probabilities.

Position convention (shared by every loss): the student's output logits at position ``p``
of a row predict the token that follows input token ``p``. Callers either give the
``input_ids`` (targets are ``input_ids[:, p+1]``; the last position has no target) or, when
their packing keeps one extra token per row, the ``targets`` [B, T] directly
(``targets[b, p]`` = the token logit position ``p`` predicts; every position has one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_logits(student_logits: Tensor, student_logprobs: Tensor | None) -> None:
    if student_logits.dim() != 3:
        raise ValueError(
            f"student_logits must be [B, T, V], got shape {tuple(student_logits.shape)}"
        )
    if student_logprobs is not None and student_logprobs.shape != student_logits.shape:
        raise ValueError(
            f"student_logprobs shape {tuple(student_logprobs.shape)} differs from "
            f"logits {tuple(student_logits.shape)}"
        )


def shifted_targets(input_ids: Tensor, select: Tensor) -> Tensor:
    """Targets from input ids: ``targets[b, p] = input_ids[b, p + 1]`` (last column: 0, unused).

    Shapes: ``input_ids`` long [B, T]; ``select`` bool [B, T] (positions that will be read).
    Raises if ``select`` marks the last column, which has no next token in ``input_ids``.
    """
    if select.shape != input_ids.shape:
        raise ValueError(
            f"mask shape {tuple(select.shape)} does not match input_ids {tuple(input_ids.shape)}"
        )
    if select.shape[1] and bool(select[:, -1].any()):
        raise ValueError(
            "mask marks the last position, which has no next token in input_ids "
            "(pass targets= when the packing keeps the following token)"
        )
    targets = torch.zeros_like(input_ids)
    targets[:, :-1] = input_ids[:, 1:]
    return targets


def target_logprobs(
    student_logits: Tensor,
    targets: Tensor,
    select: Tensor,
    student_logprobs: Tensor | None = None,
) -> Tensor:
    """Student log-probability of ``targets[b, p]`` at each selected logit position.

    Shapes: ``student_logits`` float [B, T, V]; ``targets`` long [B, T]; ``select`` bool
    [B, T]; ``student_logprobs`` optional float [B, T, V] = ``log_softmax(student_logits)``
    when the caller already has it (then this is a gather). Returns float [N],
    ``N = select.sum()``, in row-major order. Without precomputed log-probs only the N
    selected rows are normalised ([N, V], not [B, T, V]).
    """
    _check_logits(student_logits, student_logprobs)
    if targets.shape != student_logits.shape[:2] or select.shape != targets.shape:
        raise ValueError(
            f"targets {tuple(targets.shape)} and mask {tuple(select.shape)} must match logits "
            f"[B, T] = {tuple(student_logits.shape[:2])}"
        )
    b_idx, p_idx = select.bool().nonzero(as_tuple=True)
    gold = targets[b_idx, p_idx].long()
    vocab = student_logits.shape[-1]
    if gold.numel() and (int(gold.min()) < 0 or int(gold.max()) >= vocab):
        raise ValueError(f"a selected target id lies outside the student vocabulary [0, {vocab})")
    if student_logprobs is not None:
        return student_logprobs[b_idx, p_idx, gold]
    return -F.cross_entropy(student_logits[b_idx, p_idx].float(), gold, reduction="none")


def gold_logprobs(
    student_logits: Tensor,
    input_ids: Tensor,
    select: Tensor,
    student_logprobs: Tensor | None = None,
) -> Tensor:
    """Student log-probability of the real next input token at the selected positions.

    Shapes: ``student_logits`` float [B, T, V]; ``input_ids`` long [B, T]; ``select`` bool
    [B, T] (``select[:, T-1]`` must be False). Returns float [N] as :func:`target_logprobs`.
    """
    select = select.bool()
    return target_logprobs(
        student_logits, shifted_targets(input_ids, select), select, student_logprobs
    )


def cross_entropy(
    student_logits: Tensor,
    input_ids: Tensor,
    loss_mask: Tensor,
    student_logprobs: Tensor | None = None,
    *,
    targets: Tensor | None = None,
) -> Tensor:
    """Mean next-token cross-entropy in nats per predicted token.

    Shapes: ``student_logits`` float [B, T, V]; ``input_ids`` long [B, T]; ``loss_mask``
    [B, T] (bool or 0/1), ``loss_mask[b, p] = 1`` iff the token predicted at ``p`` is a
    training target (0 for padding, prompt tokens and, with input ids only, the last
    position). ``student_logprobs`` optional precomputed ``log_softmax(student_logits)``.
    ``targets`` optional long [B, T] labels per logit position (then ``input_ids`` is not
    read and the last position may be a target). Returns a scalar; 0 (still attached to
    the graph) when nothing is selected.
    """
    select = loss_mask.bool()
    if targets is None:
        gold = gold_logprobs(student_logits, input_ids, select, student_logprobs)
    else:
        gold = target_logprobs(student_logits, targets, select, student_logprobs)
    count = torch.tensor(max(gold.numel(), 1), device=gold.device, dtype=gold.dtype)
    return -gold.sum() / count
