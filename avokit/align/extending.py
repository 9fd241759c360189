"""Which tokens of a vocabulary strictly extend a byte prefix: one sorted order, two bisections.

Sorted by their bytes, the tokens that start with ``u`` form one contiguous run, and the ones
*strictly* longer than ``u`` are that run without its head (the tokens equal to ``u``, which
sort first). Capture uses this to sum the teacher's probability of every token that continues
a prefix of its gold token (:class:`avokit.records.PrefixCuts`) without scanning the vocabulary
once per prefix.
"""

from __future__ import annotations

import bisect

import numpy as np

from avokit.align.bytes import TokenBytes


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string that starts with ``prefix``; None if there
    is none (``prefix`` is all 0xff)."""
    head = prefix.rstrip(b"\xff")
    if not head:
        return None
    return head[:-1] + bytes([head[-1] + 1])


class ExtendingIndex:
    """The regular (non-special, non-empty) tokens of a vocabulary in byte order."""

    def __init__(self, tb: TokenBytes) -> None:
        """Sort every regular id of ``tb`` by its bytes (ties by id, so the order is fixed)."""
        regular = [i for i, b in enumerate(tb.table) if b and not tb.special[i]]
        regular.sort(key=lambda i: (tb.table[i], i))
        self.order = np.asarray(regular, dtype=np.int64)
        self._keys = [tb.table[i] for i in regular]
        self._table = tb.table
        self._special = tb.special
        self._memo: dict[int, list[tuple[int, int]]] = {}

    def extending(self, prefix: bytes) -> tuple[int, int]:
        """``(lo, hi)``: ``order[lo:hi]`` are exactly the ids whose bytes start with ``prefix``
        and are longer than it."""
        lo = bisect.bisect_right(self._keys, prefix)
        nxt = _successor(prefix)
        hi = len(self._keys) if nxt is None else bisect.bisect_left(self._keys, nxt, lo)
        return lo, max(lo, hi)

    def cuts(self, token_id: int) -> list[tuple[int, int]]:
        """:meth:`extending` of each proper prefix of token ``token_id`` (lengths 1 .. L-1);
        none for a special token, which spells no text; memoised per id."""
        hit = self._memo.get(token_id)
        if hit is None:
            regular = 0 <= token_id < len(self._table) and not self._special[token_id]
            data = self._table[token_id] if regular else b""
            hit = [self.extending(data[:j]) for j in range(1, len(data))]
            self._memo[token_id] = hit
        return hit
