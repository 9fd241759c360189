"""The corpus stage: where documents come from, dedup and the train / held-out split."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from avokit.recipe.base import Section


class CorpusSource(Section):
    """One source of documents.

    ``kind``: ``builtin`` (a named offline source, see ``avokit.corpus.builtin``), ``jsonl``,
    ``parquet``, ``text`` (a folder of .txt files, one document each) or ``hf_dataset``
    (a local ``datasets.save_to_disk`` directory).
    """

    kind: Literal["builtin", "jsonl", "parquet", "text", "hf_dataset"]
    name: str | None = None  # builtin source name
    path: Path | None = None
    text_field: str = "text"
    max_docs: int | None = Field(default=None, gt=0)
    # at most this many documents from each source text (its first ones): the splits keep a
    # text's documents together, so without it a few long files can be a domain's only texts
    # and leave it out of the held-out split
    max_docs_per_text: int | None = Field(default=None, gt=0)
    # this source's document length cap (characters), overriding corpus.max_chars: Chinese
    # packs ~2.4 bytes and ~1 teacher token per character, prose ~0.25 tokens
    max_chars: int | None = Field(default=None, ge=1)
    # What the text is (english, code, chinese, ...): carried by every document to the report,
    # so each figure can be read per domain. Builtin sources know theirs; files default to
    # ``general``.
    domain: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    # How texts are cut into documents: ``paragraphs`` packs stripped lines (prose);
    # ``lines`` packs whole lines byte for byte (code keeps its indentation, tabs and spaces).
    segment: Literal["paragraphs", "lines"] | None = None
    license: str | None = None  # the licence of a file source's text, recorded per document

    @model_validator(mode="after")
    def _needs_name_or_path(self) -> CorpusSource:
        if self.kind == "builtin" and not self.name:
            raise ValueError("a builtin source needs `name`")
        if self.kind != "builtin" and self.path is None:
            raise ValueError(f"a {self.kind} source needs `path`")
        return self


class CorpusConfig(Section):
    """Corpus stage settings."""

    sources: list[CorpusSource] = Field(min_length=1)
    # held-out = the test split every report scores; validation (optional) is for choosing
    # checkpoints; both are drawn per domain, so every domain has its share in each
    heldout_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    validation_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = 0
    min_chars: int = Field(default=200, ge=1)
    max_chars: int = Field(default=4000, ge=1)
    near_dup_threshold: float = Field(default=0.8, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> CorpusConfig:
        if self.heldout_fraction + self.validation_fraction >= 1.0:
            raise ValueError("validation_fraction: heldout_fraction + validation_fraction must be "
                             f"below 1 (got {self.heldout_fraction} + {self.validation_fraction})")
        return self
