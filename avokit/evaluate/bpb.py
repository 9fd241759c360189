"""Bits per byte, computed one way for every model: the student, the baseline and each teacher.

``bpb = sum(-gold_logprob) / (ln 2 * UTF-8 bytes of exactly the scored text)``, over
:class:`~avokit.records.TeacherRecords` from the :class:`~avokit.teachers.base.Teacher`
interface. The student and baseline are wrapped as teachers (``HFTeacher.from_dir``), so the
same tokenization-with-offsets and the same start-token convention apply to all models; the
backend scores long documents in windows of its ``max_length``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from avokit.errors import AvokitError
from avokit.records import TeacherRecords
from avokit.teachers.base import Teacher

LN2 = math.log(2.0)


@dataclass(frozen=True)
class BpbResult:
    """Held-out bits per byte of one model, with the totals it came from."""

    model: str
    bpb: float
    nll_nats: float
    n_bytes: int
    n_tokens: int
    n_docs: int
    source: str  # "live" (scored now) or "cache" (gold log-probs from the capture cache)
    per_doc: dict[str, float]  # doc_id -> bpb of that document
    per_doc_nll: dict[str, float]  # doc_id -> NLL of that document in nats

    def as_dict(self) -> dict[str, object]:
        """JSON form without the per-document table."""
        return {
            "bpb": self.bpb,
            "nll_nats": self.nll_nats,
            "bytes": self.n_bytes,
            "tokens": self.n_tokens,
            "docs": self.n_docs,
            "source": self.source,
        }


def bpb_from_records(
    model: str, records: Sequence[TeacherRecords], texts: Mapping[str, str], source: str = "live"
) -> BpbResult:
    """Bits per byte of ``records`` over the texts they score (``texts[doc_id]``).

    Raises if a record does not cover its whole text: a model that skipped bytes would get a
    flatteringly low BPB, and the number would no longer be comparable across tokenizers.
    """
    nll, n_bytes, n_tok, per_doc, per_doc_nll = 0.0, 0, 0, {}, {}
    for rec in records:
        if rec.doc_id not in texts:
            raise AvokitError(f"{model}: scored document {rec.doc_id!r} is not in the held-out split")
        nb = len(texts[rec.doc_id].encode("utf-8"))
        covered = int(rec.byte_ends[-1]) if rec.n_positions else 0
        if covered != nb:
            raise AvokitError(
                f"{model}: document {rec.doc_id!r} scored {covered} of its {nb} bytes; "
                "bits per byte needs every byte scored"
            )
        d_nll = float(-np.sum(rec.gold_logprob, dtype=np.float64))
        if not math.isfinite(d_nll):
            raise AvokitError(f"{model}: document {rec.doc_id!r} has a non-finite log-likelihood")
        nll += d_nll
        n_bytes += nb
        n_tok += rec.n_positions
        per_doc[rec.doc_id] = d_nll / (LN2 * nb) if nb else 0.0
        per_doc_nll[rec.doc_id] = d_nll
    if n_bytes == 0:
        raise AvokitError(f"{model}: no held-out bytes to score")
    return BpbResult(model, nll / (LN2 * n_bytes), nll, n_bytes, n_tok, len(per_doc), source, per_doc,
                     per_doc_nll)


def domain_bpb(
    result: BpbResult, texts: Mapping[str, str], domains: Mapping[str, str]
) -> dict[str, dict[str, float | int]]:
    """Bits per byte of ``result`` within each domain: the domain's NLL over its bytes.

    ``domains[doc_id]`` names each scored document's domain. Domains are returned in sorted
    order, each as ``{"bpb", "bytes", "docs"}``; a scored document without a domain is an error
    (its bytes would silently leave every per-domain figure).
    """
    nll: dict[str, float] = {}
    n_bytes: dict[str, int] = {}
    docs: dict[str, int] = {}
    for doc_id, d_nll in result.per_doc_nll.items():
        if doc_id not in domains:
            raise AvokitError(f"{result.model}: scored document {doc_id!r} has no domain")
        dom = domains[doc_id]
        nll[dom] = nll.get(dom, 0.0) + d_nll
        n_bytes[dom] = n_bytes.get(dom, 0) + len(texts[doc_id].encode("utf-8"))
        docs[dom] = docs.get(dom, 0) + 1
    return {d: {"bpb": nll[d] / (LN2 * n_bytes[d]), "bytes": n_bytes[d], "docs": docs[d]}
            for d in sorted(nll)}


def score_bpb(
    teacher: Teacher, texts: Mapping[str, str], batch_size: int = 4, name: str | None = None
) -> BpbResult:
    """Score every ``doc_id -> text`` with ``teacher`` (live) and return its bits per byte.

    Empty documents are skipped (zero bytes, nothing to predict)."""
    ids = [d for d, t in texts.items() if t]
    records: list[TeacherRecords] = []
    for b in range(0, len(ids), batch_size):
        chunk = ids[b : b + batch_size]
        # top_k=1: only the gold log-probs matter here; keeps the records small.
        records.extend(teacher.score([texts[d] for d in chunk], chunk, top_k=1))
    return bpb_from_records(name or teacher.info.name, records, texts, source="live")
