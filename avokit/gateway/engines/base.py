"""The engine interface and the model registry the gateway serves.

Both engines take prompt token ids (tokenised by the gateway with the model's own tokenizer,
so metering counts the same tokens the engine sees) and stream :class:`TokenEvent` s.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from avokit.contracts.base import ContractError
from avokit.contracts.release import read_release_manifest, verify_release_files
from avokit.gateway.errors import ConfigError


@dataclass(frozen=True)
class ServedModel:
    """A released model directory whose release gate passed."""

    name: str
    path: Path
    context_length: int
    created: int


def scan_registry(registry: Path) -> dict[str, ServedModel]:
    """Every ``REGISTRY/<name>/`` with a release.json whose gate passed.

    The manifest is read through :class:`avokit.contracts.ReleaseManifest` (the model the
    release stage writes), and every file it lists must match its sha256: a release whose
    weights changed after ``avokit release`` is refused with a ConfigError naming the file.
    """
    if not registry.is_dir():
        raise ConfigError(f"model registry {registry} is not a directory")
    served: dict[str, ServedModel] = {}
    for child in sorted(registry.iterdir()):
        release = child / "release.json"
        if not release.is_file():
            continue
        try:
            meta = read_release_manifest(child)
            if not meta.gate.passed:
                continue
            verify_release_files(child, meta)
        except ContractError as err:
            raise ConfigError(str(err)) from None
        served[meta.name] = ServedModel(
            name=meta.name,
            path=child,
            context_length=meta.context_length or 2048,
            created=int(os.path.getmtime(release)),
        )
    return served


@dataclass(frozen=True)
class Constraint:
    """What the output must match (``response_format``, tool calls).

    ``grammar``: the llguidance grammar; ``matcher``: it compiled for the model's tokenizer and
    never advanced (the in-process engine deep-copies it per sequence); ``upstream``: vLLM's
    ``structured_outputs`` value, or None where the upstream decodes freely.
    """

    grammar: str
    matcher: Any
    upstream: dict[str, Any] | None = None
    n_vocab: int = 0  # the tokenizer's vocabulary the matcher's masks cover


@dataclass
class GenParams:
    """One generation request, in token ids."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    top_logprobs: int | None = None  # None: no logprobs; n >= 0: chosen token + n alternatives
    seed: int | None = None
    constraint: Constraint | None = None  # None: free text


@dataclass
class TokenEvent:
    """Newly delivered text and the tokens it came from."""

    text: str
    tokens: int  # completion tokens this event accounts for
    token_strs: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Finished:
    """End of a generation."""

    finish_reason: str  # stop (eos, a stop string, or the grammar complete) | length
    completion_tokens: int


@dataclass
class PromptScores:
    """Prompt token logprobs for echo (eval keys only)."""

    tokens: list[str]
    logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    offsets: list[int]


class Engine(Protocol):
    """What the request pipeline needs from a generation backend."""

    def tokenizer(self, model: str) -> Any:
        """The model's HF tokenizer (counts prompt tokens, applies the chat template)."""

    def generate(self, model: str, params: GenParams) -> AsyncIterator[TokenEvent | Finished]:
        """Stream completion events; the last one is :class:`Finished`."""

    async def complete(self, model: str, params: GenParams) -> tuple[list[TokenEvent], Finished]:
        """The whole answer at once (non-streaming requests): its events and the end."""

    async def score_prompt(self, model: str, prompt_ids: list[int], top: int) -> PromptScores:
        """Log-probs of each prompt token given its prefix (first is None)."""

    async def aclose(self) -> None:
        """Release threads, models and connections."""


async def collect(events: AsyncIterator[TokenEvent | Finished]
                  ) -> tuple[list[TokenEvent], Finished]:
    """Gather a generation stream into ``complete``'s result."""
    out: list[TokenEvent] = []
    finished = Finished("length", 0)
    async for ev in events:
        if isinstance(ev, Finished):
            finished = ev
        else:
            out.append(ev)
    return out, finished


def load_tokenizer(path: Path) -> Any:
    """The tokenizer saved in a model directory, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the tokenizer in {path}: {err}") from err
