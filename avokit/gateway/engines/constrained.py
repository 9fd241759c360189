"""Grammar-constrained sampling inside the batched decode (llguidance token bitmasks).

Each constrained sequence owns a matcher, deep-copied from the compiled grammar the gateway
cached. Before a batch's rows are sampled, :func:`mask_rows` writes every constrained row's
allowed-token bitmask and sets the other tokens' logits to -inf in that row only; rows without
a grammar are not touched. After sampling, the row's matcher consumes the token
(:func:`advance`); the sequence ends when the grammar is complete.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def start(constraint: Any) -> Any:
    """A fresh matcher for one sequence (the cached one is never advanced)."""
    return constraint.matcher.deep_copy()


def mask_rows(logits: torch.Tensor, rows: list[tuple[int, Any, int]]) -> list[int]:
    """Mask ``logits`` [B, V] in place for each ``(row, matcher, n_vocab)``; returns the rows
    whose matcher failed (in an error state): the caller fails those sequences alone."""
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

    failed = []
    vocab = logits.shape[-1]
    for i, matcher, n_vocab in rows:
        bitmask = allocate_token_bitmask(1, n_vocab)
        try:
            fill_next_token_bitmask(matcher, bitmask)
        except Exception:  # misuse or a broken matcher: this row only
            failed.append(i)
            continue
        if matcher.is_error():
            failed.append(i)
            continue
        # bit j of 32-bit word w is token 32 w + j; little-endian words unpack in that order
        bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[0]
        allowed = torch.zeros(vocab, dtype=torch.bool)
        width = min(vocab, bits.shape[0])
        allowed[:width] = torch.from_numpy(bits[:width].astype(np.bool_))
        logits[i].masked_fill_(~allowed.to(logits.device), float("-inf"))
    return failed


def advance(matcher: Any, token: int) -> bool:
    """Feed the sampled token to the row's matcher; False if the grammar refuses it."""
    return bool(matcher.consume_token(token))


def complete(matcher: Any) -> bool:
    """Whether the grammar can take nothing more: the sequence is done."""
    return bool(matcher.is_stopped())
