"""The one interface every teacher backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from avokit.align.bytes import TokenBytes
from avokit.align.offsets import tokenize_batch_with_offsets
from avokit.errors import AvokitError
from avokit.records import TeacherRecords, TokenizedDoc


@dataclass(frozen=True)
class Sampling:
    """How a teacher samples text (the recipe's ``generate`` section); temperature 0 = greedy."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0


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
    # the floating-point type the model computed in ("float32", "bfloat16", ...); "endpoint"
    # where a server decides
    dtype: str = "float32"


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
    def score(self, texts: list[str], doc_ids: list[str], top_k: int, *,
              inside_top_k: int = 0) -> list[TeacherRecords]:
        """Per-position records for each document (gold log-prob, top-k, boundary mass);
        ``inside_top_k`` > 0 also keeps :class:`~avokit.records.PrefixCuts` of that width (a
        backend without the full distribution raises :class:`~avokit.errors.AvokitError`)."""

    def close(self) -> None:  # noqa: B027 (a default no-op, not abstract: most backends hold nothing)
        """Release model memory or connections (default: nothing to do)."""

    def generate(self, prompt: str, sampling: Sampling, *, n: int, seed: int, chat: bool = False) -> list[str]:
        """``n`` continuations of ``prompt`` (the new text only), reproducible for a ``seed``;
        ``chat`` wraps the prompt in the teacher's own chat template."""
        raise AvokitError(f"teacher {self.info.name!r}: the {self.info.backend} backend cannot write text")


class TokenizerTeacher(Teacher):
    """A teacher that tokenizes locally with a ``transformers`` tokenizer: subclasses set
    ``tokenizer``, ``_tb`` (its byte table) and ``_info`` and implement ``score``."""

    tokenizer: Any
    start_token_id: int  # the id each scored text is conditioned on (resolve_start_token_id)
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

    def prompt_ids(self, prompt: str, chat: bool) -> list[int]:
        """The prompt as the model sees it: the teacher's own chat template (with the
        assistant turn opened), or its start token followed by the text's tokens."""
        if chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise AvokitError(f"teacher {self.info.name!r} has no chat template; use `chat: false` "
                                  "for its prompts (plain continuation)")
            # the template's text carries its own special tokens (BOS, turn markers)
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                      add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        start = self.start_token_id
        return [int(start)] + list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def decode_new(self, ids: list[int]) -> str:
        """Generated token ids -> text, special tokens dropped, spaces exactly as generated."""
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
