"""The one writer of benchmark results: ``<out>.json`` (everything, with its provenance) and
``<out>.md`` (the report). Every results JSON that bench/ writes goes through ``write_json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.provenance import Provenance


def write_json(path: Path, result: dict[str, Any], provenance: Provenance) -> None:
    """``path`` (a ``.json`` file) with ``result`` and its ``provenance`` block, parents created.

    A result that already has a ``provenance`` key is refused: the block is this writer's."""
    if "provenance" in result:
        raise ValueError(f"{path}: the result already has a 'provenance' key; the writer adds it")
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**result, "provenance": provenance.model_dump(mode="json")}
    path.write_text(json.dumps(body, indent=1, default=str) + "\n", encoding="utf-8")


def write_results(out: Path, result: dict[str, Any], markdown: str, provenance: Provenance) -> None:
    """``out.json`` and ``out.md`` side by side (``out`` without a suffix), parents created."""
    write_json(out.with_suffix(".json"), result, provenance)
    out.with_suffix(".md").write_text(markdown, encoding="utf-8")
