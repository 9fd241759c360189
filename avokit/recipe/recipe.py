"""The whole recipe: one typed section per stage."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from avokit.recipe.base import Section
from avokit.recipe.capture import CaptureConfig
from avokit.recipe.corpus import CorpusConfig
from avokit.recipe.evaluation import EvalConfig, GateConfig, ReleaseConfig
from avokit.recipe.generate import GenerateConfig
from avokit.recipe.student import StudentConfig
from avokit.recipe.teachers import TeacherConfig
from avokit.recipe.train import TrainConfig


class Recipe(Section):
    """A distillation recipe. ``base_dir`` is the recipe file's folder (paths resolve there)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    runs_dir: Path = Path("runs")
    corpus: CorpusConfig
    teachers: list[TeacherConfig] = Field(min_length=1)
    generate: GenerateConfig | None = None  # teacher-written training text; None: none
    student: StudentConfig = StudentConfig()
    capture: CaptureConfig = CaptureConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    release: ReleaseConfig = ReleaseConfig()
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _unique_teachers(self) -> Recipe:
        seen: set[str] = set()
        for t in self.teachers:
            if t.name in seen:
                raise ValueError(f"teacher name {t.name!r} is used twice")
            seen.add(t.name)
        for domain, weights in self.train.fusion.domain_weights.items():
            unknown = [n for n in weights if n not in seen]
            if unknown:
                raise ValueError(f"train.fusion.domain_weights[{domain!r}]: unknown teacher(s) {unknown} "
                                 f"(teachers: {sorted(seen)})")
        if self.generate is not None:
            unknown = [n for n in self.generate.teachers if n not in seen]
            if unknown:
                raise ValueError(f"generate.teachers: unknown teacher(s) {unknown} (teachers: {sorted(seen)})")
        return self

    @model_validator(mode="after")
    def _student_not_a_teacher(self) -> Recipe:
        """A pretrained student that is also a teacher would distil a model into itself: the
        names and paths are compared here; the weights' fingerprints where they are loaded
        (:func:`avokit.teachers.pretrained.check_not_a_teacher`)."""
        student = self.student
        if student.pretrained is None:
            return self
        folder = student.pretrained_dir(self.base_dir)
        for i, t in enumerate(self.teachers):
            same_name = t.kind == "registry" and t.registry_name == student.registry_name
            same_path = folder is not None and t.path is not None and self.resolve(t.path) == folder
            if same_name or same_path:
                field = "path" if same_path else ("model" if t.model else "name")
                raise ValueError(f"student.pretrained ({student.pretrained}) is also teachers[{i}].{field} "
                                 f"({t.name!r}): a model cannot be distilled into itself; drop that teacher "
                                 "or start from another model")
        return self

    @property
    def generating_teachers(self) -> list[str]:
        """The teachers the generate stage runs (all of them when the section lists none)."""
        if self.generate is None:
            return []
        return self.generate.teachers or [t.name for t in self.teachers]

    @property
    def run_dir(self) -> Path:
        """``runs_dir/name``, resolved against the recipe folder."""
        return self.resolve(self.runs_dir) / self.name

    def resolve(self, path: Path) -> Path:
        """A path from the recipe, relative to the recipe's own folder."""
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def teacher(self, name: str) -> TeacherConfig:
        """The teacher called ``name``; a clear error lists the names there are."""
        for t in self.teachers:
            if t.name == name:
                return t
        raise KeyError(f"no teacher {name!r} in recipe (teachers: {[t.name for t in self.teachers]})")
