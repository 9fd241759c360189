"""One corpus document."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """A document of the corpus: a stable id, its exact text and the source label it came from."""

    doc_id: str
    text: str
    source: str
