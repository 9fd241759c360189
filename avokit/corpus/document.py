"""One corpus document."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """A document of the corpus: a stable id, its exact text, the source label it came from,
    its domain, where in that source it came from, the licence of its text and the id of the
    source text it was cut from (``group``: every segment of one file, passage or record
    shares it, so the split keeps them together; empty: the document is a text of its own)."""

    doc_id: str
    text: str
    source: str
    domain: str = "general"
    origin: str = ""
    license: str = ""
    group: str = ""

    @property
    def split_group(self) -> str:
        """The unit the train / held-out split assigns whole: its source text, else itself."""
        return self.group or self.doc_id
