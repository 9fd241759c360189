"""Rate limits shared by every replica through Redis (``avokit serve --redis URL``).

One Lua script counts a key's requests and tokens in a hash of one-second buckets
(``r:<second>``, ``t:<second>``) and either admits the request (incrementing both) or refuses
it, atomically: Redis runs a script alone, so N replicas admitting the same key at once can
never over-grant. Time comes from the Redis server (``TIME``), one clock for all replicas.
The window is the last 60 whole seconds, so a request leaves it within 59-60 s.

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
local fields = redis.call('HGETALL', KEYS[1])
local reqs, toks, oldest, stale = 0, 0, now, {}
for i = 1, #fields, 2 do
  local name, value = fields[i], tonumber(fields[i + 1])
  local second = tonumber(string.sub(name, 3))
  if second <= now - window then
    stale[#stale + 1] = name
  elseif string.sub(name, 1, 1) == 'r' then
    reqs = reqs + value
    if second < oldest then oldest = second end
  else
    toks = toks + value
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
if reqs >= rpm or toks + tokens > tpm then
  return {0, rpm - reqs, tpm - toks, oldest + window - now}
end
redis.call('HINCRBY', KEYS[1], 'r:' .. now, 1)
redis.call('HINCRBY', KEYS[1], 't:' .. now, tokens)
redis.call('EXPIRE', KEYS[1], window + 1)
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

    def __init__(self, url: str, prefix: str = "avokit:rl:", timeout_s: float = 2.0) -> None:
        import redis

        self.where = _where(url)
        self.prefix = prefix
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
                keys=[self.prefix + key_id], args=[rpm, tpm, tokens, int(WINDOW_S)])
        except Exception as err:  # connection refused, timeout, Redis error: fail closed
            log.error("rate limits: Redis at %s failed (%s); request refused with 503",
                      self.where, type(err).__name__)
            raise ServiceUnavailableError(
                "Rate limits cannot be checked right now (the limit store is unreachable); "
                "retry shortly.", headers={"Retry-After": "1"}) from None
        if not ok:
            what = "requests" if int(req_left) <= 0 else "tokens"
            raise refuse(what, rpm, tpm, int(req_left), int(tok_left), max(1, int(retry)))
        return headers(rpm, tpm, int(req_left), int(tok_left), WINDOW_S)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()
