"""Build a :class:`~avokit.teachers.base.Teacher` from its recipe declaration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from avokit.errors import AvokitError
from avokit.recipe.capture import CaptureConfig
from avokit.recipe.teachers import TeacherConfig
from avokit.teachers.base import Teacher


def _resolve(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else (base_dir / path).resolve()


def load_teacher(
    config: TeacherConfig, base_dir: Path, capture: CaptureConfig | None = None
) -> Teacher:
    """Load the teacher ``config`` declares; relative paths resolve against ``base_dir``.

    ``capture`` supplies batching (``batch_size``, ``vocab_chunk``); defaults otherwise.
    Errors name the teacher and the file, URL or package at fault.
    """
    from avokit.teachers.hf import HFTeacher

    cap = capture or CaptureConfig()
    common: dict[str, Any] = {"max_length": config.max_length, "batch_size": cap.batch_size,
                              "vocab_chunk": cap.vocab_chunk}
    if config.kind == "registry":
        from avokit.catalog import teacher_entry
        from avokit.teachers.registry import registry_model_dir

        entry = teacher_entry(config.registry_name)
        folder, fingerprint = registry_model_dir(entry.name)
        return HFTeacher.from_dir(
            folder, name=config.name, license=entry.license, device=config.device, dtype=config.dtype,
            start_token=config.start_token or entry.start_token, fingerprint=fingerprint,
            backend="gguf", **common,
        )
    if config.kind in ("hf", "gguf"):
        if config.path is None:
            raise AvokitError(f"teacher {config.name!r}: a {config.kind} teacher needs `path`")
        path = _resolve(config.path, base_dir)
        if not path.exists():
            raise AvokitError(f"teacher {config.name!r}: path {path} does not exist")
        if config.kind == "hf":
            return HFTeacher.from_dir(path, name=config.name, device=config.device,
                                      dtype=config.dtype, start_token=config.start_token,
                                      **common)
        return HFTeacher.from_gguf(path, name=config.name, device=config.device, dtype=config.dtype,
                                   start_token=config.start_token, **common)
    if config.kind == "openai":
        from avokit.teachers.openai_backend import OpenAITeacher, load_local_tokenizer

        base_url = config.endpoint_url()
        if not base_url:
            raise AvokitError(f"teacher {config.name!r}: an openai teacher needs `base_url` in "
                              f"the recipe or ${config.base_url_env} in the environment")
        if not config.model or config.tokenizer is None:
            raise AvokitError(f"teacher {config.name!r}: an openai teacher needs `model` and "
                              "`tokenizer`")
        return OpenAITeacher(
            base_url, config.model,
            load_local_tokenizer(_resolve(config.tokenizer, base_dir)),
            name=config.name, api_key=os.environ.get(config.api_key_env),
            start_token=config.start_token, max_length=config.max_length,
        )
    raise AvokitError(f"teacher {config.name!r}: unknown kind {config.kind!r}")
