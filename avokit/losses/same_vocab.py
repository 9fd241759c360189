"""Teachers that share the student's vocabulary: full top-k divergence plus one tail bucket.

When a teacher and the student tokenize identically, every token boundary is a common
boundary and every teacher id *is* a student id. The bucketed term then reduces to the
standard top-k KD objective: the k teacher tokens are compared one by one and the rest of
the vocabulary is one tail bucket (teacher: ``1 - sum(top-k)``; student: its exact mass
outside the top-k). It is the same function as the cross-tokenizer term, fed with the
identity map, so there is one implementation to trust. With ``k = V`` it is the exact
full-vocabulary divergence.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from avokit.losses.bucketed import bucketed_divergence
from avokit.losses.divergences import DivergenceName


def shares_vocabulary(teacher_vocab: Mapping[str, int], student_vocab: Mapping[str, int]) -> bool:
    """True iff both tokenizers map exactly the same token strings to the same ids.

    Pass ``tokenizer.get_vocab()`` of each side (added tokens included).
    """
    return dict(teacher_vocab) == dict(student_vocab)


def identity_student_ids(topk_ids: Tensor, student_vocab_size: int) -> Tensor:
    """Teacher top-k ids used as student ids; ids outside ``[0, V)`` become -1 (unmapped).

    A teacher whose logit matrix is padded beyond the shared tokenizer can rank a padding id
    in its top-k; such an id names no token, so it joins the tail bucket.
    Shapes: long [M, k] -> long [M, k].
    """
    ids = topk_ids.long()
    return ids.masked_fill((ids < 0) | (ids >= student_vocab_size), -1)


def same_vocab_divergence(
    student_logprobs: Tensor,
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    *,
    kind: DivergenceName = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """Top-k + tail divergence per position for a same-vocabulary teacher.

    Shapes: ``student_logprobs`` float [M, V]; ``topk_ids`` long [M, k] (teacher ids = student
    ids); ``topk_logprobs`` float [M, k]. Returns float [M].
    """
    ids = identity_student_ids(topk_ids, student_logprobs.shape[-1])
    values, _ = bucketed_divergence(
        student_logprobs, ids, topk_logprobs, kind=kind, beta=beta, temperature=temperature
    )
    return values
