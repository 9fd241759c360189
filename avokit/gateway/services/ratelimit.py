"""Per-key requests/min and tokens/min limits over a 60 s window.

Two implementations of one interface (``limiter.check(...)`` -> headers, or 429). ``check``
blocks (the Redis one waits for a round trip), so the request pipeline calls it in the worker
thread that also reserves the request's credit: one thread hop for both.

* :class:`RateLimiter` (the default): an exact sliding window in this process. Each replica
  or worker then grants a key its limits on its own traffic.
* :class:`avokit.gateway.services.shared_limits.RedisRateLimiter` (``--redis URL``): one
  atomic Lua script in Redis, so every replica on that Redis shares each key's limits.

Credit (money) is always the cross-replica guarantee and lives in the database.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from avokit.gateway.errors import RateLimitError

WINDOW_S = 60.0


@dataclass
class _Window:
    events: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens)
    tokens: int = 0


class Limiter(Protocol):
    """What the request pipeline needs from a rate limiter (both methods may block)."""

    def check(self, key_id: str, rpm: int, tpm: int, tokens: int) -> dict[str, str]:
        """Count one request of ``tokens`` worst-case tokens; x-ratelimit-* headers or 429."""

    def close(self) -> None:
        """Release connections."""


class RateLimiter:
    """Thread-safe sliding-window limiter of one process; ``check`` admits or raises 429."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def check(self, key_id: str, rpm: int, tpm: int, tokens: int) -> dict[str, str]:
        """Admit one request of ``tokens`` worst-case tokens; returns x-ratelimit-* headers."""
        now = self._clock()
        with self._lock:
            win = self._windows.setdefault(key_id, _Window())
            while win.events and win.events[0][0] <= now - WINDOW_S:
                _, old = win.events.popleft()
                win.tokens -= old
            requests_left = rpm - len(win.events)
            tokens_left = tpm - win.tokens
            if requests_left <= 0 or tokens_left < tokens:
                oldest = win.events[0][0] if win.events else now
                retry = max(1, math.ceil(oldest + WINDOW_S - now))
                what = "requests" if requests_left <= 0 else "tokens"
                raise refuse(what, rpm, tpm, requests_left, tokens_left, retry)
            win.events.append((now, tokens))
            win.tokens += tokens
            return headers(rpm, tpm, requests_left - 1, tokens_left - tokens, WINDOW_S)

    def close(self) -> None:
        """Nothing to release."""


def refuse(what: str, rpm: int, tpm: int, requests_left: int, tokens_left: int,
           retry: int) -> RateLimitError:
    """The 429 for ``what`` ("requests" or "tokens"), with Retry-After and x-ratelimit-*."""
    err = RateLimitError(
        f"Rate limit reached for {what} per minute on this key; retry in {retry} s.",
        headers={"Retry-After": str(retry),
                 **headers(rpm, tpm, max(requests_left, 0), max(tokens_left, 0), retry)})
    err.limit = what
    return err


def headers(rpm: int, tpm: int, req_left: int, tok_left: int, reset: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(rpm),
        "x-ratelimit-limit-tokens": str(tpm),
        "x-ratelimit-remaining-requests": str(req_left),
        "x-ratelimit-remaining-tokens": str(tok_left),
        "x-ratelimit-reset-requests": f"{int(reset)}s",
        "x-ratelimit-reset-tokens": f"{int(reset)}s",
    }
