"""Next-token cross-entropy and the student's gold-token log-probabilities.

Position convention (shared by every loss): the student's output logits at position ``p``
of an input row predict input token ``p + 1``. The last position has no target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_shapes(student_logits: Tensor, input_ids: Tensor, select: Tensor, name: str) -> None:
    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, T, V], got shape {tuple(student_logits.shape)}")
    if input_ids.shape != student_logits.shape[:2]:
        raise ValueError(
            f"input_ids shape {tuple(input_ids.shape)} does not match logits "
            f"[B, T] = {tuple(student_logits.shape[:2])}"
        )
    if select.shape != input_ids.shape:
        raise ValueError(f"{name} shape {tuple(select.shape)} does not match input_ids {tuple(input_ids.shape)}")


def gold_logprobs(
    student_logits: Tensor,
    input_ids: Tensor,
    select: Tensor,
    student_logprobs: Tensor | None = None,
) -> Tensor:
    """Student log-probability of the real next token at the selected positions.

    Shapes: ``student_logits`` float [B, T, V]; ``input_ids`` long [B, T]; ``select`` bool
    [B, T], ``select[b, p]`` = use position ``p`` (which predicts ``input_ids[b, p + 1]``);
    ``select[:, T-1]`` must be False. ``student_logprobs`` optional float [B, T, V] =
    ``log_softmax(student_logits, -1)`` when the caller already has it (then only a gather
    is done). Returns float [N], ``N = select.sum()``, in row-major order of the selection.

    Without precomputed log-probs only the N selected rows are normalised ([N, V], not
    [B, T, V]).
    """
    select = select.bool()
    _check_shapes(student_logits, input_ids, select, "select")
    if select.shape[1] and bool(select[:, -1].any()):
        raise ValueError("select marks the last position, which has no next token to predict")
    b_idx, p_idx = select.nonzero(as_tuple=True)
    targets = input_ids[b_idx, p_idx + 1]
    if student_logprobs is not None:
        if student_logprobs.shape != student_logits.shape:
            raise ValueError(
                f"student_logprobs shape {tuple(student_logprobs.shape)} differs from "
                f"logits {tuple(student_logits.shape)}"
            )
        return student_logprobs[b_idx, p_idx, targets]
    rows = student_logits[b_idx, p_idx]
    return -F.cross_entropy(rows.float(), targets, reduction="none")


def cross_entropy(
    student_logits: Tensor,
    input_ids: Tensor,
    loss_mask: Tensor,
    student_logprobs: Tensor | None = None,
) -> Tensor:
    """Mean next-token cross-entropy in nats per predicted token.

    Shapes: ``student_logits`` float [B, T, V]; ``input_ids`` long [B, T]; ``loss_mask``
    [B, T] (bool or 0/1), ``loss_mask[b, p] = 1`` iff token ``p + 1`` is a training target
    (0 for padding, prompt tokens and the last position). ``student_logprobs`` optional
    precomputed ``log_softmax(student_logits)`` [B, T, V]. Returns a scalar; 0 (still
    attached to the graph) when nothing is selected.
    """
    select = loss_mask.bool()
    gold = gold_logprobs(student_logits, input_ids, select, student_logprobs)
    # clamp keeps the empty case at 0 instead of 0/0 and leaves real counts untouched
    return -gold.sum() / torch.clamp(torch.tensor(gold.numel(), device=gold.device, dtype=gold.dtype), min=1)
