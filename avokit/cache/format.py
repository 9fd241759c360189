"""Version 1 of the teacher cache's on-disk encoding (see docs/cache-format.md).

One Arrow IPC *file* per shard, one record batch per document, one row per token position.
Log-probs of the top-k are stored as unsigned integers relative to the position's top-1
log-prob (exact) with a per-position step; ids use the smallest width the vocabulary needs
(uint16, or uint16 + uint8 planes for vocabularies up to 2**24, else uint32); every column
is zstd-compressed per document batch by Arrow.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from avokit.errors import CacheError
from avokit.records import TeacherRecords

FORMAT_VERSION = 1
IdEncoding = Literal["u16", "u16+u8", "u32"]
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

    @property
    def id_encoding(self) -> IdEncoding:
        """Smallest id representation for this vocabulary."""
        if self.vocab_size <= 1 << 16:
            return "u16"
        if self.vocab_size <= 1 << 24:
            return "u16+u8"
        return "u32"

    def max_quantisation_error(self) -> float:
        """Upper bound, in nats, on |stored - exact| top-k log-prob after dequantisation."""
        return MAX_LOGPROB_RANGE / (2 * ((1 << self.logprob_bits) - 1))


def _qtype(bits: int) -> pa.DataType:
    return pa.uint8() if bits == 8 else pa.uint16()


def schema(spec: CacheSpec) -> pa.Schema:
    """The Arrow schema of a shard; its metadata carries the spec for self-checking."""
    k = spec.top_k
    fields = [
        pa.field("token_id", pa.uint16() if spec.id_encoding == "u16" else pa.uint32()),
        pa.field("byte_len", pa.uint16()),
        pa.field("gold_logprob", pa.float32()),
        pa.field("boundary_logmass", pa.float32()),
        pa.field("topk_max", pa.float32()),
        pa.field("topk_step", pa.float32()),
        pa.field("topk_q", pa.list_(_qtype(spec.logprob_bits), k)),
    ]
    if spec.id_encoding == "u32":
        fields.append(pa.field("topk_id", pa.list_(pa.uint32(), k)))
    else:
        fields.append(pa.field("topk_id_lo", pa.list_(pa.uint16(), k)))
        if spec.id_encoding == "u16+u8":
            fields.append(pa.field("topk_id_hi", pa.list_(pa.uint8(), k)))
    return pa.schema(fields, metadata={b"avokit_cache": spec.model_dump_json().encode("utf-8")})


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
    return (top[:, None] - q.astype(np.float32) * step[:, None]).astype(np.float32)


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
    sch = schema(spec)

    def fixed(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), typ), k)

    cols: list[pa.Array] = [
        pa.array(np.asarray(rec.token_ids).astype(np.uint16 if spec.id_encoding == "u16" else np.uint32)),
        pa.array(lens.astype(np.uint16)),
        pa.array(np.asarray(rec.gold_logprob, dtype=np.float32)),
        pa.array(np.asarray(rec.boundary_logmass, dtype=np.float32)),
        pa.array(top),
        pa.array(step),
        fixed(q, _qtype(spec.logprob_bits)),
    ]
    if spec.id_encoding == "u32":
        cols.append(fixed(ids.astype(np.uint32), pa.uint32()))
    else:
        cols.append(fixed((ids & 0xFFFF).astype(np.uint16), pa.uint16()))
        if spec.id_encoding == "u16+u8":
            cols.append(fixed((ids >> 16).astype(np.uint8), pa.uint8()))
    return pa.RecordBatch.from_arrays(cols, schema=sch)


def _fixed_values(col: pa.Array, k: int) -> np.ndarray:
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, k)


def decode(batch: pa.RecordBatch, doc_id: str, k: int) -> TeacherRecords:
    """One record batch back to :class:`TeacherRecords` (log-probs dequantised)."""
    col = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
    lens = col["byte_len"].to_numpy(zero_copy_only=False).astype(np.int64)
    if "topk_id" in col:
        ids = _fixed_values(col["topk_id"], k).astype(np.int32)
    else:
        ids = _fixed_values(col["topk_id_lo"], k).astype(np.int32)
        if "topk_id_hi" in col:
            ids |= _fixed_values(col["topk_id_hi"], k).astype(np.int32) << 16
    top = col["topk_max"].to_numpy(zero_copy_only=False)
    step = col["topk_step"].to_numpy(zero_copy_only=False)
    return TeacherRecords(
        doc_id=doc_id,
        token_ids=col["token_id"].to_numpy(zero_copy_only=False).astype(np.int32),
        byte_ends=np.cumsum(lens, dtype=np.int64),
        gold_logprob=col["gold_logprob"].to_numpy(zero_copy_only=False).astype(np.float32),
        topk_ids=ids,
        topk_logprobs=dequantise(top, step, _fixed_values(col["topk_q"], k)),
        boundary_logmass=col["boundary_logmass"].to_numpy(zero_copy_only=False).astype(np.float32),
    )
