"""Evaluation: held-out bits per byte, task suites, contamination, the release gate, the
report and release. ``run_eval`` and ``release`` are the stage entry points."""

from avokit.evaluate.release import release
from avokit.evaluate.run import run_eval

__all__ = ["release", "run_eval"]
