"""Distillation losses: pure tensor functions with shapes in their docstrings.

- :mod:`ce`: next-token cross-entropy and gold-token log-probs
- :mod:`divergences`: forward/reverse KL, generalised JSD, TVD over small outcome sets
- :mod:`bucketed`: cross-tokenizer top-k divergence at common boundaries
- :mod:`same_vocab`: top-k + tail divergence for a teacher sharing the student's vocabulary
- :mod:`uld`: Universal Logit Distillation, sorted-probability L1 that ignores token ids
- :mod:`chunk`: approximate likelihood matching over common-boundary chunks
- :mod:`kd`: :class:`TeacherBatch` and :func:`kd_losses` (one teacher, one batch)
- :mod:`fusion`: per-document teacher weights
"""

from avokit.losses.bucketed import bucketed_divergence
from avokit.losses.ce import cross_entropy, gold_logprobs, target_logprobs
from avokit.losses.chunk import chunk_divergence
from avokit.losses.divergences import divergence
from avokit.losses.fusion import document_bpb, document_weights, mean_teacher_weights
from avokit.losses.kd import TeacherBatch, kd_losses
from avokit.losses.same_vocab import same_vocab_divergence, shares_vocabulary
from avokit.losses.uld import uld_distance, uld_loss

__all__ = [
    "TeacherBatch",
    "bucketed_divergence",
    "chunk_divergence",
    "cross_entropy",
    "divergence",
    "document_bpb",
    "document_weights",
    "gold_logprobs",
    "target_logprobs",
    "kd_losses",
    "mean_teacher_weights",
    "same_vocab_divergence",
    "shares_vocabulary",
    "uld_distance",
    "uld_loss",
]
