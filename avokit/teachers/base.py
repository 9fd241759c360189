"""The one interface every teacher backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from typing import Any

from avokit.align.bytes import TokenBytes
from avokit.align.offsets import tokenize_batch_with_offsets
from avokit.records import TeacherRecords, TokenizedDoc


@dataclass(frozen=True)
class TeacherInfo:
    """What ``avokit teachers list`` shows and what a cache manifest fingerprints."""

    name: str
    backend: str  # "hf" | "gguf" | "openai"
    vocab_size: int  # tokenizer length (the logit width may be larger: padded vocabularies)
    tokenizer_kind: str  # TokenBytes.family
    license: str
    params: int | None  # None where unknown (an endpoint)
    fingerprint: str  # weights hash, or endpoint + model
    tokenizer_fingerprint: str
    # "full": boundary_logmass is summed over the full vocabulary; "topk": an endpoint gave
    # only top-k, so it is summed over the returned top-k (see teachers.scoring).
    boundary_mass: str = "full"


class Teacher(ABC):
    """A teacher: its tokenizer as exact bytes, tokenization with byte offsets, and scoring.

    ``score`` returns one :class:`~avokit.records.TeacherRecords` per document (position
    convention in :mod:`avokit.records`); implementations never hold more than one chunk of
    full-vocabulary logits at a time.
    """

    @property
    @abstractmethod
    def info(self) -> TeacherInfo:
        """Name, backend, sizes, licence and fingerprints."""

    @property
    @abstractmethod
    def token_bytes(self) -> TokenBytes:
        """The tokenizer's id -> bytes table."""

    @abstractmethod
    def tokenize(self, texts: list[str]) -> list[TokenizedDoc]:
        """Token ids with UTF-8 byte end offsets, no special tokens, for each text."""

    @abstractmethod
    def score(self, texts: list[str], doc_ids: list[str], top_k: int) -> list[TeacherRecords]:
        """Per-position records for each document (gold log-prob, top-k, boundary mass)."""

    def close(self) -> None:
        """Release model memory or connections (default: nothing to do)."""


class TokenizerTeacher(Teacher):
    """A teacher that tokenizes locally with a ``transformers`` tokenizer: subclasses set
    ``tokenizer``, ``_tb`` (its byte table) and ``_info`` and implement ``score``."""

    tokenizer: Any
    _tb: TokenBytes
    _info: TeacherInfo

    @property
    def info(self) -> TeacherInfo:
        """Name, backend, sizes, licence and fingerprints."""
        return self._info

    @property
    def token_bytes(self) -> TokenBytes:
        """The tokenizer's id -> bytes table."""
        return self._tb

    def tokenize(self, texts: list[str]) -> list[TokenizedDoc]:
        """Token ids with UTF-8 byte end offsets, no special tokens."""
        return tokenize_batch_with_offsets(self.tokenizer, texts, self._tb)
