"""Read a finished teacher cache: a Mapping ``doc_id -> TeacherRecords`` over memory-mapped
shards. Each shard is opened lazily, checked once (sha256, format version, fingerprints)
and only the requested document's record batch is decompressed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from avokit.cache.format import CacheSpec, decode
from avokit.cache.manifest import TOKENIZER_DIR, CacheManifest, read_manifest
from avokit.checksums import file_sha256
from avokit.errors import CacheError
from avokit.records import TeacherRecords


class CacheReader(Mapping[str, TeacherRecords]):
    """One teacher's cache directory (``run_dir/cache/<teacher>``).

    Args:
        path: the cache directory (holding ``manifest.json``).
        expect_teacher_fingerprint: refuse the cache unless it was captured from this teacher.
        expect_tokenizer_fingerprint: refuse the cache unless it used this tokenizer.
        verify: check every shard's sha256 when first opened (on by default).

    Raises :class:`~avokit.errors.CacheError` naming the file for a missing or invalid
    manifest, another format version, a fingerprint mismatch, or a corrupt shard.
    """

    def __init__(
        self,
        path: Path,
        expect_teacher_fingerprint: str | None = None,
        expect_tokenizer_fingerprint: str | None = None,
        verify: bool = True,
    ) -> None:
        self.path = Path(path)
        self.manifest: CacheManifest = read_manifest(self.path)
        m = self.manifest
        where = self.path / "manifest.json"
        if expect_teacher_fingerprint is not None and m.teacher_fingerprint != expect_teacher_fingerprint:
            raise CacheError(
                f"{where}: cache of teacher {m.teacher!r} has fingerprint {m.teacher_fingerprint}, "
                f"expected {expect_teacher_fingerprint} (captured from another teacher; capture again)"
            )
        if expect_tokenizer_fingerprint is not None and m.tokenizer_fingerprint != expect_tokenizer_fingerprint:
            raise CacheError(
                f"{where}: tokenizer fingerprint {m.tokenizer_fingerprint}, expected "
                f"{expect_tokenizer_fingerprint} (captured with another tokenizer; capture again)"
            )
        self._verify = verify
        # doc_id -> (shard, record batch, first row, rows)
        self._index: dict[str, tuple[int, int, int, int]] = {}
        for s, shard in enumerate(m.shards):
            for doc_id, loc in zip(shard.doc_ids, _doc_locations(shard.batch_docs, shard.doc_tokens)):
                self._index[doc_id] = (s, *loc)
        self._open: dict[int, pa.ipc.RecordBatchFileReader] = {}
        self._last: tuple[tuple[int, int], pa.RecordBatch] | None = None  # one decompressed batch

    @property
    def spec(self) -> CacheSpec:
        """The format spec every shard was written with."""
        return CacheSpec.model_validate(self.manifest.model_dump(include=set(CacheSpec.model_fields)))

    def doc_ids(self, split: str | None = None) -> list[str]:
        """Document ids in cache order, optionally of one split (``train`` / ``heldout``)."""
        return [d for s in self.manifest.shards if split in (None, s.split) for d in s.doc_ids]

    def _shard(self, s: int) -> pa.ipc.RecordBatchFileReader:
        if s in self._open:
            return self._open[s]
        info = self.manifest.shards[s]
        file = self.path / info.file
        if not file.is_file():
            raise CacheError(f"{file}: shard listed in the manifest is missing")
        if self._verify and file_sha256(file) != info.sha256:
            raise CacheError(f"{file}: checksum mismatch (corrupt or modified shard); capture again")
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(file), "r"))
        except (pa.ArrowInvalid, OSError) as err:
            raise CacheError(f"{file}: not a readable cache shard: {err}") from None
        self._check_shard_spec(file, reader.schema.metadata or {}, len(info.batch_docs),
                               reader.num_record_batches)
        self._open[s] = reader
        return reader

    def _check_shard_spec(self, file: Path, meta: dict[bytes, bytes], want_batches: int, n_batches: int) -> None:
        raw = meta.get(b"avokit_cache")
        if raw is None:
            raise CacheError(f"{file}: not an avokit cache shard (no avokit_cache metadata)")
        try:
            shard_spec: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError:
            raise CacheError(f"{file}: unreadable shard metadata") from None
        mine = self.spec.model_dump()
        if shard_spec.get("format_version") != mine["format_version"]:
            raise CacheError(
                f"{file}: shard format version {shard_spec.get('format_version')!r}, "
                f"manifest says {mine['format_version']}"
            )
        # shards written before compute_dtype existed were float32 (its default)
        shard_spec = {"compute_dtype": "float32", **shard_spec}
        for key in ("teacher_fingerprint", "tokenizer_fingerprint", "top_k", "logprob_bits", "vocab_size",
                    "compute_dtype"):
            if shard_spec.get(key) != mine[key]:
                raise CacheError(
                    f"{file}: shard {key} {shard_spec.get(key)!r} differs from the manifest's "
                    f"{mine[key]!r} (shard from another capture)"
                )
        if n_batches != want_batches:
            raise CacheError(f"{file}: {n_batches} record batches in the shard, manifest says {want_batches}")

    def __getitem__(self, doc_id: str) -> TeacherRecords:
        try:
            s, b, row, n = self._index[doc_id]
        except KeyError:
            raise KeyError(f"document {doc_id!r} is not in the cache at {self.path}") from None
        if self._last is None or self._last[0] != (s, b):
            self._last = ((s, b), self._shard(s).get_batch(b))
        return decode(self._last[1].slice(row, n), doc_id, self.manifest.top_k)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._index

    def iter_records(self, split: str | None = None) -> Iterator[TeacherRecords]:
        """Stream every document's records shard by shard (one shard open at a time)."""
        for s, info in enumerate(self.manifest.shards):
            if split not in (None, info.split):
                continue
            reader = self._shard(s)
            locs = _doc_locations(info.batch_docs, info.doc_tokens)
            batch: Any = None  # a pyarrow RecordBatch, read when the first document needs it
            current = -1
            for doc_id, (b, row, n) in zip(info.doc_ids, locs):
                if b != current:
                    batch, current = reader.get_batch(b), b
                yield decode(batch.slice(row, n), doc_id, self.manifest.top_k)
            self._open.pop(s, None)  # release the mapping before the next shard
            self._last = None


def _doc_locations(batch_docs: list[int], doc_tokens: list[int]) -> list[tuple[int, int, int]]:
    """(record batch, first row, rows) of every document of a shard."""
    out: list[tuple[int, int, int]] = []
    d = 0
    for b, count in enumerate(batch_docs):
        row = 0
        for n in doc_tokens[d : d + count]:
            out.append((b, row, n))
            row += n
        d += count
    return out


def load_cache_tokenizer(cache_dir: Path) -> Any:
    """The teacher tokenizer saved with the cache (``cache_dir/tokenizer``), loaded offline."""
    from transformers import AutoTokenizer

    folder = Path(cache_dir) / TOKENIZER_DIR
    if not folder.is_dir():
        raise CacheError(f"{folder}: no tokenizer saved with this cache; capture again")
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)
