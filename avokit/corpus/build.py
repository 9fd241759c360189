"""The corpus stage: read sources, cut into documents, refuse the canary, dedup, split
train / held-out deterministically, write Parquet plus a manifest under ``run_dir/corpus``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from avokit.checksums import file_sha256
from avokit.corpus.canary import refuse_canary
from avokit.corpus.dedup import dedup
from avokit.corpus.document import Document
from avokit.corpus.segment import segment_text
from avokit.corpus.sources import read_source, source_labels
from avokit.errors import AvokitError
from avokit.recipe.recipe import Recipe

CORPUS_FORMAT_VERSION = 1
Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")


class SourceStats(BaseModel):
    """What one source contributed."""

    label: str
    kind: str
    texts: int  # raw texts read
    documents: int  # documents after segmentation and max_docs, before dedup


class CorpusManifest(BaseModel):
    """``corpus/manifest.json``: what was built, from what, and the files' checksums."""

    format_version: int
    config_hash: str
    sources: list[SourceStats]
    exact_duplicates: int
    near_duplicates: int
    documents: dict[str, int]  # split -> count
    bytes: dict[str, int]  # split -> UTF-8 bytes of text
    files: dict[str, str]  # file name -> sha256


def corpus_dir(recipe: Recipe) -> Path:
    """``run_dir/corpus``."""
    return recipe.run_dir / "corpus"


def config_hash(recipe: Recipe) -> str:
    """Hash of the corpus section with source paths resolved (what the corpus depends on)."""
    data = recipe.corpus.model_dump(mode="json")
    for src, model in zip(data["sources"], recipe.corpus.sources):
        if model.path is not None:
            src["path"] = str(recipe.resolve(model.path))
    blob = json.dumps({"v": CORPUS_FORMAT_VERSION, "corpus": data}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def heldout_score(doc_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, doc_id): the split never depends on order."""
    h = hashlib.sha256(f"{seed}:{doc_id}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_documents(docs: list[Document], fraction: float, seed: int) -> dict[Split, list[Document]]:
    """Deterministic split by document; at least one held-out document when there are two."""
    scores = [heldout_score(d.doc_id, seed) for d in docs]
    heldout = {i for i, s in enumerate(scores) if s < fraction}
    if not heldout and len(docs) >= 2:
        heldout = {min(range(len(docs)), key=scores.__getitem__)}
    if len(heldout) == len(docs) and len(docs) >= 2:
        heldout.discard(max(range(len(docs)), key=scores.__getitem__))
    return {
        "train": [d for i, d in enumerate(docs) if i not in heldout],
        "heldout": [d for i, d in enumerate(docs) if i in heldout],
    }


def collect_documents(recipe: Recipe) -> tuple[list[Document], list[SourceStats]]:
    """Every source's texts cut into ``min_chars..max_chars`` documents, ``max_docs`` each."""
    cfg = recipe.corpus
    docs: list[Document] = []
    stats: list[SourceStats] = []
    for source, label in zip(cfg.sources, source_labels(cfg.sources)):
        n_texts = 0
        mine: list[Document] = []
        for text in read_source(source, recipe.base_dir):
            n_texts += 1
            for piece in segment_text(text, cfg.min_chars, cfg.max_chars):
                digest = hashlib.sha256(piece.encode("utf-8")).hexdigest()[:16]
                mine.append(Document(doc_id=f"{label}:{digest}", text=piece, source=label))
            if source.max_docs is not None and len(mine) >= source.max_docs:
                mine = mine[: source.max_docs]
                break
        stats.append(SourceStats(label=label, kind=source.kind, texts=n_texts, documents=len(mine)))
        docs.extend(mine)
    return docs, stats


def _write_parquet(docs: list[Document], path: Path) -> None:
    table = pa.table(
        {
            "doc_id": pa.array([d.doc_id for d in docs], pa.string()),
            "text": pa.array([d.text for d in docs], pa.string()),
            "source": pa.array([d.source for d in docs], pa.string()),
        }
    )
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)  # atomic: a reader never sees half a file


def _existing_manifest(out: Path, expected_hash: str) -> CorpusManifest | None:
    path = out / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = CorpusManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if manifest.config_hash != expected_hash:
        return None
    for name, sha in manifest.files.items():
        if not (out / name).is_file() or file_sha256(out / name) != sha:
            return None
    return manifest


def build_corpus(recipe: Recipe) -> CorpusManifest:
    """Build ``run_dir/corpus/{train,heldout}.parquet`` and ``manifest.json``.

    Skips the work when a manifest exists whose ``config_hash`` matches the recipe's corpus
    section and whose files still match their checksums. Raises :class:`AvokitError` when a
    source yields no documents and :class:`~avokit.corpus.canary.CanaryError` when any
    document contains the evaluation canary.
    """
    out = corpus_dir(recipe)
    expected = config_hash(recipe)
    done = _existing_manifest(out, expected)
    if done is not None:
        return done
    docs, stats = collect_documents(recipe)
    for s in stats:
        if s.documents == 0:
            raise AvokitError(
                f"corpus source {s.label}: no documents of {recipe.corpus.min_chars}.."
                f"{recipe.corpus.max_chars} characters (read {s.texts} texts)"
            )
    refuse_canary(docs)
    kept, dstats = dedup(docs, threshold=recipe.corpus.near_dup_threshold)
    splits = split_documents(kept, recipe.corpus.heldout_fraction, recipe.corpus.seed)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for split in SPLITS:
        path = out / f"{split}.parquet"
        _write_parquet(splits[split], path)
        files[path.name] = file_sha256(path)
    manifest = CorpusManifest(
        format_version=CORPUS_FORMAT_VERSION,
        config_hash=expected,
        sources=stats,
        exact_duplicates=dstats.exact,
        near_duplicates=dstats.near,
        documents={s: len(splits[s]) for s in SPLITS},
        bytes={s: sum(len(d.text.encode("utf-8")) for d in splits[s]) for s in SPLITS},
        files=files,
    )
    tmp = out / "manifest.json.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(out / "manifest.json")
    return manifest


def load_split(recipe: Recipe, split: Split) -> list[Document]:
    """The documents of ``split`` (``train`` or ``heldout``) in corpus order."""
    if split not in SPLITS:
        raise AvokitError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = corpus_dir(recipe) / f"{split}.parquet"
    if not path.is_file():
        raise AvokitError(f"{path}: corpus not built; run `avokit corpus {recipe.name}` first")
    table = pq.read_table(path, columns=["doc_id", "text", "source"])
    return [
        Document(doc_id=i, text=t, source=s)
        for i, t, s in zip(
            table.column("doc_id").to_pylist(),
            table.column("text").to_pylist(),
            table.column("source").to_pylist(),
        )
    ]
