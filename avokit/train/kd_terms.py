"""Distillation terms of every teacher for one student micro-batch (offline or on-policy):
the teachers' sources and fusion weights (:class:`KDSetup`) and the fusion-scaled terms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from avokit.align import TokenBytes
from avokit.train.data import PackedCorpus
from avokit.train.kd_data import TeacherSource, build_teacher_batch


@dataclass
class KDSetup:
    """Teachers for KD: their sources and per-document fusion weights float32 [D, n_teachers];
    with span-level fusion also per student token, ``token_weights[d]`` float32 [n_d, n_teachers]."""

    sources: list[TeacherSource]
    doc_weights: np.ndarray
    loss_cfg: Any = None  # avokit.recipe.train.LossConfig
    extra: dict[Any, Any] = field(default_factory=dict)  # memoised per (what, width, device)
    token_weights: list[np.ndarray] | None = None
    student_bytes: TokenBytes | None = None  # set: debiased chunk terms (train.loss.chunk_debias)
    # int64 [D]: leading tokens of each document that are context only (on-policy prompts)
    context_tokens: np.ndarray | None = None

    def starts_word(self, width: int, device: Any) -> torch.Tensor | None:
        """bool [width] on ``device``: the student ids that start a word (None: not debiasing)."""
        if self.student_bytes is None:
            return None
        key = ("starts_word", width, str(device))
        if key not in self.extra:
            from avokit.teachers.scoring import word_start_mask

            self.extra[key] = torch.from_numpy(word_start_mask(self.student_bytes, width)).to(device)
        return self.extra[key]

    def weight_of(self, t: int) -> Callable[[int], float | np.ndarray]:
        """Teacher ``t``'s fusion weight of document ``d``: per token where span-level."""
        tokens = self.token_weights  # bound: a lambda does not keep the None check
        if tokens is not None:
            return lambda d: tokens[d][:, t]
        return lambda d: float(self.doc_weights[d, t])


def teacher_terms(logits: torch.Tensor, logprobs: torch.Tensor, targets: torch.Tensor,
                   packed: PackedCorpus, rows: np.ndarray, kd: KDSetup,
                   device: Any) -> dict[str, dict[str, torch.Tensor]]:
    """kd/chunk loss terms of every teacher for this micro-batch, already fusion-scaled.

    ``kd_losses`` returns means *normalised* by the fusion weights, which would cancel the
    weights between teachers. Each term is therefore scaled by the teacher's mean fusion weight
    over the batch's informative boundaries (chunks), its ``kd_share``/``chunk_share``, so
    that the sum over teachers is ``sum_t sum_m w_tm * d_tm / M_t``: per document, the
    fusion-weighted average of teachers (the recipe's teacher weights are already inside
    ``w`` through ``document_weights``).
    """
    from avokit.losses.kd import TeacherBatch, kd_losses

    out: dict[str, dict[str, torch.Tensor]] = {}
    for t, source in enumerate(kd.sources):
        ctx = kd.context_tokens
        context = None if ctx is None else (lambda d, ctx=ctx: int(ctx[d]))
        arrays = build_teacher_batch(packed, rows, source, kd.weight_of(t), context)
        batch = TeacherBatch(**arrays.to_torch(device))
        terms = kd_losses(logits, None, batch, kd.loss_cfg, logprobs, targets=targets,
                          starts_word=kd.starts_word(logits.shape[-1], logits.device))
        out[source.name] = {"kd": terms["kd"] * terms["kd_share"],
                            "chunk": terms["chunk"] * terms["chunk_share"]}
    return out


def teacher_loss(logits: torch.Tensor, logprobs: torch.Tensor, targets: torch.Tensor, packed: PackedCorpus,
                 rows: np.ndarray, kd: KDSetup,
                 device: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
    """The teachers' part of a micro-batch's loss: the sum over teachers of ``kd_weight * kd +
    chunk_weight * chunk`` (a teacher's own weights where it sets them, else ``kd.loss_cfg``'s),
    the detached kd and chunk sums, and each teacher's part."""
    terms = teacher_terms(logits, logprobs, targets, packed, rows, kd, device)
    loss = kd_sum = ch_sum = torch.zeros((), device=logits.device)
    per_teacher: dict[str, float] = {}
    for source in kd.sources:
        tt = terms[source.name]
        kd_w = kd.loss_cfg.kd_weight if source.kd_weight is None else source.kd_weight
        ch_w = kd.loss_cfg.chunk_weight if source.chunk_weight is None else source.chunk_weight
        part = kd_w * tt["kd"] + ch_w * tt["chunk"]
        loss = loss + part
        kd_sum = kd_sum + tt["kd"].detach()
        ch_sum = ch_sum + tt["chunk"].detach()
        per_teacher[source.name] = float(part.detach())
    return loss, {"kd": kd_sum, "chunk": ch_sum}, per_teacher
