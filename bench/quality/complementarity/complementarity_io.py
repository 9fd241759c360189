"""Inputs of the complementarity benchmark: corpus documents, teacher caches, the machine.

A teacher whose capture has not finished has no manifest; :func:`open_caches` then reads the
shards it has finished (each checked against its progress record's sha256, exactly as the
capture's own resume logic does) through a manifest written in a temporary folder, so a
partial run can still be reported, labelled with what it covers. The cache folder itself is
never written to.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from avokit.cache import CacheReader, CacheSpec, finished_shard, write_manifest
from avokit.cache.manifest import MANIFEST_NAME
from avokit.corpus import load_split
from avokit.corpus.document import Document
from avokit.evaluate.run import cpu_model
from avokit.recipe import Recipe

_TMP: list[tempfile.TemporaryDirectory] = []  # kept alive while the readers are in use


def load_documents(recipe: Recipe) -> list[Document]:
    """Every document of the corpus (train, then held-out): nothing is trained here, so both
    splits are simply text the teachers scored."""
    return [d for split in ("train", "heldout") for d in load_split(recipe, split)]


def snapshot_cache(cache_dir: Path, folder: Path) -> dict[str, object]:
    """Make ``folder`` a complete cache of the finished shards of the (possibly unfinished)
    capture in ``cache_dir``: shard links, the tokenizer and a manifest listing just them.
    Returns what it covers."""
    state = json.loads((cache_dir / "capture.json").read_text(encoding="utf-8"))
    spec = CacheSpec.model_validate(state["spec"])
    files = sorted(p.name for p in cache_dir.glob("*.arrow"))
    infos = [i for i in (finished_shard(cache_dir, f) for f in files) if i is not None]
    folder.mkdir(parents=True, exist_ok=True)
    for info in infos:
        (folder / info.file).symlink_to((cache_dir / info.file).resolve())
    if (cache_dir / "tokenizer").is_dir():
        (folder / "tokenizer").symlink_to((cache_dir / "tokenizer").resolve(), target_is_directory=True)
    write_manifest(folder, spec, state["plan_hash"], infos)
    return {"complete": (cache_dir / MANIFEST_NAME).is_file(), "finished_shards": len(infos),
            "documents": sum(i.n_docs for i in infos)}


def _partial_reader(cache_dir: Path) -> tuple[CacheReader, dict[str, object]]:
    """A reader over the finished shards of an unfinished capture, and what it covers."""
    tmp = tempfile.TemporaryDirectory(prefix="complementarity-")
    _TMP.append(tmp)
    coverage = snapshot_cache(cache_dir, Path(tmp.name))
    return CacheReader(Path(tmp.name)), coverage


def open_caches(cache_root: Path, teachers: list[str]) -> tuple[dict[str, CacheReader], dict[str, object]]:
    """Readers of each teacher's cache (complete, or the finished shards of a partial one)."""
    readers: dict[str, CacheReader] = {}
    coverage: dict[str, object] = {}
    for t in teachers:
        folder = cache_root / t
        if (folder / MANIFEST_NAME).is_file():
            readers[t] = CacheReader(folder)
            coverage[t] = {"complete": True, "documents": readers[t].manifest.n_docs}
        else:
            readers[t], coverage[t] = _partial_reader(folder)
    return readers, coverage


def machine_info(recipe_path: Path) -> dict[str, object]:
    """CPU, cores, memory, load now, and the capture timings the capture script recorded."""
    from avokit.recipe import load_recipe

    timings_dir = load_recipe(str(recipe_path)).run_dir / "timings"
    timings = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(timings_dir.glob("*.json"))}
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), "0")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 2**20, 1),
        "uptime_at_analysis": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "capture_timings": timings,
    }
