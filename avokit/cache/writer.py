"""Write one shard: documents are appended as record batches to a temporary file that is
renamed into place only when complete, then fingerprinted (sha256)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import pyarrow as pa

from avokit.cache.format import CacheSpec, encode, schema
from avokit.cache.manifest import ShardInfo, file_sha256
from avokit.records import TeacherRecords


class ShardWriter:
    """Append documents to ``path`` (Arrow IPC file, one record batch per document).

    Nothing appears at ``path`` until :meth:`close`; an interrupted writer leaves only a
    ``*.partial`` file, which the next capture overwrites.
    """

    def __init__(self, path: Path, spec: CacheSpec, split: str) -> None:
        self.path = path
        self.spec = spec
        self.split = split
        self._tmp = path.with_name(path.name + ".partial")
        self._doc_ids: list[str] = []
        self._n_tokens = 0
        options = pa.ipc.IpcWriteOptions(compression="zstd" if spec.compression == "zstd" else None)
        self._sink = pa.OSFile(str(self._tmp), "wb")
        self._writer = pa.ipc.new_file(self._sink, schema(spec), options=options)

    def add(self, rec: TeacherRecords) -> None:
        """Append one document."""
        self._writer.write_batch(encode(rec, self.spec))
        self._doc_ids.append(rec.doc_id)
        self._n_tokens += rec.n_positions

    def close(self) -> ShardInfo:
        """Finish the file, fsync, rename it into place and describe it."""
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
            n_tokens=self._n_tokens,
            n_bytes=self.path.stat().st_size,
            doc_ids=list(self._doc_ids),
        )

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self._writer.close()
            self._sink.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
