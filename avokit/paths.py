"""Where avokit keeps files it builds itself (assembled teacher weights, default runs)."""

from __future__ import annotations

import os
from pathlib import Path

# A training's per-document teacher weights, next to the student it trained: train writes it,
# evaluate reads it back per domain (the stages share the name, not each other's code).
FUSION_LOG = "fusion_weights.jsonl"


def cache_dir() -> Path:
    """avokit's cache directory: ``$AVOKIT_CACHE`` or ``~/.cache/avokit``; created on demand."""
    root = Path(os.environ.get("AVOKIT_CACHE", Path.home() / ".cache" / "avokit"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def pid_alive(pid: int) -> bool:
    """Whether another process with id ``pid`` runs; for temporary files named after the
    process writing them. This process's own id counts as dead: a file named after it was
    left by an earlier process that had the same id."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
