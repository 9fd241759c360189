"""Prompts for the generate stage: prefixes of training documents, or a JSONL file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from avokit.corpus import Document
from avokit.corpus.sources import jsonl_objects
from avokit.errors import AvokitError
from avokit.recipe.generate import PromptSource


@dataclass(frozen=True)
class Prompt:
    """One prompt: a stable id, its text, the domain its answers belong to, where it came from
    and whether the teacher's chat template wraps it."""

    prompt_id: str
    text: str
    domain: str
    source: str
    chat: bool


def corpus_prefix(text: str, chars: int) -> str:
    """The first ``chars`` characters of ``text``, cut back to the last whitespace (whole
    words) when there is one in the second half."""
    if len(text) <= chars:
        return text
    head = text[:chars]
    cut = max(head.rfind(" "), head.rfind("\n"))
    return head[:cut] if cut >= chars // 2 else head


def corpus_prompts(source: PromptSource, train: list[Document], label: str) -> list[Prompt]:
    """One prompt per training document (never a held-out one): its prefix, its domain."""
    out = []
    for doc in train:
        if doc.source.startswith("generated:"):
            continue  # teachers continue corpus text, not each other's
        prefix = corpus_prefix(doc.text, source.prefix_chars)
        if prefix.strip():
            out.append(Prompt(f"{label}:{doc.doc_id}", prefix, source.domain or doc.domain, label, False))
    return out


def jsonl_prompts(source: PromptSource, path: Path, label: str) -> list[Prompt]:
    """Prompts of a JSONL file; errors name the file and line."""
    if not path.is_file():
        raise AvokitError(f"generate.prompts ({label}): prompt file {path} not found")
    out: list[Prompt] = []
    seen: set[str] = set()
    for no, row in jsonl_objects(path):
        text = row.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise AvokitError(f"{path}:{no}: `prompt` must be a non-empty string")
        pid = str(row.get("id", no))
        if pid in seen:
            raise AvokitError(f"{path}:{no}: prompt id {pid!r} is used twice")
        seen.add(pid)
        domain = row.get("domain", source.domain or "general")
        if not isinstance(domain, str) or not domain:
            raise AvokitError(f"{path}:{no}: `domain` must be a non-empty string")
        out.append(Prompt(f"{label}:{pid}", text, domain, label, source.chat))
    return out


def source_label(source: PromptSource, index: int, base_dir: Path) -> str:
    """A stable label for a prompt source: its kind, position and (for files) path hash."""
    if source.path is None:
        return f"{source.kind}{index}"
    digest = hashlib.sha256(str((base_dir / source.path).resolve()).encode()).hexdigest()[:8]
    return f"{source.kind}{index}-{digest}"


def collect_prompts(sources: list[PromptSource], train: list[Document], base_dir: Path) -> list[Prompt]:
    """Every prompt of every source, ``max_prompts`` each, in a fixed order."""
    prompts: list[Prompt] = []
    for i, source in enumerate(sources):
        label = source_label(source, i, base_dir)
        if source.kind == "corpus":
            mine = corpus_prompts(source, train, label)
        else:
            assert source.path is not None  # the recipe validator guarantees it
            path = source.path if source.path.is_absolute() else (base_dir / source.path).resolve()
            mine = jsonl_prompts(source, path, label)
        if not mine:
            raise AvokitError(f"generate.prompts[{i}] ({source.kind}): no prompts")
        prompts.extend(mine[: source.max_prompts])
    return prompts
