"""Evaluation, the release gate and release."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from avokit.recipe.base import Section


class GenerationConfig(Section):
    """Generation quality: greedy continuations of held-out prompts, judged by the teachers.

    Per domain, the first ``prompts_per_domain`` held-out documents (corpus order) that are
    longer than ``prompt_bytes``; each prompt is the document's opening, cut at the last
    whitespace or CJK punctuation within ``prompt_bytes`` UTF-8 bytes.
    """

    prompts_per_domain: int = Field(default=3, ge=0)  # 0: no generation section
    prompt_bytes: int = Field(default=256, ge=16)
    max_new_tokens: int = Field(default=48, ge=1, le=1024)


class EvalConfig(Section):
    """What to evaluate: held-out BPB and task suites, for student, baseline and teachers."""

    tasks: list[str] = ["arc_easy", "piqa"]  # built-in names or paths to task YAML files
    max_items: int | None = Field(default=200, gt=0)
    num_fewshot: int = Field(default=0, ge=0)
    bpb_max_docs: int | None = Field(default=None, gt=0)
    ngram: int = Field(default=13, ge=4)
    bootstrap: int = Field(default=1000, ge=100)
    batch_size: int = Field(default=8, gt=0)
    max_length: int = Field(default=512, ge=16)  # tokens per scoring window
    include_teachers: bool = True
    # score the teachers on the tasks too (each costs minutes per task on a CPU: thousands of
    # choice continuations through a 262k-vocabulary head); false: teachers get BPB only
    teacher_tasks: bool = True
    # teachers' held-out BPB: "auto" reads the capture cache when it covers every held-out
    # document (exact stored gold log-probs, same numbers), else scores live
    teacher_bpb: Literal["auto", "live", "cache"] = "auto"
    cost_per_hour: float = Field(default=0.0, ge=0.0)  # $/hour of the machine; 0 = a CPU you own
    generation: GenerationConfig = GenerationConfig()


class GateConfig(Section):
    """Release thresholds; a missing threshold is not checked."""

    max_bpb: float | None = Field(default=None, gt=0.0)
    min_task_accuracy: dict[str, float] = {}
    max_contamination: float = Field(default=0.01, ge=0.0, le=1.0)
    must_beat_baseline: bool = True


class ReleaseConfig(Section):
    """Where released models go and what their card says."""

    registry: Path = Path("registry")
    name: str | None = None
    license: str = "apache-2.0"
