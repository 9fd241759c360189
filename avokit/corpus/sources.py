"""Read raw texts from each kind of corpus source: JSONL, Parquet, a folder of .txt files,
a local Hugging Face dataset directory (``save_to_disk``), or a built-in offline source."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from avokit.corpus.builtin import SourceText, builtin_source
from avokit.errors import AvokitError
from avokit.recipe.corpus import CorpusSource


class CorpusSourceError(AvokitError):
    """A corpus source cannot be read; the message names the file and field."""


def source_labels(sources: list[CorpusSource]) -> list[str]:
    """A short, stable label per source: ``builtin:NAME`` or ``KIND:FILENAME``; a label used
    twice gets ``#i`` (the source's index) so document ids stay unique and traceable."""
    labels = [
        f"builtin:{s.name}" if s.kind == "builtin" else f"{s.kind}:{s.path.name if s.path else ''}"
        for s in sources
    ]
    return [lab if labels.count(lab) == 1 else f"{lab}#{i}" for i, lab in enumerate(labels)]


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file; a line that is not a
    JSON object is an error naming ``path:line``."""
    with path.open("r", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusSourceError(f"{path}:{line_no}: not valid JSON: {err.msg}") from None
            if not isinstance(row, dict):
                raise CorpusSourceError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            yield line_no, row


def _jsonl(path: Path, field: str) -> Iterator[SourceText]:
    for line_no, row in jsonl_objects(path):
        if not isinstance(row.get(field), str):
            raise CorpusSourceError(f"{path}:{line_no}: no string field {field!r}")
        yield SourceText(row[field], f"{path.name}:{line_no}")


def _table_texts(table: pa.Table, field: str, where: Path) -> Iterator[SourceText]:
    if field not in table.column_names:
        raise CorpusSourceError(
            f"{where}: no column {field!r} (columns: {', '.join(table.column_names)})"
        )
    for row, value in enumerate(table.column(field).to_pylist()):
        if isinstance(value, str):
            yield SourceText(value, f"{where.name}#{row}")


def _parquet(path: Path, field: str) -> Iterator[SourceText]:
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    for file in files:
        try:
            table = pq.read_table(file, columns=[field])
        except (pa.ArrowInvalid, KeyError, OSError) as err:
            raise CorpusSourceError(f"{file}: cannot read column {field!r}: {err}") from None
        yield from _table_texts(table, field, file)


def _text_folder(path: Path) -> Iterator[SourceText]:
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise CorpusSourceError(f"{path}: no .txt files in the folder")
    for file in files:
        try:
            yield SourceText(file.read_text(encoding="utf-8"), file.name)
        except UnicodeDecodeError as err:
            raise CorpusSourceError(f"{file}: not UTF-8 text ({err.reason})") from None


def _hf_dataset(path: Path, field: str) -> Iterator[SourceText]:
    """A ``datasets.Dataset.save_to_disk`` folder: Arrow *stream* files listed in state.json."""
    state = path / "state.json"
    if not state.is_file():
        raise CorpusSourceError(f"{path}: not a saved Hugging Face dataset (no state.json)")
    files = [path / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    for file in files:
        try:
            with pa.memory_map(str(file)) as source:
                table = pa.ipc.open_stream(source).read_all()
        except (pa.ArrowInvalid, OSError) as err:
            raise CorpusSourceError(f"{file}: cannot read Arrow data: {err}") from None
        yield from _table_texts(table, field, file)


def source_domain(source: CorpusSource) -> str:
    """The domain its documents carry: the recipe's, else the builtin's own, else general."""
    if source.domain:
        return source.domain
    return builtin_source(source.name).domain if source.kind == "builtin" and source.name else "general"


def source_segment(source: CorpusSource) -> str:
    """How its texts are cut: the recipe's choice, else the builtin's own, else paragraphs."""
    if source.segment:
        return source.segment
    return builtin_source(source.name).segment if source.kind == "builtin" and source.name else "paragraphs"


def read_source(source: CorpusSource, base_dir: Path) -> Iterator[SourceText]:
    """Raw texts of one source with their origins, in file order (paths resolve against
    ``base_dir``); a file source's texts carry the recipe's ``license``."""
    if source.kind == "builtin":
        assert source.name is not None
        yield from builtin_source(source.name).texts()
        return
    for text in _read_file_source(source, base_dir):
        yield SourceText(text.text, text.origin, source.license or "")


def _read_file_source(source: CorpusSource, base_dir: Path) -> Iterator[SourceText]:
    assert source.path is not None
    path = source.path if source.path.is_absolute() else (base_dir / source.path).resolve()
    if not path.exists():
        raise CorpusSourceError(f"corpus source {source.kind}: file not found: {path}")
    if source.kind == "jsonl":
        yield from _jsonl(path, source.text_field)
    elif source.kind == "parquet":
        yield from _parquet(path, source.text_field)
    elif source.kind == "text":
        yield from _text_folder(path)
    else:
        yield from _hf_dataset(path, source.text_field)
