"""Write one shard: documents are appended as record batches to a temporary file that is
renamed into place only when complete, then fingerprinted (sha256)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import pyarrow as pa

from avokit.cache.format import CacheSpec, encode, schema
from avokit.cache.manifest import ShardInfo
from avokit.checksums import file_sha256
from avokit.records import TeacherRecords

# Documents are grouped into record batches of at least this many positions: Arrow's
# per-batch metadata and zstd's per-buffer framing cost ~15 B/token on 80-token documents
# when every document is its own batch.
BATCH_POSITIONS = 2048


class ShardWriter:
    """Append documents to ``path`` (Arrow IPC file; consecutive documents share a record
    batch of at least :data:`BATCH_POSITIONS` rows; the shard's progress record and the
    manifest list how many documents each batch holds).

    Nothing appears at ``path`` until :meth:`close`; an interrupted writer leaves only a
    ``*.partial`` file, which the next capture overwrites.
    """

    def __init__(self, path: Path, spec: CacheSpec, split: str, batch_positions: int = BATCH_POSITIONS) -> None:
        self.path = path
        self.batch_positions = batch_positions
        self.spec = spec
        self.split = split
        self._tmp = path.with_name(path.name + ".partial")
        self._doc_ids: list[str] = []
        self._doc_tokens: list[int] = []
        self._batch_docs: list[int] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        options = pa.ipc.IpcWriteOptions(compression="zstd" if spec.compression == "zstd" else None)
        self._sink = pa.OSFile(str(self._tmp), "wb")
        self._writer = pa.ipc.new_file(self._sink, schema(spec), options=options)

    def add(self, rec: TeacherRecords) -> None:
        """Append one document."""
        batch = encode(rec, self.spec)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._doc_ids.append(rec.doc_id)
        self._doc_tokens.append(rec.n_positions)
        if self._pending_rows >= self.batch_positions:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending).combine_chunks()
        merged = table.to_batches()
        self._writer.write_batch(merged[0] if merged else self._pending[0].slice(0, 0))
        self._batch_docs.append(len(self._pending))
        self._pending, self._pending_rows = [], 0

    def close(self) -> ShardInfo:
        """Finish the file, fsync, rename it into place and describe it."""
        self._flush()
        self._writer.close()
        self._sink.close()
        fd = os.open(self._tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._tmp.replace(self.path)
        return ShardInfo(
            file=self.path.name,
            split=self.split,
            sha256=file_sha256(self.path),
            n_docs=len(self._doc_ids),
            n_tokens=sum(self._doc_tokens),
            n_bytes=self.path.stat().st_size,
            doc_ids=list(self._doc_ids),
            doc_tokens=list(self._doc_tokens),
            batch_docs=list(self._batch_docs),
        )

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self._writer.close()
            self._sink.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
