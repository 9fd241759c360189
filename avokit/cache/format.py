"""Version 1 of the teacher cache's on-disk encoding (see docs/cache-format.md).

One Arrow IPC *file* per shard, one record batch per document, one row per token position.
Top-k log-probs are stored as unsigned steps below the position's exact top-1 log-prob
(per-position step), delta-coded along the rank axis (the gaps of a sorted list are small);
top-k ids use the fewest bytes the vocabulary needs. Both are split into byte planes (one
uint8 column per byte) because zstd compresses planes of like bytes far better than
interleaved little-endian integers. Every column is zstd-compressed per document batch.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from avokit.errors import CacheError
from avokit.records import PrefixCuts, TeacherRecords

FORMAT_VERSION = 1
# Log-probs more than this many nats below the top-1 are clamped there: e**-60 is far below
# anything KD can see, and a bounded range keeps the quantisation step small.
MAX_LOGPROB_RANGE = 60.0


class CacheSpec(BaseModel):
    """Everything that decides a shard's bytes; stored in every shard and the manifest."""

    format_version: int = FORMAT_VERSION
    teacher: str
    teacher_fingerprint: str
    tokenizer_fingerprint: str
    vocab_size: int
    top_k: int
    logprob_bits: Literal[8, 16]
    compression: Literal["zstd", "none"] = "zstd"
    # the dtype the teacher computed in (caches written before this field: float32);
    # "endpoint" where a server decided
    compute_dtype: str = "float32"
    # width of the PrefixCuts stored per gold-token prefix (0: none; caches before this field)
    inside_top_k: int = 0

    @property
    def id_bytes(self) -> int:
        """Fewest bytes that hold every id of this vocabulary (1..4)."""
        return max(1, ((max(self.vocab_size - 1, 1)).bit_length() + 7) // 8)

    @property
    def q_bytes(self) -> int:
        """Bytes per stored log-prob step (1 for 8-bit, 2 for 16-bit)."""
        return self.logprob_bits // 8

    def max_quantisation_error(self) -> float:
        """Upper bound, in nats, on |stored - exact| top-k log-prob after dequantisation."""
        return MAX_LOGPROB_RANGE / (2 * ((1 << self.logprob_bits) - 1))


def schema(spec: CacheSpec) -> pa.Schema:
    """The Arrow schema of a shard; its metadata carries the spec for self-checking."""
    k = spec.top_k
    plane = pa.list_(pa.uint8(), k)
    fields = [
        pa.field("token_id", pa.uint32()),
        pa.field("byte_len", pa.uint16()),
        pa.field("gold_logprob", pa.float32()),
        pa.field("boundary_logmass", pa.float32()),
        pa.field("topk_max", pa.float32()),
        pa.field("topk_step", pa.float32()),
    ]
    fields += [pa.field(f"topk_dq_b{i}", plane) for i in range(spec.q_bytes)]
    fields += [pa.field(f"topk_id_b{i}", plane) for i in range(spec.id_bytes)]
    if spec.inside_top_k:  # one list entry per proper prefix of the position's gold token
        m = spec.inside_top_k
        fields += [
            pa.field("inside_logmass", pa.list_(pa.float32())),
            pa.field("inside_ids", pa.list_(pa.list_(pa.int32(), m))),
            pa.field("inside_logprobs", pa.list_(pa.list_(pa.float32(), m))),
        ]
    return pa.schema(fields, metadata={b"avokit_cache": spec.model_dump_json().encode("utf-8")})


def to_planes(values: np.ndarray, n_bytes: int) -> list[np.ndarray]:
    """Non-negative integers -> ``n_bytes`` uint8 arrays, least significant byte first."""
    v = values.astype(np.uint64)
    return [((v >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.uint8) for i in range(n_bytes)]


def from_planes(planes: list[np.ndarray]) -> np.ndarray:
    """Inverse of :func:`to_planes`: int64 array."""
    out = np.zeros(planes[0].shape, dtype=np.int64)
    for i, p in enumerate(planes):
        out |= p.astype(np.int64) << (8 * i)
    return out


def quantise(topk_logprobs: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k log-probs [n, k] (sorted descending) -> (top1 float32 [n], step float32 [n],
    q uint [n, k]) with ``lp ~= top1 - q * step``; q[:, 0] == 0 so the top-1 is exact."""
    lp = topk_logprobs.astype(np.float32)
    top = lp[:, 0].copy()
    delta = np.clip(top[:, None] - lp, 0.0, MAX_LOGPROB_RANGE)
    delta = np.nan_to_num(delta, nan=MAX_LOGPROB_RANGE, posinf=MAX_LOGPROB_RANGE)
    levels = (1 << bits) - 1
    span = delta.max(axis=1) if delta.shape[1] else np.zeros(lp.shape[0], np.float32)
    step = np.where(span > 0, span / levels, 1.0).astype(np.float32)
    q = np.rint(delta / step[:, None]).clip(0, levels)
    return top, step, q.astype(np.uint8 if bits == 8 else np.uint16)


def dequantise(top: np.ndarray, step: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantise`: float32 [n, k]."""
    out: np.ndarray = (top[:, None] - q.astype(np.float32) * step[:, None]).astype(np.float32)
    return out


def encode(rec: TeacherRecords, spec: CacheSpec) -> pa.RecordBatch:
    """One document's records as a record batch of :func:`schema`."""
    n, k = rec.n_positions, spec.top_k
    if rec.topk_ids.shape != (n, k) or rec.topk_logprobs.shape != (n, k):
        raise CacheError(
            f"document {rec.doc_id!r}: top-k arrays have shape {rec.topk_ids.shape}, expected {(n, k)}"
        )
    ends = np.asarray(rec.byte_ends, dtype=np.int64)
    lens = np.diff(np.concatenate([[0], ends]))
    if n and (lens.min() < 0 or lens.max() > 0xFFFF):
        raise CacheError(f"document {rec.doc_id!r}: token byte lengths out of range 0..65535")
    ids = np.asarray(rec.topk_ids, dtype=np.int64)
    if n and (ids.min() < 0 or ids.max() >= spec.vocab_size):
        raise CacheError(f"document {rec.doc_id!r}: a top-k id is outside the vocabulary of {spec.vocab_size}")
    top, step, q = quantise(np.asarray(rec.topk_logprobs), spec.logprob_bits)
    dq = np.diff(q.astype(np.int64), axis=1, prepend=0)  # >= 0: q rises along the ranks

    def fixed(values: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.uint8()), k)

    cols: list[pa.Array] = [
        pa.array(np.asarray(rec.token_ids).astype(np.uint32)),
        pa.array(lens.astype(np.uint16)),
        pa.array(np.asarray(rec.gold_logprob, dtype=np.float32)),
        pa.array(np.asarray(rec.boundary_logmass, dtype=np.float32)),
        pa.array(top),
        pa.array(step),
    ]
    cols += [fixed(p) for p in to_planes(dq, spec.q_bytes)]
    cols += [fixed(p) for p in to_planes(ids, spec.id_bytes)]
    if spec.inside_top_k:
        cols += _encode_cuts(rec, spec)
    return pa.RecordBatch.from_arrays(cols, schema=schema(spec))


def _encode_cuts(rec: TeacherRecords, spec: CacheSpec) -> list[pa.Array]:
    cuts, m = rec.cuts, spec.inside_top_k
    if cuts is None or cuts.width != m or cuts.offsets.shape != (rec.n_positions + 1,):
        raise CacheError(f"document {rec.doc_id!r}: the cache stores inside_top_k={m} prefix cuts "
                         f"per position and the records carry {'none' if cuts is None else cuts.width}")
    offsets = pa.array(np.asarray(cuts.offsets, dtype=np.int32))

    def rows(values: np.ndarray, kind: pa.DataType) -> pa.Array:
        flat = pa.array(values.reshape(-1), kind)
        return pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(flat, m))

    return [
        pa.ListArray.from_arrays(offsets, pa.array(np.asarray(cuts.logmass, dtype=np.float32))),
        rows(np.asarray(cuts.ids, dtype=np.int32), pa.int32()),
        rows(np.asarray(cuts.logprobs, dtype=np.float32), pa.float32()),
    ]


def _decode_cuts(col: dict[str, pa.Array]) -> PrefixCuts | None:
    if "inside_logmass" not in col:
        return None
    lengths = col["inside_logmass"].value_lengths().to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    m = col["inside_ids"].type.value_type.list_size
    return PrefixCuts(
        offsets=offsets,
        logmass=col["inside_logmass"].flatten().to_numpy(zero_copy_only=False).astype(np.float32),
        ids=col["inside_ids"].flatten().flatten().to_numpy(zero_copy_only=False).astype(np.int32).reshape(-1, m),
        logprobs=col["inside_logprobs"].flatten().flatten().to_numpy(zero_copy_only=False)
        .astype(np.float32).reshape(-1, m),
    )


def _fixed_values(col: pa.Array, k: int) -> np.ndarray:
    flat: np.ndarray = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, k)


def decode(batch: pa.RecordBatch, doc_id: str, k: int) -> TeacherRecords:
    """One record batch back to :class:`TeacherRecords` (log-probs dequantised)."""
    col = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
    lens = col["byte_len"].to_numpy(zero_copy_only=False).astype(np.int64)
    names = batch.schema.names
    ids = from_planes([_fixed_values(col[n], k) for n in names if n.startswith("topk_id_b")])
    dq = from_planes([_fixed_values(col[n], k) for n in names if n.startswith("topk_dq_b")])
    top = col["topk_max"].to_numpy(zero_copy_only=False)
    step = col["topk_step"].to_numpy(zero_copy_only=False)
    return TeacherRecords(
        doc_id=doc_id,
        token_ids=col["token_id"].to_numpy(zero_copy_only=False).astype(np.int32),
        byte_ends=np.cumsum(lens, dtype=np.int64),
        gold_logprob=col["gold_logprob"].to_numpy(zero_copy_only=False).astype(np.float32),
        topk_ids=ids.astype(np.int32),
        topk_logprobs=dequantise(top, step, np.cumsum(dq, axis=1)),
        boundary_logmass=col["boundary_logmass"].to_numpy(zero_copy_only=False).astype(np.float32),
        cuts=_decode_cuts(col),
    )
