"""The main job: every stage in order, resumable, plus a dry-run planner."""

from avokit.pipeline.distill import STAGES, StageResult, distill
from avokit.pipeline.plan import Plan, make_plan

__all__ = ["STAGES", "Plan", "StageResult", "distill", "make_plan"]
