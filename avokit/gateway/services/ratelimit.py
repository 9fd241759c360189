"""Per-key requests/min and tokens/min limits: a sliding 60 s window per process.

Each replica/worker enforces the key's limits on its own traffic; credit (money) is the
cross-replica guarantee and lives in the database.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from avokit.gateway.errors import RateLimitError

WINDOW_S = 60.0


@dataclass
class _Window:
    events: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens)
    tokens: int = 0


class RateLimiter:
    """Thread-safe sliding-window limiter; ``check`` admits a request or raises 429."""

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
                raise RateLimitError(
                    f"Rate limit reached for {what} per minute on this key; retry in {retry} s.",
                    headers={
                        "Retry-After": str(retry),
                        **_headers(rpm, tpm, max(requests_left, 0), max(tokens_left, 0), retry),
                    },
                )
            win.events.append((now, tokens))
            win.tokens += tokens
            return _headers(rpm, tpm, requests_left - 1, tokens_left - tokens, WINDOW_S)


def _headers(rpm: int, tpm: int, req_left: int, tok_left: int, reset: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(rpm),
        "x-ratelimit-limit-tokens": str(tpm),
        "x-ratelimit-remaining-requests": str(req_left),
        "x-ratelimit-remaining-tokens": str(tok_left),
        "x-ratelimit-reset-requests": f"{int(reset)}s",
        "x-ratelimit-reset-tokens": f"{int(reset)}s",
    }
