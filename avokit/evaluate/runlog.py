"""The append-only evaluation log: every evaluation ever run for a recipe, one JSON line each.

Lines are only ever appended (never rewritten, never filtered), so the report can show all
runs and nobody can quietly keep the best of N.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from avokit.errors import AvokitError


def append_entry(log_path: Path, entry: dict[str, Any]) -> int:
    """Append one entry; returns its 1-based run number. fsync'd so a crash cannot lose it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    n = len(read_log(log_path)) + 1
    line = json.dumps({"run": n, **entry}, sort_keys=True, default=str)
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return n


def read_log(log_path: Path) -> list[dict[str, Any]]:
    """All entries in order; a corrupt line is an error naming the file and line."""
    if not log_path.is_file():
        return []
    out = []
    for ln, line in enumerate(log_path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AvokitError(f"{log_path}:{ln}: corrupt evaluation log line: {err}") from None
    return out
