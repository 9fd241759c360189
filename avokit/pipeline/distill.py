"""`avokit distill`: corpus -> generate -> capture -> train (student, baseline) -> eval -> release.

``generate`` runs only for recipes with a ``generate`` section.

Each stage function already skips finished work and resumes partial work, so running
``distill`` again after a kill continues where it stopped and loses nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from avokit.recipe import Recipe

STAGES = ("corpus", "generate", "capture", "train", "baseline", "eval", "release")


@dataclass(frozen=True)
class StageResult:
    """What one stage did: its output path and how long it took this time."""

    stage: str
    output: Path
    seconds: float
    # the process's peak resident memory so far (MB): teachers are loaded one at a time, so
    # after capture it is the largest teacher's footprint plus its scoring buffers
    peak_rss_mb: float | None = None


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _stage_functions(recipe: Recipe, registry: Path | None) -> dict[str, Callable[[], Path]]:
    # Imported here so `avokit --help` and the dry-run plan stay fast.
    from avokit.capture import run_capture
    from avokit.corpus import build_corpus
    from avokit.corpus.generated import generated_dir
    from avokit.evaluate import release, run_eval
    from avokit.generate import run_generate
    from avokit.train import run_training

    reg = registry or recipe.resolve(recipe.release.registry)

    def corpus() -> Path:
        build_corpus(recipe)
        return recipe.run_dir / "corpus"

    def generate() -> Path:
        return run_generate(recipe) if recipe.generate is not None else generated_dir(recipe.run_dir)

    def capture() -> Path:
        run_capture(recipe)
        return recipe.run_dir / "cache"

    return {
        "corpus": corpus,
        "generate": generate,
        "capture": capture,
        "train": lambda: run_training(recipe, baseline=False),
        "baseline": lambda: run_training(recipe, baseline=True),
        "eval": lambda: run_eval(recipe),
        "release": lambda: release(recipe.run_dir, recipe.release.name or recipe.name, reg),
    }


def distill(
    recipe: Recipe,
    stages: tuple[str, ...] = STAGES,
    registry: Path | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> list[StageResult]:
    """Run ``stages`` of ``recipe`` in pipeline order; each skips what is already done.

    Args:
        recipe: the validated recipe.
        stages: which stages to run (names from :data:`STAGES`).
        registry: model registry directory for the release stage (default: the recipe's).
        on_stage: called with a stage's name before it starts (progress display).
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages: {', '.join(STAGES)}")
    funcs = _stage_functions(recipe, registry)
    results: list[StageResult] = []
    for name in STAGES:
        if name not in stages:
            continue
        if on_stage is not None:
            on_stage(name)
        start = time.perf_counter()
        out = funcs[name]()
        results.append(StageResult(name, Path(out), time.perf_counter() - start, peak_rss_mb()))
    return results
