"""The evaluation canary: a string planted in evaluation items that must never reach training."""

from __future__ import annotations

from collections.abc import Iterable

from avokit.corpus.document import Document
from avokit.errors import AvokitError

AVOKIT_CANARY = "avokit-canary-7d3f1c9e-eval-item-do-not-train"


class CanaryError(AvokitError):
    """A corpus document contains the evaluation canary string."""


def refuse_canary(docs: Iterable[Document]) -> None:
    """Raise :class:`CanaryError` naming the source and document if any text holds the canary.

    The check is case-insensitive so a lower-cased or title-cased copy is caught too.
    """
    needle = AVOKIT_CANARY.lower()
    for doc in docs:
        if needle in doc.text.lower():
            raise CanaryError(
                f"corpus source {doc.source!r}, document {doc.doc_id!r}: contains the evaluation "
                f"canary {AVOKIT_CANARY!r}; evaluation items must not be trained on"
            )
