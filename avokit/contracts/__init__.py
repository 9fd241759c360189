"""Typed contracts between stages: the files one stage writes and another reads.

Each file format has one pydantic model here, imported by the writer and by every reader, so
a field is defined once. Only pydantic and the standard library are imported: the gateway
reads release manifests through this package without pulling in the training stack.
"""

from avokit.contracts.base import ContractError
from avokit.contracts.metrics import EVAL_SCHEMA_VERSION, EvalMetrics, read_metrics
from avokit.contracts.release import (
    RELEASE_SCHEMA_VERSION,
    ReleaseManifest,
    read_release_manifest,
    verify_release_files,
)

__all__ = [
    "EVAL_SCHEMA_VERSION",
    "RELEASE_SCHEMA_VERSION",
    "ContractError",
    "EvalMetrics",
    "ReleaseManifest",
    "read_metrics",
    "read_release_manifest",
    "verify_release_files",
]
