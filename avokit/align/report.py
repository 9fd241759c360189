"""How well a teacher's tokenizer aligns with a student's on a set of documents.

``align_report`` tokenizes every document with both tokenizers (exact byte offsets; a
document a tokenizer cannot reproduce is recorded with its first offending byte and aligned
through the tokenizer's character offsets instead), aligns them, maps the vocabularies and
summarises: token counts, bytes/token, the share of positions that are common boundaries,
a chunk-length histogram and vocabulary-map coverage on the corpus.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avokit.align.boundaries import align
from avokit.align.bytes import TokenBytes, byteify
from avokit.align.offsets import tokenize_batch_with_offsets
from avokit.align.vocab_map import build_vocab_map
from avokit.errors import AvokitError, RoundTripError
from avokit.records import TokenizedDoc

# Chunk-length histogram buckets in bytes: [lo, hi] inclusive.
CHUNK_BUCKETS: tuple[tuple[int, int], ...] = (
    (1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 1 << 62),
)


@dataclass(frozen=True)
class RoundTripIssue:
    """A document one tokenizer cannot reproduce byte for byte."""

    doc_index: int
    position: int
    message: str


@dataclass(frozen=True)
class TokenizerSummary:
    """One tokenizer over the document set."""

    name: str
    family: str
    vocab_size: int
    n_tokens: int
    bytes_per_token: float
    boundary_share: float  # share of this tokenizer's token starts that are common boundaries
    round_trip_failures: list[RoundTripIssue] = field(default_factory=list)


@dataclass(frozen=True)
class AlignReport:
    """Everything ``avokit align-report`` prints."""

    n_docs: int
    n_bytes: int
    n_chunks: int
    teacher: TokenizerSummary
    student: TokenizerSummary
    chunk_histogram: dict[str, int]
    mean_chunk_bytes: float
    coverage: dict[str, Any]
    roles: dict[str, list[int]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def read_texts(path: Path) -> list[str]:
    """Documents from a file: ``.jsonl`` (field ``text``), ``.parquet`` (column ``text``), or
    any other text file (one document).

    Raises:
        AvokitError: the file is missing, unreadable, or lacks the ``text`` field.
    """
    if path.is_dir():
        raise AvokitError(f"document file {path} is a directory (give a .txt, .jsonl or "
                          ".parquet file)")
    if not path.is_file():
        raise AvokitError(f"document file {path} does not exist")
    try:
        if path.suffix == ".jsonl":
            texts = []
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise AvokitError(f"{path}: line {lineno} is not JSON: {err.msg}") from None
                    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                        raise AvokitError(f"{path}: line {lineno} has no string field 'text'")
                    texts.append(obj["text"])
            return texts
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
                raise AvokitError(f"{path}: not a readable Parquet file: {err}") from None
            if "text" not in table.column_names:
                raise AvokitError(f"{path}: no column 'text' (columns: {table.column_names})")
            return [str(t) for t in table.column("text").to_pylist()]
        return [path.read_text(encoding="utf-8")]
    except UnicodeDecodeError as err:
        raise AvokitError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def _tokenize(tok: Any, tb: TokenBytes, texts: list[str]) -> tuple[list[TokenizedDoc], list[RoundTripIssue]]:
    found: list[tuple[int, RoundTripError]] = []
    docs = tokenize_batch_with_offsets(tok, texts, tb, lossy="offsets", issues=found)
    return docs, [RoundTripIssue(i, err.position, str(err)) for i, err in found]


def chunk_histogram(lengths: np.ndarray) -> dict[str, int]:
    """Counts of chunk byte lengths per bucket of ``CHUNK_BUCKETS``."""
    out: dict[str, int] = {}
    for lo, hi in CHUNK_BUCKETS:
        label = str(lo) if lo == hi else (f"{lo}+" if hi >= 1 << 62 else f"{lo}-{hi}")
        out[label] = int(((lengths >= lo) & (lengths <= hi)).sum())
    return out


def align_report(
    teacher_tok: Any,
    student_tok: Any,
    texts: list[str],
    teacher_name: str = "teacher",
    student_name: str = "student",
) -> AlignReport:
    """Tokenize, align and map ``texts`` with both tokenizers and summarise (see module doc)."""
    t_tb = byteify(teacher_tok, teacher_name)
    s_tb = byteify(student_tok, student_name)
    t_docs, t_issues = _tokenize(teacher_tok, t_tb, texts)
    s_docs, s_issues = _tokenize(student_tok, s_tb, texts)
    vmap = build_vocab_map(t_tb, s_tb, teacher_tok, student_tok)
    lengths: list[np.ndarray] = []
    t_common = s_common = 0
    counts = np.zeros(t_tb.size, dtype=np.float64)
    for td, sd in zip(t_docs, s_docs):
        al = align(td.byte_ends, sd.byte_ends)
        lengths.append(al.chunk_lengths())
        t_common += al.n_chunks
        s_common += al.n_chunks
        np.add.at(counts, td.ids, 1.0)
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    n_t = sum(d.ids.size for d in t_docs)
    n_s = sum(d.ids.size for d in s_docs)
    n_bytes = sum(d.n_bytes for d in t_docs)

    def summary(tb: TokenBytes, n: int, common: int, issues: list[RoundTripIssue]) -> TokenizerSummary:
        return TokenizerSummary(
            name=tb.name, family=tb.family, vocab_size=tb.size, n_tokens=n,
            bytes_per_token=n_bytes / n if n else 0.0,
            boundary_share=common / n if n else 0.0, round_trip_failures=issues,
        )

    return AlignReport(
        n_docs=len(texts),
        n_bytes=n_bytes,
        n_chunks=int(all_lengths.size),
        teacher=summary(t_tb, n_t, t_common, t_issues),
        student=summary(s_tb, n_s, s_common, s_issues),
        chunk_histogram=chunk_histogram(all_lengths),
        mean_chunk_bytes=float(all_lengths.mean()) if all_lengths.size else 0.0,
        coverage=vmap.coverage(token_counts=counts).as_dict(),
        roles={k: list(v) for k, v in vmap.roles.items()},
    )


def render_markdown(rep: AlignReport) -> str:
    """A short human-readable report."""
    lines = [
        f"# Alignment: {rep.teacher.name} -> {rep.student.name}",
        "",
        f"{rep.n_docs} documents, {rep.n_bytes:,} bytes, {rep.n_chunks:,} chunks "
        f"(mean {rep.mean_chunk_bytes:.2f} bytes)",
        "",
        "| tokenizer | family | vocab | tokens | bytes/token | common-boundary share | round-trip failures |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in (rep.teacher, rep.student):
        lines.append(
            f"| {s.name} | {s.family} | {s.vocab_size:,} | {s.n_tokens:,} | {s.bytes_per_token:.3f} "
            f"| {s.boundary_share:.3f} | {len(s.round_trip_failures)} |"
        )
    lines += ["", "Chunk lengths (bytes): " + ", ".join(f"{k}: {v}" for k, v in rep.chunk_histogram.items())]
    cov = rep.coverage
    count_share = "n/a" if cov["count_share"] is None else f"{cov['count_share']:.4f}"
    lines += [
        "",
        f"Vocabulary map: {cov['vocab_share']:.4f} of teacher ids map "
        f"({cov['regular_share']:.4f} of regular ids); {count_share} of the teacher's tokens "
        "on these documents map.",
        "Special tokens by role: " + (", ".join(f"{k} {v[0]}->{v[1]}" for k, v in rep.roles.items()) or "none"),
    ]
    for s in (rep.teacher, rep.student):
        for issue in s.round_trip_failures[:5]:
            lines.append(f"- {s.name}: document {issue.doc_index}: {issue.message} "
                         "(aligned through character offsets instead)")
    return "\n".join(lines) + "\n"
