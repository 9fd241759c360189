"""Rate limits shared by every replica through Redis (``avokit serve --redis URL``).

One Lua script counts a key's requests and tokens in a hash of one-second buckets
(``r:<second>``, ``t:<second>``) and either admits the request (incrementing both) or refuses
it, atomically: Redis runs a script alone, so N replicas admitting the same key at once can
never over-grant. Time comes from the Redis server (``TIME``), one clock for all replicas.
The window is the last ``window`` whole seconds, so a request leaves it within
``window - 1`` to ``window`` seconds.

The hash also keeps the window's running totals (``R``, ``T``) and ``lo``, the oldest second
that may still hold a bucket, so a request costs a few hash reads, not a pass over every
bucket of the minute: each call drops the buckets that left the window since the last one
(subtracting them from the totals) and moves ``lo`` to the oldest bucket still counted, whose
age is the Retry-After of a refusal. The hash expires ``window + 1`` s after the last
admitted request, so an idle key leaves nothing behind.

If Redis cannot be reached, requests are refused with a 503 and the failure is logged:
limits are never silently lifted.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from avokit.gateway.errors import ServiceUnavailableError
from avokit.gateway.services.ratelimit import WINDOW_S, headers, refuse

log = logging.getLogger("avokit.gateway")

# KEYS[1] the key's bucket hash; ARGV rpm, tpm, tokens, window seconds.
# Returns {admitted, requests left, tokens left, seconds until the oldest request leaves}.
_SCRIPT = """
local now = tonumber(redis.call('TIME')[1])
local rpm, tpm, tokens, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4])
local key, cut = KEYS[1], now - window
local state = redis.call('HMGET', key, 'R', 'T', 'lo')
local reqs, toks = tonumber(state[1]) or 0, tonumber(state[2]) or 0
local lo = tonumber(state[3]) or now
-- drop the seconds at or before cut (they left the window) and stop at the oldest second
-- still counted; the hash expires window + 1 s after its last write, so lo is never more
-- than about two windows old and this loop is short
while lo <= now and (lo <= cut or redis.call('HEXISTS', key, 'r:' .. lo) == 0) do
  if lo <= cut then
    local old = redis.call('HMGET', key, 'r:' .. lo, 't:' .. lo)
    if old[1] then
      reqs = reqs - tonumber(old[1])
      toks = toks - tonumber(old[2] or 0)
      redis.call('HDEL', key, 'r:' .. lo, 't:' .. lo)
    end
  end
  lo = lo + 1
end
local oldest = now
if reqs > 0 then oldest = lo end
if reqs >= rpm or toks + tokens > tpm then
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'R', reqs, 'T', toks, 'lo', lo) end
  return {0, rpm - reqs, tpm - toks, oldest + window - now}
end
redis.call('HINCRBY', key, 'r:' .. now, 1)
redis.call('HINCRBY', key, 't:' .. now, tokens)
redis.call('HSET', key, 'R', reqs + 1, 'T', toks + tokens, 'lo', math.min(lo, now))
redis.call('EXPIRE', key, window + 1)
return {1, rpm - reqs - 1, tpm - toks - tokens, window}
"""


def _where(url: str) -> str:
    # host:port only: a Redis URL may carry a password, which must not reach the logs
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 6379}"


class RedisRateLimiter:
    """Per-key rpm/tpm limits in Redis, shared by every replica configured with the same URL.

    A blocking client: the request pipeline calls :meth:`check` in the worker thread that then
    reserves the request's credit, so the Redis round trip costs no extra hop to a thread or
    back to the event loop. Its connection pool is thread-safe.
    """

    def __init__(self, url: str, prefix: str = "avokit:rl2:", timeout_s: float = 2.0,
                 window_s: int = int(WINDOW_S)) -> None:
        import redis

        self.where = _where(url)
        # rl2: the hash holds running totals; a replica of an older version (buckets only)
        # must not read it, nor this one read that
        self.prefix = prefix
        self.window_s = window_s
        self._redis: Any = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            health_check_interval=30)
        self._script = self._redis.register_script(_SCRIPT)

    def ping(self) -> bool:
        """Whether Redis answers now (logged when it does not)."""
        try:
            return bool(self._redis.ping())
        except Exception as err:  # any failure to reach it: see check()
            log.error("rate limits: Redis at %s is unreachable (%s); requests are refused "
                      "with 503 until it answers", self.where, type(err).__name__)
            return False

    def check(self, key_id: str, rpm: int, tpm: int, tokens: int) -> dict[str, str]:
        """Count one request atomically in Redis; headers, 429 over a limit, 503 without Redis."""
        try:
            ok, req_left, tok_left, retry = self._script(
                keys=[self.prefix + key_id], args=[rpm, tpm, tokens, self.window_s])
        except Exception as err:  # connection refused, timeout, Redis error: fail closed
            log.error("rate limits: Redis at %s failed (%s); request refused with 503",
                      self.where, type(err).__name__)
            raise ServiceUnavailableError(
                "Rate limits cannot be checked right now (the limit store is unreachable); "
                "retry shortly.", headers={"Retry-After": "1"}) from None
        if not ok:
            what = "requests" if int(req_left) <= 0 else "tokens"
            raise refuse(what, rpm, tpm, int(req_left), int(tok_left), max(1, int(retry)))
        return headers(rpm, tpm, int(req_left), int(tok_left), self.window_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()
