"""Capture only what another study has not: a teacher's cache for this study's corpus made of
the finished shards of another study's capture of the same documents, plus avokit's capture of
the rest.

avokit's capture cannot be extended to a larger corpus (its plan hash includes the corpus
hash), but a cache is a list of shard files in a manifest, and a document's id is its source
label and content hash. So, per teacher: a domain whose every train and held-out document the
other cache holds, on the same side of the split, is taken from it (its shard files linked, not
copied); the other domains' sources form a smaller corpus in ``RUNS/data/rest`` that is
captured as usual (resumable); the teacher's cache in ``RUNS/data/cache/<teacher>`` is a
manifest over both, written only when the documents it lists are exactly this corpus's train
and held-out documents, each on its own side, and both captures have the same spec (teacher
fingerprint, tokenizer, top-k, prefix cuts, dtype). What was reused is in ``reuse.json`` there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bench.quality.study.data import DataSource, _write_json

CAPTURED = ("train", "heldout")  # the splits avokit captures


def _finished(cache_dir: Path) -> tuple[Any, str, list[Any]]:
    """The spec, plan hash and finished shards of a (possibly unfinished) capture."""
    from avokit.cache.format import CacheSpec
    from avokit.cache.manifest import finished_shard

    state = json.loads((cache_dir / "capture.json").read_text(encoding="utf-8"))
    files = sorted(p.name for p in cache_dir.glob("*.arrow"))
    infos = [i for i in (finished_shard(cache_dir, f) for f in files) if i is not None]
    return CacheSpec.model_validate(state["spec"]), state["plan_hash"], infos


def covered_domains(needed: dict[str, dict[str, str]], held: dict[str, str]) -> list[str]:
    """The domains whose every needed document (``needed[split][doc_id] = domain``) the other
    cache holds on the same split (``held[doc_id] = split``)."""
    domains = {dom for docs in needed.values() for dom in docs.values()}
    missing = {dom for split, docs in needed.items() for doc, dom in docs.items() if held.get(doc) != split}
    return sorted(domains - missing)


def reuse_capture(source: DataSource, runs: Path, teacher: str, other: Path) -> dict[str, Any]:
    """``RUNS/data/cache/<teacher>`` from ``other/cache/<teacher>`` (another study's data folder)
    where it covers whole domains, and a capture of the rest; returns what was reused."""
    from avokit.cache.build import write_manifest
    from avokit.capture import run_capture
    from avokit.corpus import build_corpus, load_split

    recipe = source.recipe(runs)
    build_corpus(recipe)
    needed = {s: {d.doc_id: d.domain for d in load_split(recipe, s)} for s in CAPTURED}  # type: ignore[arg-type]
    spec, old_plan, old_infos = _finished(other / "cache" / teacher)
    if spec.inside_top_k != recipe.capture.inside_top_k or spec.top_k != recipe.capture.top_k:
        raise SystemExit(f"{other}/cache/{teacher}: captured with top_k {spec.top_k}, inside_top_k "
                         f"{spec.inside_top_k}; these runs capture {recipe.capture.top_k}/{recipe.capture.inside_top_k}")
    held = {doc: info.split for info in old_infos for doc in info.doc_ids}
    reused = covered_domains(needed, held)
    infos = [i.model_copy(update={"file": f"reused-{i.file}"}) for i in old_infos
             if any(needed[i.split].get(doc) in reused for doc in i.doc_ids)]
    rest_sources = [s for s, dom in zip(recipe.corpus.sources, _source_domains(recipe), strict=True)
                    if dom not in reused]
    plans = [old_plan]
    out = recipe.run_dir / "cache" / teacher
    if rest_sources:
        rest = recipe.model_copy(update={"name": "rest", "runs_dir": recipe.run_dir,
                                         "corpus": recipe.corpus.model_copy(update={"sources": rest_sources})})
        run_capture(rest, teacher=teacher)
        rest_spec, rest_plan, rest_infos = _finished(rest.run_dir / "cache" / teacher)
        if rest_spec != spec:
            raise SystemExit(f"{other}/cache/{teacher} and {rest.run_dir}/cache/{teacher} were captured with "
                             f"different specs; capture the whole corpus instead (prepare without --reuse)")
        infos += [i.model_copy(update={"file": f"rest-{i.file}"}) for i in rest_infos]
        plans.append(rest_plan)
        _link_shards(out, rest.run_dir / "cache" / teacher, "rest-", rest_infos)
    _link_shards(out, other / "cache" / teacher, "reused-", [i for i in old_infos if f"reused-{i.file}" in
                                                             {x.file for x in infos}])
    _check_cover(needed, infos)
    write_manifest(out, spec, hashlib.sha256("+".join(plans).encode()).hexdigest(), infos)
    info = {"teacher": teacher, "reused_from": str((other / "cache" / teacher).resolve()), "reused_domains": reused,
            "reused_docs": sum(i.n_docs for i in infos if i.file.startswith("reused-")),
            "captured_docs": sum(i.n_docs for i in infos if i.file.startswith("rest-"))}
    _write_json(out / "reuse.json", info)
    return info


def _source_domains(recipe: Any) -> list[str]:
    from avokit.corpus.sources import source_domain

    return [source_domain(s) for s in recipe.corpus.sources]


def _link_shards(out: Path, cache_dir: Path, prefix: str, infos: list[Any]) -> None:
    """Link each shard of ``cache_dir`` into ``out`` as ``<prefix><file>`` (and its tokenizer)."""
    out.mkdir(parents=True, exist_ok=True)
    for info in infos:
        link = out / f"{prefix}{info.file}"
        if not link.is_symlink():
            link.symlink_to((cache_dir / info.file).resolve())
    if not (out / "tokenizer").exists():
        (out / "tokenizer").symlink_to((cache_dir / "tokenizer").resolve(), target_is_directory=True)


def _check_cover(needed: dict[str, dict[str, str]], infos: list[Any]) -> None:
    """Refuse a merged cache whose documents are not exactly the needed ones, each once, on its side."""
    listed = [(doc, i.split) for i in infos for doc in i.doc_ids]
    want = sorted((doc, split) for split, docs in needed.items() for doc in docs)
    if sorted(listed) != want:
        extra = sorted(set(listed) - set(want))[:3]
        lacking = sorted(set(want) - set(listed))[:3]
        twice = sorted({x for x in listed if listed.count(x) > 1})[:3]
        raise SystemExit(f"the merged cache would not be this corpus's train and held-out documents: "
                         f"{len(listed)} listed, {len(want)} needed; extra {extra}, lacking {lacking}, twice {twice}")
