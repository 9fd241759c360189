"""Typed records passed between parts: teachers produce them, the cache stores them,
alignment and losses consume them. Arrays are numpy on the way to and from disk.

Position convention (used everywhere): record ``i`` of a document describes the teacher's
distribution over the token that *starts* at byte ``starts[i]`` (= ``byte_ends[i-1]``, or 0)
given all bytes before it, and token ``i`` itself (``token_ids[i]``) ends at ``byte_ends[i]``.
Teachers always condition on a start token (BOS, or EOS where the tokenizer has no BOS), so
every byte of a document is predicted; that start token is not a position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenizedDoc:
    """A document's tokens with exact UTF-8 byte end offsets (no special tokens)."""

    ids: np.ndarray  # int64 [n]
    byte_ends: np.ndarray  # int64 [n], strictly increasing, last == n_bytes
    n_bytes: int

    @property
    def starts(self) -> np.ndarray:
        """Byte offset where each token starts: int64 [n]."""
        return np.concatenate([[0], self.byte_ends[:-1]]).astype(np.int64)


@dataclass(frozen=True)
class PrefixCuts:
    """What the teacher's full distribution says *inside* its own gold tokens.

    A student whose token starts inside teacher token ``i`` (after ``j`` of its ``L`` bytes,
    the prefix ``u``) needs ``p(next token | it extends u)``. The top-k of position ``i`` holds
    that only when the extending tokens happen to be among the most likely ones: measured on
    Chinese text (Gemma 3, top-32), 30% of the mass was outside it (bench/results/transfer_signal.md).
    So capture can store, for every proper prefix of every gold token, the log of the total
    probability of the tokens that strictly extend it (over the full vocabulary, exact) and the
    ``m`` most likely of them.

    Shapes: ``n`` positions, ``c`` cuts in all (``sum(max(L_i - 1, 0))``), ``m`` width.
    - offsets: int64 [n + 1]; the cuts of position ``i`` are rows ``offsets[i] + j - 1`` for
      ``j = 1 .. L_i - 1`` (a special or one-byte gold token has none)
    - logmass: float32 [c], log P(next token's bytes strictly extend the prefix)
    - ids: int32 [c, m], the most likely extending ids, -1 where fewer than ``m`` exist
    - logprobs: float32 [c, m], their log-probs (unconditional, T=1), descending, -inf padding
    """

    offsets: np.ndarray
    logmass: np.ndarray
    ids: np.ndarray
    logprobs: np.ndarray

    @property
    def width(self) -> int:
        """``m``."""
        return int(self.ids.shape[1])

    def row(self, position: int, prefix_len: int) -> int:
        """The cut row of ``position`` after ``prefix_len`` bytes, or -1 where none is stored."""
        lo, hi = int(self.offsets[position]), int(self.offsets[position + 1])
        r = lo + prefix_len - 1
        return r if prefix_len >= 1 and r < hi else -1


@dataclass(frozen=True)
class TeacherRecords:
    """What one teacher says about one document, one row per document token.

    Shapes: ``n`` positions, ``k`` top-k width.
    - token_ids: int32 [n]; byte_ends: int64 [n]
    - gold_logprob: float32 [n], log p(token_ids[i] | bytes before starts[i]); always exact
    - topk_ids: int32 [n, k]; topk_logprobs: float32 [n, k], sorted descending, raw T=1
    - boundary_logmass: float32 [n], log of the total probability of next tokens that start a
      new word (first byte space, newline or tab, or a special token), over the full vocabulary
    - cuts: the mass inside each gold token (:class:`PrefixCuts`), where capture stored it
    """

    doc_id: str
    token_ids: np.ndarray
    byte_ends: np.ndarray
    gold_logprob: np.ndarray
    topk_ids: np.ndarray
    topk_logprobs: np.ndarray
    boundary_logmass: np.ndarray
    cuts: PrefixCuts | None = None

    @property
    def n_positions(self) -> int:
        """Number of token positions."""
        return int(self.token_ids.shape[0])

    @property
    def k(self) -> int:
        """Top-k width."""
        return int(self.topk_ids.shape[1])

    def nll_nats(self) -> float:
        """Total negative log-likelihood of the document in nats."""
        return float(-np.sum(self.gold_logprob, dtype=np.float64))
