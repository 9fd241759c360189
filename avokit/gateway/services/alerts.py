"""Alerts on spend: an account's low credit and its keys' spend caps, written to an outbox.

An account that has a webhook (``alert_url``) gets an alert when

* ``credit.low``: a charge takes its balance from at or above ``alert_low_credit_micros`` to
  below it. The account row is locked by the charge, so of any number of concurrent
  settlements exactly one sees the crossing; a top-up back above the threshold arms it again.
* ``spend_cap.threshold``: a charge takes a capped key's spend in its period (day or month,
  UTC) from below ``P`` percent of its cap to at or above it, for each ``P`` in
  ``alert_cap_percents`` (default 80 and 100). The row's ``dedupe`` column is unique per
  (key, period, percent), so it fires at most once per period even if the cap changes.

Detection runs inside the settlement's own transaction (:func:`after_charge`, called by
:mod:`avokit.gateway.services.metering`) and the outbox row is written there too: the
charge and its alert commit together or not at all, so a crash loses neither. The delivery
worker (:mod:`avokit.gateway.services.webhooks`) posts the rows afterwards, at least once.

Because a cap admits a request only if its *worst case* fits, settled spend can stop short of
the cap; the 100% alert fires when settled spend reaches the cap exactly.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from avokit.gateway.db.fast import Cursor, FastStatement
from avokit.gateway.db.models import Account, AlertOutbox, ApiKey
from avokit.gateway.errors import ConfigError
from avokit.gateway.services.audit import record, utcnow

DEFAULT_CAP_PERCENTS: tuple[int, ...] = (80, 100)
MAX_CAP_PERCENTS = 10
KINDS = ("credit.low", "spend_cap.threshold")
_OUT, _KEYS = cast(Table, AlertOutbox.__table__), cast(Table, ApiKey.__table__)


@dataclass(frozen=True)
class AccountAlerts:
    """What a charge needs to know of its account's alerts (read back by the charge itself)."""

    credit_after: int
    url: str | None
    low_credit_micros: int | None
    cap_percents: tuple[int, ...]


@dataclass(frozen=True)
class Charged:
    """One settled charge, as the alert checks see it."""

    account_id: int
    key_id: str
    charge: int
    request_id: str | None
    cap_period_start: datetime | None = None
    cap_spent_after: int | None = None  # the key's period spend after it (capped keys only)


def _new_alert(dialect: Any) -> FastStatement:
    # "insert unless this (key, period, percent) already fired": a no-op on the unique dedupe
    return FastStatement(dialect.insert(_OUT).values(
        id=bindparam("eid"), account_id=bindparam("acc"), key_id=bindparam("key"),
        kind=bindparam("kind"), dedupe=bindparam("dedupe"), payload=bindparam("payload"),
        status="pending", attempts=0, next_attempt_at=bindparam("now"),
        created_at=bindparam("now"), request_id=bindparam("request_id"),
    ).on_conflict_do_nothing())


_NEW_ALERT = {"sqlite": _new_alert(sqlite), "postgresql": _new_alert(postgresql)}
_KEY_CAP = FastStatement(select(_KEYS.c.spend_cap_micros, _KEYS.c.spend_cap_period)
                         .where(_KEYS.c.id == bindparam("key")))


def account_alerts(row: tuple[Any, ...]) -> AccountAlerts:
    """``(credit, alert_url, alert_low_credit_micros, alert_cap_percents)`` as returned by the
    charge's UPDATE."""
    credit, url, low, percents = row
    return AccountAlerts(int(credit), url, None if low is None else int(low),
                         tuple(percents) if percents is not None else DEFAULT_CAP_PERCENTS)


def after_charge(cur: Cursor, charged: Charged, alerts: AccountAlerts) -> int:
    """Write the alerts this charge fires into the outbox, in the caller's transaction;
    returns how many rows were written."""
    if alerts.url is None or charged.charge <= 0:
        return 0
    now = utcnow()
    written = 0
    low = alerts.low_credit_micros
    before = alerts.credit_after + charged.charge
    if low is not None and before >= low > alerts.credit_after:
        written += _enqueue(cur, "credit.low", charged, None, now, {
            "credit_micros": alerts.credit_after, "threshold_micros": low})
    if charged.cap_period_start is not None and charged.cap_spent_after is not None:
        written += _cap_alerts(cur, charged, alerts.cap_percents, now)
    return written


def _cap_alerts(cur: Cursor, charged: Charged, percents: tuple[int, ...], now: datetime) -> int:
    found = cur.first(_KEY_CAP, {"key": charged.key_id})
    if found is None or found[0] is None:
        return 0
    cap, period = int(found[0]), str(found[1])
    after = charged.cap_spent_after
    assert after is not None and charged.cap_period_start is not None
    before = after - charged.charge
    start = charged.cap_period_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    written = 0
    for percent in percents:
        threshold = -(-cap * percent // 100)
        if before < threshold <= after:
            written += _enqueue(cur, "spend_cap.threshold", charged,
                                f"cap:{charged.key_id}:{start}:{percent}", now, {
                                    "key_id": charged.key_id, "period": period,
                                    "period_start": start, "cap_micros": cap,
                                    "spent_micros": after, "threshold_percent": percent})
    return written


def _enqueue(cur: Cursor, kind: str, charged: Charged, dedupe: str | None, now: datetime,
             data: dict[str, Any]) -> int:
    event_id = "evt_" + secrets.token_hex(12)
    payload = {"id": event_id, "type": kind, "created": int(now.timestamp()),
               "data": {"account_id": charged.account_id, **data,
                        "request_id": charged.request_id}}
    return cur.execute(_NEW_ALERT[cur.dialect_name], {
        "eid": event_id, "acc": charged.account_id, "key": charged.key_id, "kind": kind,
        "dedupe": dedupe, "payload": json.dumps(payload, separators=(",", ":"), sort_keys=True),
        "now": now, "request_id": charged.request_id})


def parse_percents(text: str) -> list[int]:
    """``"80,100"`` as ``[80, 100]``; ConfigError naming ``cap_percents`` unless each is a
    whole number from 1 to 100 (at most 10 of them)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or len(parts) > MAX_CAP_PERCENTS or not all(
            p.isdigit() and 1 <= int(p) <= 100 for p in parts):
        raise ConfigError("cap_percents: give 1 to 10 whole percents from 1 to 100, comma "
                          f"separated (e.g. 80,100), not {text[:40]!r}")
    return sorted({int(p) for p in parts})


def configure(session: Session, account_id: int, *, url: str | None,
              low_credit_micros: int | None = None, cap_percents: list[int] | None = None,
              rotate_secret: bool = False, actor: str = "cli") -> Account:
    """Set an account's alert webhook and thresholds (``url=None`` turns alerts off); audited.

    ``url`` must be HTTPS (plain HTTP only to localhost, for tests and local relays)."""
    from avokit.gateway.services.webhooks import check_url

    account = session.get(Account, account_id)
    if account is None:
        raise ConfigError(f"account: no account with id {account_id}")
    if url is not None:
        check_url(url)
    if low_credit_micros is not None and low_credit_micros < 0:
        raise ConfigError("low_credit_micros: must not be negative")
    if cap_percents is not None:
        parse_percents(",".join(str(p) for p in cap_percents))
    account.alert_url = url
    account.alert_low_credit_micros = low_credit_micros
    account.alert_cap_percents = sorted(set(cap_percents)) if cap_percents else None
    if rotate_secret:
        account.alert_secret_version = (account.alert_secret_version or 0) + 1
    record(session, actor, "alerts", None, account_id=account_id, url=url,
           low_credit_micros=low_credit_micros, cap_percents=account.alert_cap_percents,
           secret_rotated=rotate_secret)
    session.flush()
    return account
