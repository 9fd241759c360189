"""Universal Logit Distillation (Boizard et al. 2024): a cross-tokenizer token-level term that
never looks at token identities.

At an aligned position the teacher's and the student's next-token probabilities are each
sorted in descending order, the shorter vector is padded with zeros, and the term is the L1
distance between the sorted vectors: the closed-form 1-D Wasserstein distance between the
two distributions when every rank is one unit from the next (the paper's uniform ground
cost). Sorting discards which token carries which mass, so no vocabulary map is needed and
the term is exactly zero when the two distributions are equal up to a relabelling of ids.

From an offline top-k cache the teacher's vector is its ``K`` top-k probabilities plus its
tail mass ``1 - sum(top-k)`` as one extra entry; the student's is its own top ``min(K, V)``
probabilities plus its tail mass as one entry, so both sides describe the same ``K + 1``
outcomes ("the i-th most likely token", "anything else") and equal distributions give 0.
Dropping the tail instead would leave a floor of ``tail`` that no student can remove, and
renormalising the top-k would claim the teacher is sharper than it is. With ``K = V`` both
tails are 0 and the term is the paper's full-vocabulary ULD. The tail entry is sorted with
the others: a flat teacher's tail can be its largest outcome.

Cost: one ``softmax`` and one ``topk`` over the ``[N, V]`` student rows and two sorts of
``K + 1`` entries; the teacher side runs in float64 (``[N, K]`` is cheap).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def teacher_probs(teacher_topk_logprobs: Tensor) -> Tensor:
    """The teacher's top-k probabilities: float64 [N, K], same order, no gradient.

    ``teacher_topk_logprobs`` float [N, K]; ``-inf`` (or NaN) entries are empty slots (0). A
    quantised top-k whose mass rounds above 1 is re-normalised.
    """
    lp = torch.nan_to_num(teacher_topk_logprobs.detach().to(torch.float64), nan=-math.inf)
    probs = lp.clamp(max=0.0).exp()
    return probs / probs.sum(dim=-1, keepdim=True).clamp(min=1.0)


def sorted_with_tail(probs: Tensor) -> Tensor:
    """``probs`` [N, k] and its tail mass ``1 - sum(probs)`` as one more entry, sorted
    descending: [N, k+1] (differentiable; sort passes gradients back through its indices)."""
    tail = (1.0 - probs.sum(dim=-1, keepdim=True)).clamp(min=0.0)
    return torch.cat([probs, tail], dim=-1).sort(dim=-1, descending=True).values


def student_top_probs(student_logits: Tensor, k: int) -> Tensor:
    """The student's ``min(k, V)`` largest probabilities: float32 [N, min(k, V)], differentiable.

    ``student_logits`` float [N, V]; log-probs work as well (softmax ignores a per-row shift).
    Its tail is then ``1 - sum(top)``: the absolute error of that difference (~1e-7) is all an
    L1 distance sees, so the cancellation that makes bucketed.py sum the tail's own logits
    does not matter here.
    """
    probs = torch.softmax(student_logits.float(), dim=-1)
    return probs.topk(min(k, probs.shape[-1]), dim=-1).values


def uld_distance(student_logits: Tensor, teacher_topk_logprobs: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position ULD distance between student rows and teacher top-k rows.

    Shapes: ``student_logits`` float [N, V] (or log-probs); ``teacher_topk_logprobs`` float
    [N, K] (raw teacher log-probs, T = 1, any order, ``-inf`` = empty slot). Returns
    ``(distance float32 [N] in [0, 2], informative bool [N])``: ``informative`` is False where
    the teacher row holds no probability at all (every slot empty), whose distance would only
    measure the student against "all mass in an unknown tail".
    """
    if student_logits.dim() != 2 or teacher_topk_logprobs.dim() != 2:
        raise ValueError(f"student_logits must be [N, V] and teacher_topk_logprobs [N, K], got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_topk_logprobs.shape)}")
    if student_logits.shape[0] != teacher_topk_logprobs.shape[0]:
        raise ValueError(f"{teacher_topk_logprobs.shape[0]} teacher rows for "
                         f"{student_logits.shape[0]} student rows")
    k = teacher_topk_logprobs.shape[1]
    t_probs = teacher_probs(teacher_topk_logprobs.to(student_logits.device))
    teacher = sorted_with_tail(t_probs)
    student = sorted_with_tail(student_top_probs(student_logits, k))
    # the student has at most K + 1 entries (fewer when V < K): pad it with zero mass
    student = torch.nn.functional.pad(student, (0, teacher.shape[1] - student.shape[1]))
    distance = (student - teacher.to(student.dtype)).abs().sum(dim=-1)
    return distance, t_probs.sum(dim=-1) > 0.0


def uld_loss(student_logits: Tensor, teacher_topk_logprobs: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean ULD distance over the informative positions: a scalar.

    Shapes: ``student_logits`` float [N, V]; ``teacher_topk_logprobs`` float [N, K];
    ``weights`` float [N] (0 masks a position; a bool mask works too). ``sum(w * d) / sum(w)``
    over the positions whose teacher row holds probability; 0, still on the graph, when none
    is left.
    """
    distance, informative = uld_distance(student_logits, teacher_topk_logprobs)
    w = weights.to(distance.dtype) * informative
    # a masked row never reaches the sum, even with a non-finite distance
    terms = torch.where(w > 0, w * distance, torch.zeros_like(distance))
    total = w.sum()
    return terms.sum() / torch.where(total > 0, total, torch.ones_like(total))
