"""Sequence packing for the student: documents joined by the separator token, cut into rows.

Layout: the packed *stream* is ``[sep] doc0 [sep] doc1 ...`` (the separator is the student's
EOS, so every document is predicted from the same start token, as teachers predict theirs from
BOS). A tokenizer whose BOS differs from its EOS (Llama, Gemma) gets ``[eos][bos]`` before each
document instead: the student learns to end a document with EOS and is conditioned on BOS,
which is the start token evaluation scores every model from. Row ``r`` is the window ``stream[r*T : r*T+T+1]``: ``inputs = window[:-1]``,
``targets = window[1:]``, so logit position ``p`` of row ``r`` predicts stream token
``r*T + p + 1`` and every token after the first is predicted exactly once, with no padding.

Batches are a pure function of (seed, global micro-batch index): each epoch is a seeded
permutation of the rows. The data position of a run is therefore just its step counter, which
is what makes resume-after-kill reproduce an uninterrupted run bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avokit.align import byteify, tokenize_batch_with_offsets
from avokit.corpus.build import read_documents
from avokit.corpus.document import Document
from avokit.errors import AvokitError


def read_split(run_dir: Path, split: str) -> list[Document]:
    """Documents of ``run_dir/corpus/<split>.parquet``."""
    return read_documents(Path(run_dir) / "corpus" / f"{split}.parquet")


@dataclass(frozen=True)
class PackedCorpus:
    """Documents tokenised by the student and packed into rows of ``seq_len`` predictions.

    - stream: int64 [L] the packed token stream
    - doc_start: int64 [D] stream index of each document's first token (after its separator)
    - doc_len: int64 [D] number of tokens of each document
    - token_bytes: int64 [L] UTF-8 bytes of every stream token (0 for separators)
    - is_sep: bool [L] True where the stream holds a separator (or the start token after it)
    - byte_ends: per document, int64 [n_d] byte end offset of each student token
    - domains: each document's domain (fusion can weigh teachers per domain)
    """

    doc_ids: list[str]
    stream: np.ndarray
    doc_start: np.ndarray
    doc_len: np.ndarray
    token_bytes: np.ndarray
    is_sep: np.ndarray
    byte_ends: list[np.ndarray]
    seq_len: int
    domains: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        """Number of full rows (windows of ``seq_len + 1`` stream tokens, stride ``seq_len``)."""
        return max(0, (int(self.stream.shape[0]) - 1) // self.seq_len)

    def row_tokens(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, targets)``: int64 [len(rows), T] each."""
        idx = rows[:, None] * self.seq_len + np.arange(self.seq_len + 1)[None, :]
        window = self.stream[idx]
        return window[:, :-1], window[:, 1:]

    def row_spans(self, row: int) -> list[tuple[int, int, int]]:
        """Documents whose tokens are targets of ``row``: ``(doc, first_token, last_token_excl)``."""
        lo = row * self.seq_len + 1  # first stream index predicted by this row
        hi = lo + self.seq_len  # exclusive
        doc_end = self.doc_start + self.doc_len
        first = int(np.searchsorted(doc_end, lo, side="right"))
        spans = []
        for d in range(first, len(self.doc_ids)):
            start = int(self.doc_start[d])
            if start >= hi:
                break
            a = max(lo, start) - start
            b = min(hi, int(doc_end[d])) - start
            if b > a:
                spans.append((d, a, b))
        return spans


def separator_prefix(sep_id: int, start_id: int | None) -> list[int]:
    """The tokens before every packed document: the separator, then the start token when it
    is another token."""
    return [sep_id] if start_id is None or start_id == sep_id else [sep_id, start_id]


def pack_documents(docs: list[Document], tokenizer: Any, seq_len: int, sep_id: int,
                   require_row: bool = True, start_id: int | None = None) -> PackedCorpus:
    """Tokenise ``docs`` with exact byte offsets and pack them (see the module docstring).

    ``start_id`` (the start token evaluation conditions on) is inserted after each separator
    when it differs from ``sep_id``; both count as separators (no bytes, never scored).
    Raises :class:`AvokitError` when ``require_row`` and the documents do not fill one row.
    """
    prefix = separator_prefix(sep_id, start_id)
    tb = byteify(tokenizer)
    tokenized = tokenize_batch_with_offsets(tokenizer, [d.text for d in docs], tb) if docs else []
    pieces: list[np.ndarray] = []
    byte_pieces: list[np.ndarray] = []
    doc_start = np.zeros(len(docs), dtype=np.int64)
    doc_len = np.zeros(len(docs), dtype=np.int64)
    pos = 0
    for i, tok in enumerate(tokenized):
        n = int(tok.ids.shape[0])
        pieces.append(np.array(prefix, dtype=np.int64))
        pieces.append(tok.ids.astype(np.int64))
        byte_pieces.append(np.zeros(len(prefix), dtype=np.int64))
        byte_pieces.append(np.diff(tok.byte_ends, prepend=0).astype(np.int64))
        doc_start[i] = pos + len(prefix)
        doc_len[i] = n
        pos += n + len(prefix)
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    token_bytes = np.concatenate(byte_pieces) if byte_pieces else np.zeros(0, dtype=np.int64)
    is_sep = np.zeros(stream.shape[0], dtype=bool)
    for back in range(1, len(prefix) + 1):
        is_sep[doc_start - back] = True
    packed = PackedCorpus(
        doc_ids=[d.doc_id for d in docs],
        stream=stream,
        doc_start=doc_start,
        doc_len=doc_len,
        token_bytes=token_bytes,
        is_sep=is_sep,
        byte_ends=[t.byte_ends.astype(np.int64) for t in tokenized],
        seq_len=seq_len,
        domains=[d.domain for d in docs],
    )
    if require_row and packed.n_rows == 0:
        raise AvokitError(
            f"the corpus has {stream.shape[0]} student tokens, fewer than one row of "
            f"train.seq_len={seq_len}; lower train.seq_len or add documents"
        )
    return packed


def batch_rows(n_rows: int, seed: int, micro_index: int, batch_size: int) -> np.ndarray:
    """Row indices of global micro-batch ``micro_index``: a seeded permutation per epoch.

    int64 [batch_size]; a pure function of its arguments (the resumable data cursor).
    """
    flat = np.arange(micro_index * batch_size, (micro_index + 1) * batch_size, dtype=np.int64)
    out = np.empty_like(flat)
    epochs = flat // n_rows
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n_rows)
        mask = epochs == epoch
        out[mask] = perm[flat[mask] % n_rows]
    return out


def rank_slice(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's contiguous share of a global batch (the batch must divide evenly)."""
    if rows.shape[0] % world:
        raise AvokitError(
            f"train.batch_size={rows.shape[0]} must be divisible by the number of processes ({world})"
        )
    per = rows.shape[0] // world
    return rows[rank * per : (rank + 1) * per]
