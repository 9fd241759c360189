"""The capture stage: teachers over the corpus into their caches (resumable, shardable)."""

from avokit.capture.plan import ShardPlan, parse_shard, plan_shards
from avokit.capture.run import cache_dir_for, capture_teacher, run_capture, stored_vs_exact_kl

__all__ = [
    "ShardPlan",
    "cache_dir_for",
    "capture_teacher",
    "parse_shard",
    "plan_shards",
    "run_capture",
    "stored_vs_exact_kl",
]
