"""The generate stage: each teacher writes text from the recipe's prompts into
``run_dir/generated/<teacher>.jsonl`` (one line per prompt, appended and flushed, so a kill
loses at most the prompt being written), then the documents that join the training split are
written once: canary refused, deduplicated against the whole corpus (a teacher that reproduces
held-out text does not leak it into training) and against each other."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from avokit.checksums import file_sha256
from avokit.corpus import Document, build_corpus, dedup, load_split, refuse_canary, write_documents
from avokit.corpus.generated import DOCUMENTS, MANIFEST, generated_dir
from avokit.errors import AvokitError
from avokit.generate.prompts import Prompt, collect_prompts
from avokit.recipe import Recipe, TeacherConfig
from avokit.teachers.base import Sampling, Teacher

SETTINGS = "settings.json"


class GenerationInterrupted(AvokitError):
    """Raised by a ``stop_after`` hook (tests simulate a kill with it)."""


class TeacherGenerations(BaseModel):
    """What one teacher wrote and what of it was kept."""

    prompts: int
    samples: int
    kept: int
    too_short: int  # generated text under generate.min_chars
    duplicates: int  # exact or near duplicates of corpus text or of an earlier generation


class GeneratedManifest(BaseModel):
    """``generated/manifest.json``."""

    settings_hash: str
    min_chars: int
    teachers: dict[str, TeacherGenerations]
    documents: int
    domains: dict[str, int]
    files: dict[str, str]  # file name -> sha256


def _settings(recipe: Recipe, prompts: list[Prompt]) -> dict[str, Any]:
    assert recipe.generate is not None
    ids = hashlib.sha256("\n".join(p.prompt_id + "\t" + p.text for p in prompts).encode()).hexdigest()
    # what the text depends on; teachers and min_chars only change which documents are kept
    return {"generate": recipe.generate.model_dump(mode="json", exclude={"teachers", "min_chars"}), "prompts": ids}


def seed_for(seed: int, teacher: str, prompt_id: str) -> int:
    """The sampling seed of one (teacher, prompt): fixed, whatever ran before it."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{teacher}:{prompt_id}".encode()).digest()[:4], "big")


def read_generations(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a teacher's generation file; a torn last line (a kill while it
    was written) is cut off the file."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    good = raw.rfind(b"\n") + 1
    if good < len(raw):
        with path.open("r+b") as f:
            f.truncate(good)
    try:
        return [json.loads(line) for line in raw[:good].decode("utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise AvokitError(f"{path}: damaged generation file ({err}); delete it to generate again") from None


def _check_settings(out: Path, settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    path = out / SETTINGS
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("hash") != digest:
            raise AvokitError(f"{out}: these generations were made with other generate settings or prompts; "
                              "move the folder away (or give the recipe a new name) to generate again")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"hash": digest, **settings}, indent=1) + "\n", encoding="utf-8")
    return digest


def generate_teacher(teacher: Teacher, prompts: list[Prompt], path: Path, recipe: Recipe,
                     stop_after: Callable[[int], bool] | None = None) -> None:
    """Append ``teacher``'s samples for ``prompts`` (those not yet in ``path``) to ``path``."""
    cfg = recipe.generate
    assert cfg is not None
    sampling = Sampling(cfg.max_new_tokens, cfg.temperature, cfg.top_p)
    info = teacher.info
    n = 0
    with path.open("a", encoding="utf-8") as f:
        for p in prompts:
            seed = seed_for(cfg.seed, info.name, p.prompt_id)
            texts = teacher.generate(p.text, sampling, n=cfg.samples_per_prompt, seed=seed, chat=p.chat)
            row = {"prompt_id": p.prompt_id, "source": p.source, "domain": p.domain, "chat": p.chat,
                   "prompt": p.text, "samples": texts, "teacher": info.name, "license": info.license,
                   "fingerprint": info.fingerprint, "seed": seed, "sampling": sampling.__dict__}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            n += 1
            if stop_after is not None and stop_after(n):
                raise GenerationInterrupted(f"stopped after {n} prompts")


def generation_documents(row: dict[str, Any]) -> list[Document]:
    """The training documents of one generation line: prompt and answer together (a chat
    answer after a blank line), with provenance in ``origin``, the teacher's licence."""
    docs = []
    for i, text in enumerate(row["samples"]):
        body = row["prompt"] + ("\n\n" if row["chat"] else "") + text
        docs.append(Document(doc_id=f"gen:{row['teacher']}:{row['prompt_id']}:{i}", text=body,
                             source=f"generated:{row['teacher']}", domain=row["domain"],
                             origin=f"{row['source']}#{row['prompt_id']}/{i} seed {row['seed']}",
                             license=row["license"]))
    return docs


def _finalize(recipe: Recipe, out: Path, digest: str, teachers: list[str]) -> GeneratedManifest:
    cfg = recipe.generate
    assert cfg is not None
    corpus = [d for s in ("train", "validation", "heldout") for d in load_split(recipe, s, generated=False)]
    stats: dict[str, dict[str, int]] = {}
    candidates: list[Document] = []
    for name in teachers:
        rows = read_generations(out / f"{name}.jsonl")
        pairs = [(doc, sample) for row in rows for doc, sample in zip(generation_documents(row), row["samples"])]
        long = [doc for doc, sample in pairs if len(sample.strip()) >= cfg.min_chars]
        stats[name] = {"prompts": len(rows), "samples": len(pairs), "too_short": len(pairs) - len(long)}
        candidates.extend(long)
    refuse_canary(candidates)
    kept_ids = {d.doc_id for d in dedup(corpus + candidates, threshold=recipe.corpus.near_dup_threshold)[0]}
    kept = [d for d in candidates if d.doc_id in kept_ids]
    for name, s in stats.items():
        mine = sum(d.source == f"generated:{name}" for d in kept)
        s["duplicates"] = s["samples"] - s["too_short"] - mine
        s["kept"] = mine
    write_documents(kept, out / DOCUMENTS)
    manifest = GeneratedManifest(
        settings_hash=digest, min_chars=cfg.min_chars, teachers={k: TeacherGenerations(**v) for k, v in stats.items()},
        documents=len(kept), domains={dom: sum(d.domain == dom for d in kept) for dom in sorted({d.domain for d in kept})},
        files={DOCUMENTS: file_sha256(out / DOCUMENTS)})
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(out / MANIFEST)
    return manifest


def run_generate(recipe: Recipe, teacher_loader: Callable[[TeacherConfig], Teacher] | None = None,
                 stop_after: Callable[[int], bool] | None = None, build: bool = True) -> Path:
    """Run the generate stage (resumable); returns ``run_dir/generated``.

    Teachers are loaded one at a time and only when they still have prompts to answer.
    ``build=False`` takes the corpus already in ``run_dir/corpus`` as it is (a frozen
    benchmark snapshot) instead of building it from the recipe's sources.
    """
    if recipe.generate is None:
        raise AvokitError(f"recipe {recipe.name!r} has no `generate` section")
    if build:
        build_corpus(recipe)
    prompts = collect_prompts(recipe.generate.prompts, load_split(recipe, "train", generated=False),
                              recipe.base_dir)
    out = generated_dir(recipe.run_dir)
    digest = _check_settings(out, _settings(recipe, prompts))
    if teacher_loader is None:
        from avokit.teachers.load import load_teacher

        def teacher_loader(config: TeacherConfig) -> Teacher:
            return load_teacher(config, recipe.base_dir, recipe.capture)

    changed = False
    for name in recipe.generating_teachers:
        path = out / f"{name}.jsonl"
        done = {row["prompt_id"] for row in read_generations(path)}
        todo = [p for p in prompts if p.prompt_id not in done]
        if not todo:
            continue
        teacher = teacher_loader(recipe.teacher(name))
        changed = True
        try:
            generate_teacher(teacher, todo, path, recipe, stop_after)
        finally:
            teacher.close()
    if changed or not _finished(out, digest, recipe.generating_teachers, recipe.generate.min_chars):
        _finalize(recipe, out, digest, recipe.generating_teachers)
    return out


def _finished(out: Path, digest: str, teachers: list[str], min_chars: int) -> bool:
    """The documents were written from these settings, teachers and length floor."""
    if not (out / MANIFEST).is_file() or not (out / DOCUMENTS).is_file():
        return False
    manifest = GeneratedManifest.model_validate_json((out / MANIFEST).read_text(encoding="utf-8"))
    return (manifest.settings_hash == digest and sorted(manifest.teachers) == sorted(teachers)
            and manifest.min_chars == min_chars)
