"""Where avokit keeps files it builds itself (assembled teacher weights, default runs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """avokit's cache directory: ``$AVOKIT_CACHE`` or ``~/.cache/avokit``; created on demand."""
    root = Path(os.environ.get("AVOKIT_CACHE", Path.home() / ".cache" / "avokit"))
    root.mkdir(parents=True, exist_ok=True)
    return root
