"""Teacher records from the offline cache -> per-batch ``TeacherBatch`` index tensors.

The expensive work (vocabulary map, byte alignment, top-k remapping, chunk sums) happens once
per (teacher, document) and is memoised; building a batch is then a handful of numpy slices
per packed document span. A boundary (and its chunk) is used only when every student token of
the chunk is a target of the row: packing may cut a document anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avokit.align import TokenBytes, align
from avokit.align.conditional import PrefixIndex, conditional_targets
from avokit.records import TeacherRecords
from avokit.train.data import PackedCorpus

LN2 = math.log(2.0)


@dataclass(frozen=True)
class DocKD:
    """One teacher's aligned view of one document, in the student's token indices.

    ``m`` chunks; chunk ``j`` spans student tokens ``[first[j], last[j]]`` (inclusive).
    - first, last: int64 [m]; student_chunk: int64 [n_student] (-1 past the teacher's coverage)
    - topk_student_ids: int64 [m, k] (-1 unmapped); topk_logprobs: float32 [m, k]
    - chunk_logprob: float32 [m], teacher gold log-prob summed over the chunk's teacher tokens
    - bpb: the teacher's bits per byte on the bytes it covers (inf when it covers none)
    - dense: token-level targets at every student position (``train.loss.targets: dense``,
      see :mod:`avokit.align.conditional`), replacing the boundary rows above; None otherwise
    - chunk_next_logmass: float32 [m], the teacher's log-probability that a new word starts
      right after chunk ``j`` (``train.loss.chunk_debias``), NaN where the text does not
      start a word there or the teacher's records end; None without debiasing
    """

    first: np.ndarray
    last: np.ndarray
    student_chunk: np.ndarray
    topk_student_ids: np.ndarray
    topk_logprobs: np.ndarray
    chunk_logprob: np.ndarray
    bpb: float
    dense: DenseRows | None = None
    chunk_next_logmass: np.ndarray | None = None


@dataclass(frozen=True)
class DenseRows:
    """Byte-conditional targets of one document: ``m`` student positions, ``c`` candidates.

    - pos: int64 [m] student token index; ids: int64 [m, c] student ids (-1 none);
      logprobs: float32 [m, c] conditional log-probs (-inf for dropped candidates)
    """

    pos: np.ndarray
    ids: np.ndarray
    logprobs: np.ndarray


@dataclass(frozen=True)
class DenseSpec:
    """What dense targets need besides the records: the teacher's token bytes and the
    student's longest-prefix index."""

    teacher: TokenBytes
    index: PrefixIndex


def chunk_word_logmass(records: TeacherRecords, chunk_end_token: np.ndarray, starts_word: np.ndarray) -> np.ndarray:
    """The teacher's log-probability that a new word follows each chunk: float32 [m].

    ``chunk_end_token`` int64 [m]: index of each chunk's last teacher token; ``starts_word``
    bool [V_teacher]: ids whose bytes begin a word in the text (space/newline/tab first, not
    special). Where the teacher's next token starts a word, the chunk is followed by a word
    start in the text, and the record of that next position holds the teacher's total mass on
    word-starting tokens (``boundary_logmass``); NaN elsewhere and past the records' end.
    """
    nxt = np.asarray(chunk_end_token, dtype=np.int64) + 1
    out = np.full(nxt.shape, np.nan, dtype=np.float32)
    inside = np.nonzero(nxt < records.n_positions)[0]
    ids = np.asarray(records.token_ids, dtype=np.int64)[nxt[inside]]
    ok = (ids >= 0) & (ids < starts_word.shape[0])
    ok[ok] = starts_word[ids[ok]]
    out[inside[ok]] = np.asarray(records.boundary_logmass, dtype=np.float32)[nxt[inside[ok]]]
    return out


def doc_kd(records: TeacherRecords, student_ends: np.ndarray, teacher_to_student: np.ndarray,
           dense: DenseSpec | None = None, starts_word: np.ndarray | None = None) -> DocKD:
    """Align one teacher's records for a document to the student's tokens of that document.

    A teacher may cover only a prefix of the document (its ``max_length``): both tokenizations
    are cut at the last byte where both end a token, and student tokens past it get no chunk.
    ``starts_word`` (bool [V_teacher], see :func:`chunk_word_logmass`) asks for the chunks'
    debiasing masses.
    """
    t_ends = np.asarray(records.byte_ends, dtype=np.int64)
    s_ends = np.asarray(student_ends, dtype=np.int64)
    n_s = int(s_ends.shape[0])
    k = int(records.topk_ids.shape[1]) if records.topk_ids.ndim == 2 else 0
    common = np.intersect1d(t_ends, s_ends, assume_unique=True)
    if common.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return DocKD(empty, empty, np.full(n_s, -1, np.int64), np.zeros((0, k), np.int64),
                     np.zeros((0, k), np.float32), np.zeros(0, np.float32), math.inf)
    cut = int(common[-1])
    n_t = int(np.searchsorted(t_ends, cut, side="right"))
    n_sc = int(np.searchsorted(s_ends, cut, side="right"))
    al = align(t_ends[:n_t], s_ends[:n_sc])
    m = al.n_chunks
    first = al.student_pos
    last = np.concatenate([first[1:], [n_sc]]).astype(np.int64) - 1
    student_chunk = np.full(n_s, -1, dtype=np.int64)
    student_chunk[:n_sc] = al.student_chunk
    topk = np.asarray(records.topk_ids, dtype=np.int64)[al.teacher_pos]
    valid = (topk >= 0) & (topk < teacher_to_student.shape[0])
    mapped = np.where(valid, teacher_to_student[np.clip(topk, 0, teacher_to_student.shape[0] - 1)], -1)
    gold = np.asarray(records.gold_logprob, dtype=np.float64)[:n_t]
    chunk_lp = np.bincount(al.teacher_chunk, weights=gold, minlength=m).astype(np.float32)
    bpb = float(-gold.sum() / LN2 / cut) if cut > 0 else math.inf
    rows = None
    if dense is not None:
        starts = np.concatenate([[0], s_ends[:-1]]).astype(np.int64)
        # the student's ends too: where its token runs past the teacher's, the real token gets
        # the teacher's continuation mass (avokit.align.conditional)
        ct = conditional_targets(records, dense.teacher, starts, dense.index, s_ends)
        rows = DenseRows(ct.student_pos, ct.student_ids, ct.logprobs)
    next_mass = None
    if starts_word is not None:
        chunk_end = np.concatenate([al.teacher_pos[1:], [n_t]]).astype(np.int64) - 1
        next_mass = chunk_word_logmass(records, chunk_end, starts_word)
    return DocKD(
        first=first,
        last=last,
        student_chunk=student_chunk,
        topk_student_ids=mapped.astype(np.int64),
        topk_logprobs=np.asarray(records.topk_logprobs, dtype=np.float32)[al.teacher_pos],
        chunk_logprob=chunk_lp,
        bpb=bpb,
        dense=rows,
        chunk_next_logmass=next_mass,
    )


@dataclass(frozen=True)
class TeacherBatchArrays:
    """The fields of ``avokit.losses.kd.TeacherBatch`` as numpy arrays (shapes in that contract)."""

    b_idx: np.ndarray
    s_pos: np.ndarray
    topk_student_ids: np.ndarray
    topk_logprobs: np.ndarray
    boundary_weight: np.ndarray
    chunk_teacher_logprob: np.ndarray
    chunk_of_target: np.ndarray
    chunk_weight: np.ndarray
    chunk_next: np.ndarray | None  # None when the source does not debias chunks

    def to_torch(self, device: Any) -> dict[str, Any]:
        """Tensors on ``device`` keyed by TeacherBatch field name (None stays None)."""
        import torch

        return {name: None if getattr(self, name) is None
                else torch.from_numpy(np.ascontiguousarray(getattr(self, name))).to(device)
                for name in self.__dataclass_fields__}


@dataclass
class TeacherSource:
    """One teacher's cache, seen from the student: records lookup and vocabulary map."""

    name: str
    weight: float
    records: Mapping[str, TeacherRecords]
    teacher_to_student: np.ndarray  # int64 [V_teacher], -1 = unmapped
    kd_weight: float | None = None  # this teacher's term weights; None = the recipe's train.loss
    chunk_weight: float | None = None
    dense: DenseSpec | None = None  # token targets at every student position, not only boundaries
    # bool [V_teacher], ids that start a word in the text: set, chunk likelihoods are debiased
    # ("this chunk, then a new word"), see avokit.losses.chunk
    starts_word: np.ndarray | None = None
    memo: dict[str, DocKD] = field(default_factory=dict)
    row_memo: dict[int, RowKD] = field(default_factory=dict)  # per packed row, see build_teacher_batch

    def doc(self, doc_id: str, student_ends: np.ndarray) -> DocKD | None:
        """The memoised alignment of ``doc_id`` (None when the cache lacks the document)."""
        hit = self.memo.get(doc_id)
        if hit is None:
            try:
                rec = self.records[doc_id]
            except KeyError:
                return None
            hit = doc_kd(rec, student_ends, self.teacher_to_student, self.dense, self.starts_word)
            self.memo[doc_id] = hit
        return hit


@dataclass(frozen=True)
class RowKD:
    """One teacher's usable token targets and chunks in one packed row (chunk ids local to the
    row). Without dense targets the ``m`` token rows are the common boundaries, one per chunk."""

    s_pos: np.ndarray  # int64 [m]
    topk_student_ids: np.ndarray  # int64 [m, k]
    topk_logprobs: np.ndarray  # float32 [m, k]
    weight: np.ndarray  # float32 [m]
    chunk_logprob: np.ndarray  # float32 [c]
    chunk_of_target: np.ndarray  # int64 [T], local chunk id or -1
    chunk_weight: np.ndarray  # float32 [c]
    chunk_next: np.ndarray  # int64 [c], logit position predicting the token after a debiased chunk, or -1


def row_kd(packed: PackedCorpus, row: int, source: TeacherSource,
           doc_weight: Callable[[int], float | np.ndarray], context: Callable[[int], int] | None = None) -> RowKD:
    """The targets of ``row``: boundaries (or, with dense targets, every covered student
    position) whose token is a target of the row, and chunks wholly inside it (memoised per row).
    ``context(d)``: how many leading tokens of document ``d`` are context only (an on-policy
    prompt): no token row and no chunk starts there, and they are not counted."""
    T = packed.seq_len
    lo = row * T + 1  # stream index predicted by logit position 0
    tokens: list[tuple[np.ndarray, ...]] = []
    chunks: list[tuple[np.ndarray, ...]] = []
    chunk_of_target = np.full(T, -1, dtype=np.int64)
    n = 0
    k = 0
    for d, a, e in packed.row_spans(row):
        kd = source.doc(packed.doc_ids[d], packed.byte_ends[d])
        if kd is None or kd.first.size == 0:
            continue
        k = kd.topk_student_ids.shape[1] if kd.dense is None else kd.dense.ids.shape[1]
        # A document this teacher does not guide (weight 0, e.g. min_ce picked another teacher)
        # stays in the batch with weight 0: the losses mask it, and the trainer's scale (mean
        # weight over *all* the teacher's boundaries) then keeps every teacher's boundaries
        # at the same per-boundary weight. Dropping it made a rarely chosen teacher count more.
        w = doc_weight(d)  # a scalar, or one weight per student token (span-level fusion)

        def at(pos: np.ndarray, w: Any = w) -> np.ndarray:  # bound now: called in this iteration only
            return np.asarray(w, dtype=np.float32)[pos] if np.ndim(w) else np.full(pos.size, w, np.float32)

        offset = int(packed.doc_start[d]) - lo  # logit position of token i = offset + i
        first = max(a, context(d)) if context is not None else a
        sel = np.nonzero((kd.first >= first) & (kd.last < e))[0]
        if kd.dense is not None:
            tok = kd.dense.pos[(kd.dense.pos >= first) & (kd.dense.pos < e)]
            hit = np.searchsorted(kd.dense.pos, tok)
            tokens.append((tok + offset, kd.dense.ids[hit], kd.dense.logprobs[hit], at(tok)))
        elif sel.size:
            tokens.append((kd.first[sel] + offset, kd.topk_student_ids[sel], kd.topk_logprobs[sel],
                           at(kd.first[sel])))
        if sel.size == 0:
            continue
        logprob, nxt = kd.chunk_logprob[sel], np.full(sel.size, -1, np.int64)
        if kd.chunk_next_logmass is not None:
            # debiased only where the student's next token is a target of this row from the same
            # document: both sides then add the mass of "a new word starts here"
            after = kd.last[sel] + 1
            mass = kd.chunk_next_logmass[sel]
            ok = np.isfinite(mass) & (after < e) & (offset + after < T)
            logprob = (logprob + np.where(ok, mass, 0.0)).astype(np.float32)
            nxt = np.where(ok, offset + after, -1)
        chunks.append((logprob, at(kd.first[sel]), nxt))
        # local chunk id -> row chunk id (or -1 for chunks cut by the row edge; -1 hits the spare slot)
        lookup = np.full(kd.first.size + 1, -1, dtype=np.int64)
        lookup[sel] = n + np.arange(sel.size)
        chunk_of_target[offset + a : offset + e] = lookup[kd.student_chunk[a:e]]
        n += sel.size
    s_pos, ids, lps, weight = _columns(tokens, [np.zeros(0, np.int64), np.zeros((0, k), np.int64),
                                                np.zeros((0, k), np.float32), np.zeros(0, np.float32)])
    chunk_lp, chunk_w, chunk_next = _columns(chunks, [np.zeros(0, np.float32), np.zeros(0, np.float32),
                                                      np.zeros(0, np.int64)])
    return RowKD(s_pos, ids, lps, weight, chunk_lp, chunk_of_target, chunk_w, chunk_next)


def _columns(parts: list[tuple[np.ndarray, ...]], empty: list[np.ndarray]) -> list[np.ndarray]:
    """Concatenate each column of ``parts``; ``empty`` (right dtypes and widths) when none."""
    return [np.concatenate(col) for col in zip(*parts)] if parts else empty


def build_teacher_batch(
    packed: PackedCorpus,
    rows: np.ndarray,
    source: TeacherSource,
    doc_weight: Callable[[int], float | np.ndarray],
    context: Callable[[int], int] | None = None,
) -> TeacherBatchArrays:
    """Index arrays for one teacher over the batch made of packed ``rows``.

    ``doc_weight(d)`` is the fusion weight of document ``d`` for this teacher (0 masks it out);
    it must not change during a run, since each row's arrays are memoised on ``source``.
    ``context``: see :func:`row_kd`.
    """
    per_row = []
    for row in rows.tolist():
        hit = source.row_memo.get(row)
        if hit is None:
            hit = row_kd(packed, row, source, doc_weight, context)
            source.row_memo[row] = hit
        per_row.append(hit)
    counts = np.array([r.s_pos.shape[0] for r in per_row], dtype=np.int64)
    chunk_counts = np.array([r.chunk_logprob.shape[0] for r in per_row], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(chunk_counts)[:-1]]).astype(np.int64)
    chunk_of_target = np.stack([np.where(r.chunk_of_target >= 0, r.chunk_of_target + s, -1)
                                for r, s in zip(per_row, starts)])
    k = max((r.topk_student_ids.shape[1] for r in per_row), default=0)
    return TeacherBatchArrays(
        b_idx=np.repeat(np.arange(len(per_row), dtype=np.int64), counts),
        s_pos=np.concatenate([r.s_pos for r in per_row]).astype(np.int64),
        topk_student_ids=np.concatenate([r.topk_student_ids.reshape(-1, k) for r in per_row]).astype(np.int64),
        topk_logprobs=np.concatenate([r.topk_logprobs.reshape(-1, k) for r in per_row]).astype(np.float32),
        boundary_weight=np.concatenate([r.weight for r in per_row]).astype(np.float32),
        chunk_teacher_logprob=np.concatenate([r.chunk_logprob for r in per_row]).astype(np.float32),
        chunk_of_target=chunk_of_target,
        chunk_weight=np.concatenate([r.chunk_weight for r in per_row]).astype(np.float32),
        # flat index b * T + p into the batch's logit rows
        chunk_next=None if source.starts_word is None else np.concatenate(
            [np.where(r.chunk_next >= 0, r.chunk_next + b * packed.seq_len, -1) for b, r in enumerate(per_row)]
        ).astype(np.int64),
    )
