"""Domain errors. Every user-facing failure is one of these, and its message names the
field, file or package at fault so the CLI can print it without a traceback."""

from __future__ import annotations


class AvokitError(Exception):
    """Base class: a failure the user can fix from the message alone."""


class RecipeError(AvokitError):
    """A recipe is invalid; the message names the field path (e.g. ``teachers[1].kind``)."""


class MissingPackageError(AvokitError):
    """An optional asset package is not installed; the message says which pip command fixes it."""

    def __init__(self, what: str, pip_command: str) -> None:
        super().__init__(f"{what} is not installed. Fix: {pip_command}")
        self.pip_command = pip_command


class RoundTripError(AvokitError):
    """A tokenizer's tokens do not concatenate back to the document's exact bytes."""

    def __init__(self, tokenizer: str, position: int, detail: str) -> None:
        super().__init__(
            f"tokenizer {tokenizer!r} does not reproduce the text at byte {position}: {detail}"
        )
        self.position = position


class CacheError(AvokitError):
    """A cache file is corrupt, from another version, teacher or tokenizer; names the file."""
