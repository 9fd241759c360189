"""Delivering the alert outbox: signed HTTPS POSTs, retried with exponential backoff.

Each attempt posts the row's stored JSON body unchanged with the Standard Webhooks headers
(https://www.standardwebhooks.com, the scheme Svix uses):

* ``webhook-id``: the event id, the same on every attempt (also sent as ``Idempotency-Key``):
  a receiver that has seen it already acknowledges and skips it;
* ``webhook-timestamp``: the attempt's Unix time in seconds;
* ``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` under the
  account's signing secret (``whsec_`` + base64 key bytes).

A receiver recomputes the HMAC over the raw body, compares in constant time and refuses
timestamps more than a few minutes off (replays). The signing secret is never stored: it is
derived from the server secret, the account id and a version that rotation increments.

Workers claim due rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's single
writer serialises the claim), so any number of processes and replicas share the outbox and no
row is posted by two at once while its lease holds. A worker that dies mid-post leaves its
lease to expire and another posts the row again: delivery is at least once. A 2xx answer
marks a row delivered; anything else is retried after ``base * 2**(attempt-1)`` seconds
(capped, plus up to 25% jitter) until ``max_attempts``, then the row is marked failed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, Table, or_, select, update

from avokit.gateway.db.models import Account, AlertOutbox
from avokit.gateway.db.session import read_connection, write_transaction
from avokit.gateway.errors import ConfigError
from avokit.gateway.services.audit import utcnow

log = logging.getLogger("avokit.gateway.alerts")
_OUT, _ACC = cast(Table, AlertOutbox.__table__), cast(Table, Account.__table__)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SECRET_PREFIX = "whsec_"
STATUSES = ("pending", "delivered", "failed", "dropped")


def check_url(url: str) -> str:
    """``url`` if it is an HTTPS URL (or plain HTTP to localhost); ConfigError naming
    ``alert_url`` otherwise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if len(url) > 2000 or not host or parts.username or parts.password:
        raise ConfigError("alert_url: expected https://HOST/PATH (at most 2000 characters, "
                          f"no credentials in it), not {url[:80]!r}")
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOCAL_HOSTS):
        raise ConfigError("alert_url: must be https:// (plain http:// only to localhost, "
                          f"for tests and local relays), not {url[:80]!r}")
    return url


def signing_secret(server_secret: str, account_id: int, version: int) -> str:
    """The account's webhook signing secret (``whsec_...``), derived, never stored."""
    digest = hmac.new(server_secret.encode(), f"avokit alert webhook {account_id} {version}"
                      .encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest[:24]).decode()


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the worker retries: backoff ``base_s * 2**(attempt-1)`` up to ``max_backoff_s``."""

    base_s: float = 5.0
    max_backoff_s: float = 3600.0
    max_attempts: int = 15
    timeout_s: float = 10.0
    lease_s: float = 60.0
    batch: int = 50

    def backoff_s(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (with jitter)."""
        wait = min(self.max_backoff_s, self.base_s * 2.0 ** max(attempts - 1, 0))
        return float(wait * (1 + 0.25 * random.random()))


@dataclass(frozen=True)
class Due:
    """A claimed outbox row and where it goes."""

    id: str
    account_id: int
    payload: str
    attempts: int
    url: str | None
    secret_version: int


def claim(db: Engine, owner: str, policy: DeliveryPolicy) -> list[Due]:
    """Lease up to ``policy.batch`` due rows to ``owner`` (committed on return)."""
    now = utcnow()
    free = (_OUT.c.status == "pending", _OUT.c.next_attempt_at <= now,
            or_(_OUT.c.lease_until.is_(None), _OUT.c.lease_until < now))
    # most polls find nothing: look without a write transaction (on SQLite, without taking
    # the one write lock that every request's reservation needs)
    with read_connection(db) as conn:
        if conn.scalar(select(_OUT.c.id).where(*free).limit(1)) is None:
            return []
    due = (select(_OUT.c.id).where(*free).order_by(_OUT.c.next_attempt_at)
           .limit(policy.batch)
           .with_for_update(skip_locked=True))  # nothing on SQLite: BEGIN IMMEDIATE locks
    with write_transaction(db) as conn:
        ids = list(conn.scalars(due))
        if not ids:
            return []
        conn.execute(update(_OUT).where(_OUT.c.id.in_(ids)).values(
            lease_owner=owner, lease_until=now + timedelta(seconds=policy.lease_s)))
        rows = conn.execute(
            select(_OUT.c.id, _OUT.c.account_id, _OUT.c.payload, _OUT.c.attempts,
                   _ACC.c.alert_url, _ACC.c.alert_secret_version)
            .join(_ACC, _ACC.c.id == _OUT.c.account_id).where(_OUT.c.id.in_(ids))
            .order_by(_OUT.c.next_attempt_at))
        return [Due(r[0], r[1], r[2], r[3], r[4], r[5] or 0) for r in rows]


def finish(db: Engine, owner: str, due: Due, error: str | None, policy: DeliveryPolicy,
           dropped: bool = False) -> str:
    """Record one attempt's outcome (only while ``owner`` still holds the lease); returns the
    row's new status."""
    now = utcnow()
    attempts = due.attempts + (0 if dropped else 1)
    if dropped:
        values: dict[str, object] = {"status": "dropped", "last_error": error}
    elif error is None:
        values = {"status": "delivered", "delivered_at": now, "last_error": None}
    elif attempts >= policy.max_attempts:
        values = {"status": "failed", "last_error": error}
    else:
        values = {"status": "pending", "last_error": error,
                  "next_attempt_at": now + timedelta(seconds=policy.backoff_s(attempts))}
    with write_transaction(db) as conn:
        conn.execute(update(_OUT).where(_OUT.c.id == due.id, _OUT.c.lease_owner == owner)
                     .values(attempts=attempts, lease_owner=None, lease_until=None, **values))
    return str(values["status"])


class AlertDelivery:
    """Posts due outbox rows: :meth:`run_once` for one pass, :meth:`run` forever."""

    def __init__(self, db: Engine, server_secret: str, owner: str,
                 policy: DeliveryPolicy | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        self.db = db
        self.server_secret = server_secret
        self.owner = owner
        self.policy = policy or DeliveryPolicy()
        self._client = client

    async def _post(self, client: httpx.AsyncClient, due: Due) -> str:
        if due.url is None:
            return await asyncio.to_thread(finish, self.db, self.owner, due,
                                           "the account has no alert_url any more",
                                           self.policy, True)
        body = due.payload.encode()
        stamp = int(time.time())
        secret = signing_secret(self.server_secret, due.account_id, due.secret_version)
        headers = {"content-type": "application/json", "webhook-id": due.id,
                   "idempotency-key": due.id, "webhook-timestamp": str(stamp),
                   "webhook-signature": sign(secret, due.id, stamp, body),
                   "user-agent": "avokit-alerts/1"}
        error: str | None = None
        try:
            answer = await client.post(due.url, content=body, headers=headers,
                                       timeout=self.policy.timeout_s)
            if not 200 <= answer.status_code < 300:
                error = f"HTTP {answer.status_code}"
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"[:500]
        status = await asyncio.to_thread(finish, self.db, self.owner, due, error, self.policy)
        if error is not None:
            log.warning("alert %s to account %d: attempt %d failed (%s); now %s", due.id,
                        due.account_id, due.attempts + 1, error, status)
        return status

    async def run_once(self) -> dict[str, int]:
        """Claim and post every due row once; returns how many ended in each status."""
        batch = await asyncio.to_thread(claim, self.db, self.owner, self.policy)
        if not batch:
            return {}
        client = self._client or httpx.AsyncClient(follow_redirects=False)
        try:
            results = await asyncio.gather(*(self._post(client, due) for due in batch))
        finally:
            if self._client is None:
                await client.aclose()
        counts: dict[str, int] = {}
        for status in results:
            counts[status] = counts.get(status, 0) + 1
        return counts

    async def run(self, poll_s: float) -> None:
        """Deliver forever, polling every ``poll_s`` seconds; a failure is logged, not fatal."""
        while True:
            try:
                await self.run_once()
            except Exception:  # a database hiccup must not end deliveries for good
                log.exception("alert delivery pass failed")
            await asyncio.sleep(poll_s)


def outbox(db: Engine, account_id: int | None = None, status: str | None = None,
           limit: int = 100) -> list[AlertOutbox]:
    """The newest outbox rows, newest first, optionally of one account or status."""
    from avokit.gateway.db.session import session_factory

    query = select(AlertOutbox).order_by(AlertOutbox.created_at.desc()).limit(limit)
    if account_id is not None:
        query = query.where(AlertOutbox.account_id == account_id)
    if status is not None:
        query = query.where(AlertOutbox.status == status)
    with session_factory(db)() as s:
        return list(s.scalars(query))

