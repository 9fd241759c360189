"""Teacher records from the offline cache -> per-batch ``TeacherBatch`` index tensors.

The expensive work (vocabulary map, byte alignment, top-k remapping, chunk sums) happens once
per (teacher, document) and is memoised; building a batch is then a handful of numpy slices
per packed document span. A boundary (and its chunk) is used only when every student token of
the chunk is a target of the row: packing may cut a document anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from avokit.align import align
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
    """

    first: np.ndarray
    last: np.ndarray
    student_chunk: np.ndarray
    topk_student_ids: np.ndarray
    topk_logprobs: np.ndarray
    chunk_logprob: np.ndarray
    bpb: float


def doc_kd(records: TeacherRecords, student_ends: np.ndarray, teacher_to_student: np.ndarray) -> DocKD:
    """Align one teacher's records for a document to the student's tokens of that document.

    A teacher may cover only a prefix of the document (its ``max_length``): both tokenizations
    are cut at the last byte where both end a token, and student tokens past it get no chunk.
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
    return DocKD(
        first=first,
        last=last,
        student_chunk=student_chunk,
        topk_student_ids=mapped.astype(np.int64),
        topk_logprobs=np.asarray(records.topk_logprobs, dtype=np.float32)[al.teacher_pos],
        chunk_logprob=chunk_lp,
        bpb=bpb,
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

    def to_torch(self, device: Any) -> dict[str, Any]:
        """Tensors on ``device`` keyed by TeacherBatch field name."""
        import torch

        return {name: torch.from_numpy(np.ascontiguousarray(getattr(self, name))).to(device)
                for name in self.__dataclass_fields__}


@dataclass
class TeacherSource:
    """One teacher's cache, seen from the student: records lookup and vocabulary map."""

    name: str
    weight: float
    records: Mapping[str, TeacherRecords]
    teacher_to_student: np.ndarray  # int64 [V_teacher], -1 = unmapped
    memo: dict[str, DocKD] = field(default_factory=dict)

    def doc(self, doc_id: str, student_ends: np.ndarray) -> DocKD | None:
        """The memoised alignment of ``doc_id`` (None when the cache lacks the document)."""
        hit = self.memo.get(doc_id)
        if hit is None:
            try:
                rec = self.records[doc_id]
            except KeyError:
                return None
            hit = doc_kd(rec, student_ends, self.teacher_to_student)
            self.memo[doc_id] = hit
        return hit


def build_teacher_batch(
    packed: PackedCorpus,
    rows: np.ndarray,
    source: TeacherSource,
    doc_weight: Callable[[int], float],
) -> TeacherBatchArrays:
    """Index arrays for one teacher over the batch made of packed ``rows``.

    ``doc_weight(d)`` is the fusion weight of document ``d`` for this teacher (0 masks it out).
    """
    T = packed.seq_len
    k = 0
    b_idx: list[np.ndarray] = []
    s_pos: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    lps: list[np.ndarray] = []
    bw: list[np.ndarray] = []
    clp: list[np.ndarray] = []
    chunk_of_target = np.full((rows.shape[0], T), -1, dtype=np.int64)
    n_chunks = 0
    for b, row in enumerate(rows.tolist()):
        lo = row * T + 1  # stream index predicted by logit position 0
        for d, a, e in packed.row_spans(row):
            kd = source.doc(packed.doc_ids[d], packed.byte_ends[d])
            if kd is None or kd.first.size == 0:
                continue
            w = doc_weight(d)
            if w <= 0.0:
                continue
            offset = int(packed.doc_start[d]) - lo  # logit position of token i = offset + i
            inside = (kd.first >= a) & (kd.last < e)
            sel = np.nonzero(inside)[0]
            if sel.size == 0:
                continue
            k = kd.topk_student_ids.shape[1]
            b_idx.append(np.full(sel.size, b, dtype=np.int64))
            s_pos.append(kd.first[sel] + offset)
            ids.append(kd.topk_student_ids[sel])
            lps.append(kd.topk_logprobs[sel])
            bw.append(np.full(sel.size, w, dtype=np.float32))
            clp.append(kd.chunk_logprob[sel])
            # local chunk id -> global chunk id (or -1 for chunks cut by the row edge)
            lookup = np.full(kd.first.size + 1, -1, dtype=np.int64)
            lookup[sel] = n_chunks + np.arange(sel.size)
            tok_chunk = kd.student_chunk[a:e]
            chunk_of_target[b, offset + a : offset + e] = lookup[tok_chunk]  # -1 indexes the spare slot
            n_chunks += sel.size
    def cat(parts: list[np.ndarray], dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype=dtype)

    chunk_w = cat(bw, np.float32, (0,))
    return TeacherBatchArrays(
        b_idx=cat(b_idx, np.int64, (0,)),
        s_pos=cat(s_pos, np.int64, (0,)),
        topk_student_ids=cat(ids, np.int64, (0, k)),
        topk_logprobs=cat(lps, np.float32, (0, k)),
        boundary_weight=chunk_w,
        chunk_teacher_logprob=cat(clp, np.float32, (0,)),
        chunk_of_target=chunk_of_target,
        chunk_weight=chunk_w.copy(),
    )
