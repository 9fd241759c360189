"""Per-teacher distillation losses for one batch: bucketed top-k term and chunk term.

The trainer builds one :class:`TeacherBatch` per teacher and batch from the cache and the
alignment (common boundaries, chunks, vocabulary map), then calls :func:`kd_losses`. Fusion
weights (see :mod:`avokit.losses.fusion`) arrive per boundary and per chunk, so one call
handles documents with different teacher weights; a weight of 0 masks a boundary or chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from avokit.losses.bucketed import bucket_distributions, bucket_divergence
from avokit.losses.ce import shifted_targets, target_logprobs
from avokit.losses.chunk import chunk_divergence, student_chunk_logprobs, word_start_logmass
from avokit.losses.divergences import DivergenceName
from avokit.losses.gate import gate_from_buckets, gold_bucket_slot
from avokit.losses.uld import uld_distance


class DivergenceSettings(Protocol):
    """The settings :func:`kd_losses` reads. The recipe's ``train.loss`` section
    (``avokit.recipe.train.LossConfig``) has them; a Protocol, so losses never import the
    recipe layer above them."""

    @property
    def divergence(self) -> DivergenceName: ...

    @property
    def jsd_beta(self) -> float: ...

    @property
    def temperature(self) -> float: ...

    @property
    def chunk_tau(self) -> float: ...

    @property
    def token_loss(self) -> str: ...  # bucketed | uld

    @property
    def kd_gate(self) -> str: ...  # none | teacher_better (avokit.losses.gate)

    @property
    def chunk_gate(self) -> str: ...  # none | teacher_better: chunks the teacher finds likelier


@dataclass(frozen=True)
class TeacherBatch:
    """One teacher's targets for one student batch of ``B`` rows of ``T`` tokens.

    ``M`` common boundaries, ``k`` top-k width, ``C`` chunks over the whole batch.

    - b_idx: long [M], batch row of each boundary
    - s_pos: long [M], input position whose *output* logits predict the student token that
      starts at the boundary (for a boundary at student token ``j`` of the row: ``j - 1``)
    - topk_student_ids: long [M, k], teacher top-k ids mapped to student ids, -1 = unmapped
    - topk_logprobs: float [M, k], teacher raw log-probs (T = 1)
    - boundary_weight: float [M], fusion weight of the boundary's document (0 masks it)
    - chunk_teacher_logprob: float [C], sum of teacher gold log-probs over the chunk's tokens
    - chunk_of_target: long [B, T], for logit position ``p`` (predicting input token ``p+1``)
      the chunk id of token ``p+1``, or -1 (padding, prompt, chunk not wholly in the window);
      the last column must be -1 unless ``kd_losses`` gets explicit ``targets``
    - chunk_weight: float [C], fusion weight of the chunk's document (0 masks it)
    - chunk_next: long [C] or None, for a debiased chunk the flat index ``b * T + p`` of the
      logit position predicting the student token right after it (a word start), else -1;
      the teacher's ``chunk_teacher_logprob`` of such a chunk already includes its word-start
      mass (see :mod:`avokit.losses.chunk`). None: no chunk is debiased
    """

    b_idx: Tensor
    s_pos: Tensor
    topk_student_ids: Tensor
    topk_logprobs: Tensor
    boundary_weight: Tensor
    chunk_teacher_logprob: Tensor
    chunk_of_target: Tensor
    chunk_weight: Tensor
    chunk_next: Tensor | None = None

    @property
    def n_boundaries(self) -> int:
        """``M``."""
        return int(self.b_idx.shape[0])

    @property
    def n_chunks(self) -> int:
        """``C``."""
        return int(self.chunk_teacher_logprob.shape[0])

    def to(self, device: torch.device | str) -> TeacherBatch:
        """A copy with every tensor on ``device``."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if getattr(self, f.name) is not None})

    @classmethod
    def empty(
        cls, batch_size: int, seq_len: int, k: int, device: torch.device | str = "cpu"
    ) -> TeacherBatch:
        """A batch with no boundaries and no chunks (a teacher with nothing for these rows)."""
        long: dict[str, Any] = {"dtype": torch.long, "device": device}
        flt: dict[str, Any] = {"dtype": torch.float32, "device": device}
        return cls(
            b_idx=torch.zeros(0, **long),
            s_pos=torch.zeros(0, **long),
            topk_student_ids=torch.zeros(0, k, **long),
            topk_logprobs=torch.zeros(0, k, **flt),
            boundary_weight=torch.zeros(0, **flt),
            chunk_teacher_logprob=torch.zeros(0, **flt),
            chunk_of_target=torch.full((batch_size, seq_len), -1, **long),
            chunk_weight=torch.zeros(0, **flt),
        )

    def validate(self, batch_size: int, seq_len: int) -> None:
        """Raise ``ValueError`` naming the field when shapes or indices do not fit [B, T]."""
        m = self.n_boundaries
        for name in ("s_pos", "boundary_weight"):
            if getattr(self, name).shape != (m,):
                raise ValueError(
                    f"TeacherBatch.{name} must be [M={m}], got {tuple(getattr(self, name).shape)}"
                )
        for name in ("topk_student_ids", "topk_logprobs"):
            t = getattr(self, name)
            if t.dim() != 2 or t.shape[0] != m:
                raise ValueError(f"TeacherBatch.{name} must be [M={m}, k], got {tuple(t.shape)}")
        if self.topk_student_ids.shape != self.topk_logprobs.shape:
            raise ValueError("TeacherBatch.topk_student_ids and topk_logprobs differ in shape")
        if m and (int(self.b_idx.min()) < 0 or int(self.b_idx.max()) >= batch_size):
            raise ValueError(f"TeacherBatch.b_idx outside [0, {batch_size})")
        if m and (int(self.s_pos.min()) < 0 or int(self.s_pos.max()) >= seq_len):
            raise ValueError(f"TeacherBatch.s_pos outside [0, {seq_len})")
        c = self.n_chunks
        if self.chunk_weight.shape != (c,):
            raise ValueError(
                f"TeacherBatch.chunk_weight must be [C={c}], got {tuple(self.chunk_weight.shape)}"
            )
        if self.chunk_of_target.shape != (batch_size, seq_len):
            raise ValueError(
                f"TeacherBatch.chunk_of_target must be [B={batch_size}, T={seq_len}], "
                f"got {tuple(self.chunk_of_target.shape)}"
            )
        if self.chunk_of_target.numel() and int(self.chunk_of_target.max()) >= c:
            raise ValueError(f"TeacherBatch.chunk_of_target holds chunk id >= C={c}")
        if self.chunk_next is not None:
            if self.chunk_next.shape != (c,):
                raise ValueError(f"TeacherBatch.chunk_next must be [C={c}], got {tuple(self.chunk_next.shape)}")
            if c and (int(self.chunk_next.max()) >= batch_size * seq_len or int(self.chunk_next.min()) < -1):
                raise ValueError(f"TeacherBatch.chunk_next outside [-1, B*T={batch_size * seq_len})")


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``sum(w * v) / sum(w)`` over [N]; 0 (attached to ``values``' graph) when ``sum(w) == 0``.

    Entries with zero weight are excluded even if their value is not finite.
    """
    w = weights.to(values.dtype)
    terms = torch.where(w > 0, w * values, torch.zeros_like(values))
    total = w.sum()
    return terms.sum() / torch.where(total > 0, total, torch.ones_like(total))


def weight_share(weights: Tensor, valid: Tensor) -> Tensor:
    """Mean fusion weight over the ``valid`` entries (0 when none is valid), a scalar tensor.

    Shapes: ``weights`` float [N], ``valid`` bool [N]. ``weighted_mean(v, w * valid) *
    weight_share(w, valid)`` equals ``sum(w * v * valid) / sum(valid)``: entries keep their
    fusion weight instead of having it normalised away, which is what lets the terms of
    teachers that share a document be summed.
    """
    # stays on the device: no host sync per teacher and step
    return (weights * valid).sum() / valid.sum().clamp(min=1)


def kd_losses(
    student_logits: Tensor,
    input_ids: Tensor | None,
    batch: TeacherBatch,
    cfg: DivergenceSettings,
    student_logprobs: Tensor | None = None,
    *,
    targets: Tensor | None = None,
    starts_word: Tensor | None = None,
) -> dict[str, Tensor]:
    """Distillation terms of one teacher for one batch.

    Shapes: ``student_logits`` float [B, T, V]; ``input_ids`` long [B, T]; ``batch`` as
    documented on :class:`TeacherBatch`; ``student_logprobs`` optional float [B, T, V] =
    ``log_softmax(student_logits, -1)`` when the trainer already computed it for CE.
    The chunk term needs the student's gold tokens: ``targets[b, p] = input_ids[b, p+1]``, or
    pass ``targets`` long [B, T] (labels per logit position) and ``input_ids=None`` when the
    packing keeps the token after each row (then the last position may belong to a chunk).
    Debiased chunks (``batch.chunk_next``) need ``starts_word`` bool [V]: the student ids
    that start a word (space/newline/tab first, or special).

    Returns ``{"kd": weighted mean over informative boundaries of the bucketed divergence
    (cfg.divergence, cfg.temperature, cfg.jsd_beta), or with ``cfg.token_loss == "uld"`` of
    the ULD distance (:mod:`avokit.losses.uld`; every boundary whose teacher row holds
    probability is informative, mapped or not), with ``cfg.kd_gate == "teacher_better"``
    summed only where the teacher's bucket of the gold token outweighs the student's
    (:mod:`avokit.losses.gate`) and still divided by every informative boundary, "chunk": weighted mean over chunks of
    the binarised chunk divergence (same cfg.divergence, cfg.chunk_tau), with ``cfg.chunk_gate
    == "teacher_better"`` only over chunks whose teacher log-likelihood exceeds the student's
    (there the divergence raises the student's likelihood of the gold chunk), its share still
    counting every chunk in the window}``; both scalars,
    0 when nothing is left after masking. Unweighted by ``cfg.kd_weight``/``cfg.chunk_weight``:
    the trainer combines terms (and logs them separately). Also ``kd_share`` and
    ``chunk_share`` (scalars, no gradient, see :func:`weight_share`): ``kd * kd_share`` is
    ``sum(w * d) / count`` over the informative boundaries, the form in which several teachers'
    terms add up to the per-boundary fusion-weighted average.
    """
    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, T, V], got {tuple(student_logits.shape)}")
    bsz, seq_len, _ = student_logits.shape
    batch.validate(bsz, seq_len)

    if student_logprobs is not None:
        rows = student_logprobs[batch.b_idx, batch.s_pos]
    else:
        # only the M boundary rows are normalised: [M, V], never [B, T, V] twice
        rows = torch.log_softmax(student_logits[batch.b_idx, batch.s_pos].float(), dim=-1)
    if cfg.token_loss == "uld":
        # the teacher's ids do not matter: only its sorted probabilities at the same positions
        values, informative = uld_distance(rows, batch.topk_logprobs)
    else:
        buckets = bucket_distributions(rows, batch.topk_student_ids, batch.topk_logprobs)
        values, informative = bucket_divergence(
            *buckets, kind=cfg.divergence, beta=cfg.jsd_beta, temperature=cfg.temperature
        )
    kept = informative
    if cfg.kd_gate == "teacher_better":
        if cfg.token_loss == "uld":
            raise ValueError("kd_gate 'teacher_better' reads the bucketed term's buckets; token_loss 'uld' has none")
        # the gate reads the same buckets as the divergence
        slot = gold_bucket_slot(batch.topk_student_ids, _boundary_gold(input_ids, targets, batch))
        kept = informative & gate_from_buckets(*buckets, slot)
    elif cfg.kd_gate != "none":
        raise ValueError(f"kd_gate must be 'none' or 'teacher_better', got {cfg.kd_gate!r}")
    kd = weighted_mean(values, batch.boundary_weight * kept)
    # a closed gate drops its positions' terms; the rest keep the weight they have ungated
    # (the share counts every informative position, so gating never scales the open ones up)
    kd_share = (batch.boundary_weight * kept).sum() / informative.sum().clamp(min=1)

    student_chunk, n_tokens = _student_chunks(student_logits, input_ids, batch, student_logprobs, targets,
                                              starts_word)
    chunk, chunk_share = _chunk_term(student_chunk, n_tokens, batch, cfg)
    return {"kd": kd, "chunk": chunk, "kd_share": kd_share, "chunk_share": chunk_share}


def _chunk_term(student_chunk: Tensor, n_tokens: Tensor, batch: TeacherBatch,
                cfg: DivergenceSettings) -> tuple[Tensor, Tensor]:
    """The chunk term of :func:`kd_losses` and its share, from the student's chunk
    log-likelihoods [C] and the number of each chunk's tokens in the window [C]."""
    chunk_values = chunk_divergence(
        student_chunk,
        batch.chunk_teacher_logprob,
        kind=cfg.divergence,
        beta=cfg.jsd_beta,
        tau=cfg.chunk_tau,
    )
    # a chunk none of whose tokens is in the window has no student likelihood to compare
    in_window = n_tokens > 0
    open_chunks = in_window
    if cfg.chunk_gate == "teacher_better":
        # no gradient through the gate: it reads the gold text's likelihoods, as CE does
        open_chunks = in_window & (batch.chunk_teacher_logprob > student_chunk.detach())
    elif cfg.chunk_gate != "none":
        raise ValueError(f"chunk_gate must be 'none' or 'teacher_better', got {cfg.chunk_gate!r}")
    chunk = weighted_mean(chunk_values, batch.chunk_weight * open_chunks)
    return chunk, (batch.chunk_weight * open_chunks).sum() / in_window.sum().clamp(min=1)


def _boundary_gold(input_ids: Tensor | None, targets: Tensor | None, batch: TeacherBatch) -> Tensor:
    """long [M]: the student's gold token at each boundary (the token its logits predict)."""
    if targets is not None:
        return targets[batch.b_idx, batch.s_pos]
    if input_ids is None:
        raise ValueError("kd_losses needs input_ids or targets for kd_gate 'teacher_better'")
    if batch.n_boundaries and int(batch.s_pos.max()) + 1 >= input_ids.shape[1]:
        raise ValueError("kd_losses: a boundary predicts the token after the last input id; pass targets=")
    return input_ids[batch.b_idx, batch.s_pos + 1]


def _student_chunks(student_logits: Tensor, input_ids: Tensor | None, batch: TeacherBatch,
                    student_logprobs: Tensor | None, targets: Tensor | None,
                    starts_word: Tensor | None) -> tuple[Tensor, Tensor]:
    """The student's log-likelihood of every chunk [C] (debiased ones with its word-start mass
    at the next position) and the number of its tokens in the window [C]."""
    bsz, seq_len, _ = student_logits.shape
    select = batch.chunk_of_target >= 0
    if targets is None:
        if input_ids is None:
            raise ValueError("kd_losses needs input_ids or targets for the chunk term")
        targets = shifted_targets(input_ids, select)
    gold = target_logprobs(student_logits, targets, select, student_logprobs)
    student_chunk, n_tokens = student_chunk_logprobs(
        gold, batch.chunk_of_target[select], batch.n_chunks
    )
    if batch.chunk_next is not None:
        if starts_word is None:
            raise ValueError("kd_losses: TeacherBatch.chunk_next (debiased chunks) needs starts_word")
        debiased = batch.chunk_next >= 0
        flat = batch.chunk_next.clamp(min=0)
        if student_logprobs is not None:
            next_rows = student_logprobs.reshape(bsz * seq_len, -1)[flat]
        else:
            next_rows = torch.log_softmax(student_logits.reshape(bsz * seq_len, -1)[flat].float(), dim=-1)
        mass = word_start_logmass(next_rows, starts_word.to(next_rows.device))
        student_chunk = student_chunk + torch.where(debiased, mass.to(student_chunk.dtype),
                                                    torch.zeros_like(student_chunk))
    return student_chunk, n_tokens
