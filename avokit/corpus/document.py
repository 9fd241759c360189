"""One corpus document."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """A document of the corpus: a stable id, its exact text, the source label it came from,
    its domain, where in that source it came from and the licence of its text."""

    doc_id: str
    text: str
    source: str
    domain: str = "general"
    origin: str = ""
    license: str = ""
