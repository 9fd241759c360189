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
from avokit.corpus.segment import segment_lines, segment_text
from avokit.corpus.sources import read_source, source_domain, source_labels, source_segment
from avokit.errors import AvokitError
from avokit.recipe.recipe import Recipe

# A corpus of an older version no longer matches its recipe's hash and is rebuilt; what each
# version changed is named when caches captured from the old corpus forbid the rebuild.
CORPUS_FORMAT_VERSION = 3
_FORMAT_CHANGES = {3: "the train / held-out split keeps every segment of a source text together"}
Split = Literal["train", "validation", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "validation", "heldout")
_COLUMNS = ("doc_id", "text", "source", "domain", "origin", "license", "group")


class SourceStats(BaseModel):
    """What one source contributed."""

    label: str
    kind: str
    domain: str
    texts: int  # raw texts read
    documents: int  # documents after segmentation and max_docs, before dedup
    exact_duplicates: int = 0  # of this source's documents, dropped as exact duplicates
    near_duplicates: int = 0  # ... and as near duplicates (of any earlier document)


class CorpusManifest(BaseModel):
    """``corpus/manifest.json``: what was built, from what, and the files' checksums."""

    format_version: int
    config_hash: str
    sources: list[SourceStats]
    exact_duplicates: int
    near_duplicates: int
    documents: dict[str, int]  # split -> count
    bytes: dict[str, int]  # split -> UTF-8 bytes of text
    domains: dict[str, dict[str, int]]  # domain -> split -> documents
    domain_bytes: dict[str, dict[str, int]]  # domain -> split -> UTF-8 bytes
    # what the split assigns whole: every segment of one source text shares a split
    split_by: Literal["source_text"]
    domain_texts: dict[str, dict[str, int]]  # domain -> split -> source texts (groups)
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
    h = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def _fill(ranked: list[tuple[str, int]], target: int, at_least_one: bool) -> list[str]:
    """Groups ``(id, documents)`` taken in rank order, each only if it brings the documents
    taken closer to ``target`` (so a long text is skipped rather than overshooting the quota;
    with one document per group this is exactly the first ``target``). With nothing taken and
    ``at_least_one``, the smallest group (best ranked among equals): the quota rounded to 0."""
    taken: list[str] = []
    count = 0
    for group, size in ranked:
        if 2 * count + size < 2 * target:  # |count + size - target| < |count - target|
            taken.append(group)
            count += size
    if not taken and at_least_one and ranked:
        taken.append(min(ranked, key=lambda gs: gs[1])[0])
    return taken


def split_documents(
    docs: list[Document], fraction: float, seed: int, validation_fraction: float = 0.0
) -> dict[Split, list[Document]]:
    """Split by source text, stratified by domain, independent of the input order.

    Every segment of one source text (one file, passage or record: ``Document.split_group``)
    lands in the same split, so held-out text never continues a text trained on. Within each
    domain the groups are ranked by :func:`heldout_score` of their id; the quotas count
    *documents* (``round(fraction * n)`` held out, ``round(validation_fraction * n)``
    validation, of the domain's ``n``), filled with whole groups in rank order by
    :func:`_fill`, so the split's share of documents stays near the fraction even when a few
    texts are long. The last-ranked group always trains (train is never empty); a domain of
    two or more groups holds out at least one, and of three or more gives validation at
    least one when asked for. With one document per group this is the per-document split.
    Splits keep the input order.
    """
    chosen: dict[tuple[str, str], Split] = {}
    for domain in sorted({d.domain for d in docs}):
        sizes: dict[str, int] = {}
        for d in docs:
            if d.domain == domain:
                sizes[d.split_group] = sizes.get(d.split_group, 0) + 1
        ranked = sorted(sizes.items(), key=lambda gs: (heldout_score(gs[0], seed), gs[0]))
        n, n_groups = sum(sizes.values()), len(ranked)
        candidates = ranked[:-1]
        held = _fill(candidates, round(fraction * n), fraction > 0 and n_groups >= 2)
        taken = set(held)
        rest = [gs for gs in candidates if gs[0] not in taken]
        val = _fill(rest, round(validation_fraction * n), validation_fraction > 0 and n_groups >= 3)
        chosen.update({(domain, g): "train" for g in sizes})
        chosen.update({(domain, g): "heldout" for g in held})
        chosen.update({(domain, g): "validation" for g in val})
    return {split: [d for d in docs if chosen[(d.domain, d.split_group)] == split] for split in SPLITS}


def collect_documents(recipe: Recipe) -> tuple[list[Document], list[SourceStats]]:
    """Every source's texts cut into ``min_chars..max_chars`` documents, ``max_docs`` each
    and ``max_docs_per_text`` from one text."""
    cfg = recipe.corpus
    docs: list[Document] = []
    stats: list[SourceStats] = []
    for source, label in zip(cfg.sources, source_labels(cfg.sources)):
        domain = source_domain(source)
        cut = segment_lines if source_segment(source) == "lines" else segment_text
        n_texts = 0
        mine: list[Document] = []
        max_chars = source.max_chars or cfg.max_chars
        for raw in read_source(source, recipe.base_dir):
            n_texts += 1
            # the source text's id is its content hash, like a document's: stable when the
            # source is reordered, and two copies of one text are one text
            group = f"{label}:{hashlib.sha256(raw.text.encode('utf-8')).hexdigest()[:16]}"
            pieces = cut(raw.text, min(cfg.min_chars, max_chars), max_chars)
            for piece in pieces[: source.max_docs_per_text]:
                digest = hashlib.sha256(piece.encode("utf-8")).hexdigest()[:16]
                mine.append(Document(doc_id=f"{label}:{digest}", text=piece, source=label,
                                     domain=domain, origin=raw.origin, license=raw.license,
                                     group=group))
            if source.max_docs is not None and len(mine) >= source.max_docs:
                mine = mine[: source.max_docs]
                break
        stats.append(SourceStats(label=label, kind=source.kind, domain=domain, texts=n_texts,
                                 documents=len(mine)))
        docs.extend(mine)
    return docs, stats


def write_documents(docs: list[Document], path: Path) -> None:
    """Write ``docs`` as one corpus Parquet file (what :func:`read_documents` reads), atomically."""
    table = pa.table({c: pa.array([getattr(d, c) for d in docs], pa.string()) for c in _COLUMNS})
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


def _refuse_orphaning_caches(recipe: Recipe, out: Path, expected: str) -> None:
    """A corpus that teacher caches were captured from is never replaced by another one: the
    captures (hours of teacher time) would no longer match it, and the old corpus would be
    gone. Rebuilding the same corpus (a damaged file) is allowed."""
    try:
        old_manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    old = old_manifest.get("config_hash")
    if old in (None, expected):
        return
    caches = sorted(p.parent.name for p in (recipe.run_dir / "cache").glob("*/capture.json"))
    if caches:
        version = old_manifest.get("format_version")
        changes = [c for v, c in sorted(_FORMAT_CHANGES.items())
                   if not isinstance(version, int) or v > version]
        what = (f"avokit's corpus format changed (version {version} -> {CORPUS_FORMAT_VERSION}: "
                f"{'; '.join(changes)})" if version != CORPUS_FORMAT_VERSION
                else "the corpus section of the recipe changed")
        raise AvokitError(
            f"{out}: {what}, but the "
            f"teacher caches {', '.join(caches)} in {recipe.run_dir / 'cache'} were captured from the "
            f"corpus there now; give the recipe a new name (a new run folder), or move those caches "
            f"away to capture again from the new corpus")


def _bytes(docs: list[Document]) -> int:
    return sum(len(d.text.encode("utf-8")) for d in docs)


def _count_duplicates(stats: list[SourceStats], docs: list[Document], kept: list[Document]) -> None:
    """Per source, how many of its documents each dedup pass dropped (exact: same normalised
    text as an earlier document; near: the rest of what dedup removed)."""
    from avokit.corpus.dedup import normalise

    kept_ids = {d.doc_id for d in kept}
    seen: set[str] = set()
    by_label = {s.label: s for s in stats}
    for doc in docs:
        key = normalise(doc.text)
        src = by_label[doc.source]
        if key in seen:
            src.exact_duplicates += 1
        elif doc.doc_id not in kept_ids:
            src.near_duplicates += 1
        seen.add(key)


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
    _refuse_orphaning_caches(recipe, out, expected)
    docs, stats = collect_documents(recipe)
    for s in stats:
        if s.documents == 0:
            raise AvokitError(
                f"corpus source {s.label}: no documents of {recipe.corpus.min_chars}.."
                f"{recipe.corpus.max_chars} characters (read {s.texts} texts)"
            )
    refuse_canary(docs)
    kept, dstats = dedup(docs, threshold=recipe.corpus.near_dup_threshold)
    _count_duplicates(stats, docs, kept)
    splits = split_documents(kept, recipe.corpus.heldout_fraction, recipe.corpus.seed,
                             recipe.corpus.validation_fraction)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for split in SPLITS:
        path = out / f"{split}.parquet"
        write_documents(splits[split], path)
        files[path.name] = file_sha256(path)
    manifest = CorpusManifest(
        format_version=CORPUS_FORMAT_VERSION,
        config_hash=expected,
        sources=stats,
        exact_duplicates=dstats.exact,
        near_duplicates=dstats.near,
        documents={s: len(splits[s]) for s in SPLITS},
        bytes={s: _bytes(splits[s]) for s in SPLITS},
        domains={dom: {s: sum(d.domain == dom for d in splits[s]) for s in SPLITS}
                 for dom in sorted({d.domain for d in kept})},
        domain_bytes={dom: {s: _bytes([d for d in splits[s] if d.domain == dom]) for s in SPLITS}
                      for dom in sorted({d.domain for d in kept})},
        split_by="source_text",
        domain_texts={dom: {s: len({d.split_group for d in splits[s] if d.domain == dom}) for s in SPLITS}
                      for dom in sorted({d.domain for d in kept})},
        files=files,
    )
    tmp = out / "manifest.json.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(out / "manifest.json")
    return manifest


def load_split(recipe: Recipe, split: Split, generated: bool = True) -> list[Document]:
    """The documents of ``split`` (``train``, ``validation`` or ``heldout``) in corpus order.

    With a ``generate`` section in the recipe, the training split ends with the teachers'
    generated documents (``generated=False``: the corpus's own documents only)."""
    if split not in SPLITS:
        raise AvokitError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = corpus_dir(recipe) / f"{split}.parquet"
    if not path.is_file():
        raise AvokitError(f"{path}: corpus not built; run `avokit corpus {recipe.name}` first")
    docs = read_documents(path)
    if split == "train" and generated and recipe.generate is not None:
        from avokit.corpus.generated import generated_documents_path

        docs += read_documents(generated_documents_path(recipe.run_dir, recipe.name))
    return docs


def read_documents(path: Path) -> list[Document]:
    """The documents of one corpus Parquet file; errors name the file and say how to fix it."""
    if not path.is_file():
        raise AvokitError(f"{path}: corpus split not found; run `avokit corpus` first")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for truncated or foreign files
        raise AvokitError(f"{path}: unreadable Parquet ({err}); run `avokit corpus` again") from err
    missing = [c for c in ("doc_id", "text") if c not in table.column_names]
    if missing:
        raise AvokitError(f"{path}: missing column(s) {missing}; run `avokit corpus` again to rebuild it")
    n = table.num_rows
    # optional columns: a corpus written before domains existed is one domain, "general"; one
    # written before groups (and generated documents) has each document a text of its own
    defaults = {"source": "", "domain": "general", "origin": "", "license": "", "group": ""}
    columns = [table.column(c).to_pylist() if c in table.column_names else [defaults[c]] * n
               for c in _COLUMNS]
    return [Document(*(str(v) for v in row)) for row in zip(*columns)]
