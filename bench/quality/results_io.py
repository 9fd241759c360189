"""Writing a quality benchmark's results: ``<out>.json`` (everything) and ``<out>.md`` (the report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(out: Path, result: dict[str, Any], markdown: str) -> None:
    """``out.json`` and ``out.md`` side by side (``out`` without a suffix), parents created."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown)
