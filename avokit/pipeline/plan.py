"""`avokit distill --dry-run`: what a recipe will do and cost, without running anything.

Token counts come from the built corpus when it exists, else from an upper bound on the
sources (file sizes, capped by ``max_docs x max_chars``). FLOPs use the usual estimates:
2·N per token for a teacher's forward pass (capture, evaluation); the student's forward FLOPs
per token come from its config (:mod:`avokit.pipeline.student_size`: a pretrained student's
real size, attention included), three of them per training token, less what ``train.freeze``
spares.
GPU-hours assume an H100 at 989 dense bf16 TFLOP/s and a stated model-FLOPs utilisation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from avokit.pipeline.student_size import StudentSize, student_size
from avokit.recipe import Recipe, TeacherConfig

H100_BF16_FLOPS = 989e12
TRAIN_MFU = 0.40
FORWARD_MFU = 0.30
BYTES_PER_TOKEN_TEXT = 4.2  # English UTF-8 bytes per token for 50k-260k vocabularies
# Sizes of the built-in corpus sources (bytes of text), see ../shared/ASSETS.md.
BUILTIN_SOURCE_BYTES = {"lambada-passages": 1_600_000, "qasper-papers": 6_600_000}


@dataclass
class StagePlan:
    """One stage of the plan."""

    stage: str
    what: str
    tokens: int
    flops: float
    done: bool = False


@dataclass
class Plan:
    """The whole plan of a recipe, with totals and the inputs missing on this machine."""

    recipe: str
    run_dir: Path
    corpus_bytes: int
    corpus_bytes_source: str
    stages: list[StagePlan]
    cache_bytes: int
    student: StudentSize
    teacher_params: dict[str, int | None]
    missing_inputs: list[str] = field(default_factory=list)

    @property
    def student_params(self) -> int | None:
        """The student's parameter count (None: a pretrained student not on this machine)."""
        return self.student.params

    @property
    def total_flops(self) -> float:
        """Sum of all stages' FLOPs."""
        return sum(s.flops for s in self.stages)

    def gpu_hours(self) -> float:
        """H100-hours at the stated utilisations."""
        total = 0.0
        for s in self.stages:
            mfu = TRAIN_MFU if s.stage.startswith("train") else FORWARD_MFU
            total += s.flops / (H100_BF16_FLOPS * mfu) / 3600
        return total


def _source_bytes(recipe: Recipe) -> tuple[int, str]:
    manifest = recipe.run_dir / "corpus" / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        for key in ("total_bytes", "bytes"):
            value = data.get(key)
            if isinstance(value, dict):
                value = sum(value.values())
            if isinstance(value, int):
                return value, "built corpus"
    total = 0
    for src in recipe.corpus.sources:
        cap = src.max_docs * recipe.corpus.max_chars if src.max_docs else None
        if src.kind == "builtin":
            size = BUILTIN_SOURCE_BYTES.get(src.name or "", cap or 0)
        else:
            path = recipe.resolve(src.path) if src.path else None
            if path is not None and path.exists():
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                size = sum(p.stat().st_size for p in files)
            else:
                size = cap or 0
        total += min(size, cap) if cap else size
    return total, "upper bound from the sources"


def teacher_param_count(recipe: Recipe, teacher: TeacherConfig) -> int | None:
    """Declared, registry or config-derived parameter count; None when unknown."""
    if teacher.params:
        return teacher.params
    if teacher.kind == "registry":
        from avokit.catalog import TEACHERS

        entry = TEACHERS.get(teacher.registry_name)
        return entry.params if entry else None
    if teacher.kind == "hf" and teacher.path is not None:
        cfg_path = recipe.resolve(teacher.path) / "config.json"
        if cfg_path.is_file():
            import torch
            from transformers import AutoConfig, AutoModelForCausalLM

            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg_path.parent))
            return sum(p.numel() for p in model.parameters())
    return None


def _missing_inputs(recipe: Recipe) -> list[str]:
    missing = []
    for i, src in enumerate(recipe.corpus.sources):
        if src.path is not None and not recipe.resolve(src.path).exists():
            missing.append(f"corpus.sources[{i}].path: {recipe.resolve(src.path)}")
    for i, t in enumerate(recipe.teachers):
        for fname in ("path", "tokenizer"):
            value = getattr(t, fname)
            if value is not None and not recipe.resolve(value).exists():
                missing.append(f"teachers[{i}].{fname}: {recipe.resolve(value)}")
    folder = recipe.student.pretrained_dir(recipe.base_dir)
    if folder is not None and not folder.exists():
        missing.append(f"student.pretrained: {folder}")
    return missing


def make_plan(recipe: Recipe) -> Plan:
    """Estimate every stage of ``recipe`` without running any of them."""
    corpus_bytes, how = _source_bytes(recipe)
    corpus_tokens = int(corpus_bytes / BYTES_PER_TOKEN_TEXT)
    heldout_tokens = int(corpus_tokens * recipe.corpus.heldout_fraction)
    size = student_size(recipe)
    fwd = size.forward_flops_per_token
    teacher_params = {t.name: teacher_param_count(recipe, t) for t in recipe.teachers}
    tr = recipe.train
    train_tokens = tr.steps * tr.batch_size * tr.grad_accum * tr.seq_len
    run = recipe.run_dir
    stages = [StagePlan("corpus", f"{len(recipe.corpus.sources)} source(s), dedup, split", corpus_tokens, 0.0,
                        (run / "corpus" / "manifest.json").is_file())]
    gen = recipe.generate
    for name in recipe.generating_teachers:
        assert gen is not None
        # prompts: a source's max_prompts, else one per training document (corpus prefixes)
        # or an unknown file length (counted as max_prompts would)
        n_prompts = sum(src.max_prompts or (int(corpus_bytes * (1 - recipe.corpus.heldout_fraction)
                                                / recipe.corpus.max_chars) if src.kind == "corpus" else 0)
                        for src in gen.prompts)
        tokens = n_prompts * gen.samples_per_prompt * gen.max_new_tokens
        stages.append(StagePlan(f"generate:{name}", f"{n_prompts} prompts x {gen.samples_per_prompt} samples",
                                tokens, 2.0 * (teacher_params[name] or 0) * tokens,
                                (run / "generated" / "manifest.json").is_file()))
    for t in recipe.teachers:
        n = teacher_params[t.name]
        stages.append(StagePlan(
            f"capture:{t.name}", f"{t.kind} teacher, top-{recipe.capture.top_k}", corpus_tokens,
            2.0 * (n or 0) * corpus_tokens, (run / "cache" / t.name / "manifest.json").is_file()))
    for variant in ("student", "baseline"):
        kind = "CE + KD from all teachers" if variant == "student" else "CE only (baseline)"
        stages.append(StagePlan(f"train:{variant}", f"{tr.steps} steps, {kind}", train_tokens,
                                size.train_flops_per_token * train_tokens,
                                (run / variant / "model.safetensors").is_file()))
    # student, baseline and, for a pretrained student, its untouched start
    n_scored = 3 if recipe.student.pretrained is not None else 2
    eval_flops = heldout_tokens * (n_scored * fwd + 2.0 * sum(n or 0 for n in teacher_params.values()))
    stages.append(StagePlan("eval", f"held-out BPB + {', '.join(recipe.eval.tasks) or 'no tasks'}",
                            heldout_tokens, eval_flops, (run / "report" / "metrics.json").is_file()))
    stages.append(StagePlan("release", f"gate, then registry {recipe.release.registry}", 0, 0.0))
    # Budget per stored position: ~3 B per top-k entry (id + quantised log-prob, compressed)
    # plus ~8 B of per-position scalars; the capture manifest reports the measured figure.
    cache_bytes = int(corpus_tokens * (recipe.capture.top_k * 3 + 8) * len(recipe.teachers))
    return Plan(recipe.name, run, corpus_bytes, how, stages, cache_bytes, size, teacher_params,
                _missing_inputs(recipe))
