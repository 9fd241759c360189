"""Every write to an account's credit: top up, reserve the worst case before dispatch,
settle real usage after (exactly once), release a failed request's hold.

* ``reserve``: one conditional ``UPDATE accounts SET reserved = reserved + cost WHERE
  credit - reserved >= cost`` plus the reservation row, in one transaction. The database
  serialises concurrent UPDATEs on the row (SQLite write lock, PostgreSQL row lock), so no
  interleaving of workers or replicas can overspend.
* ``mark_delivered``: the stream persists its delivered token count as it goes.
* ``settle_hold`` (a live request, which holds a copy of its reservation) and ``settle``
  (by id, for recovery): flip the reservation ``open -> settled`` with a conditional UPDATE
  (only one settler can win), charge the real cost and append one ledger row whose
  ``reservation_id`` is unique, all in one transaction.
* ``release``: a request the engine failed is not billed; its hold is freed, no ledger row.
* spend caps: a capped key's worst case is also held against its period's cap in the same
  transaction, and settled or released with it (:mod:`avokit.gateway.services.spendcaps`).
* alerts: a charge that takes the balance below the account's low-credit threshold, or a
  capped key's spend past a percent of its cap, writes its alert to the outbox in the same
  transaction (:mod:`avokit.gateway.services.alerts`).
* ``reconcile``: on start-up (and periodically) settles reservations left open by a dead
  process (its lease, :mod:`avokit.gateway.services.leases`), billing what was delivered.

The request path runs Core statements built once at import, compiled once per database and
executed on the DBAPI cursor (:mod:`avokit.gateway.db.fast`): one transaction to reserve, one
to settle, no ORM unit of work.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Engine, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from avokit.gateway.db.fast import Cursor, FastStatement, fast_write
from avokit.gateway.db.models import Account, ApiKey, LedgerEntry, Reservation
from avokit.gateway.db.session import read_connection
from avokit.gateway.errors import ConfigError, InsufficientCreditError
from avokit.gateway.services import alerts, spendcaps
from avokit.gateway.services.audit import record, utcnow
from avokit.gateway.services.spendcaps import SpendCap

# a declarative class's __table__ is typed FromClause; it is a Table (insert/update/delete need one)
_ACC, _RES, _LEDGER = (cast(Table, m.__table__) for m in (Account, Reservation, LedgerEntry))

# Built once and compiled once per database: these run on every request.
_HOLD = FastStatement(
    update(_ACC)
    .where(_ACC.c.id == bindparam("acc"),
           _ACC.c.credit_micros - _ACC.c.reserved_micros >= bindparam("worst"))
    .values(reserved_micros=_ACC.c.reserved_micros + bindparam("worst")))
_NEW_RESERVATION = FastStatement(insert(_RES).values(
    id=bindparam("rid"), account_id=bindparam("acc"), key_id=bindparam("key"),
    model=bindparam("model_name"), status="open", reserved_micros=bindparam("worst"),
    price_in=bindparam("p_in"), price_out=bindparam("p_out"), prompt_tokens=bindparam("prompt"),
    delivered_tokens=0, created_at=bindparam("now"), updated_at=bindparam("now"),
    owner=bindparam("owner"), request_id=bindparam("request_id"),
    cap_period_start=bindparam("cap_start")))
_DELIVERED = FastStatement(
    update(_RES)
    .where(_RES.c.id == bindparam("rid"), _RES.c.status == "open")
    .values(delivered_tokens=bindparam("delivered"), updated_at=bindparam("now")))
_CLAIM = FastStatement(
    update(_RES)
    .where(_RES.c.id == bindparam("rid"), _RES.c.status == "open")
    .values(status="settled", delivered_tokens=bindparam("delivered"),
            updated_at=bindparam("now")))
# the new balance and the account's alert settings come back with the charge itself: the
# alert checks (services/alerts.py) cost no extra statement
_CHARGE = FastStatement(
    update(_ACC)
    .where(_ACC.c.id == bindparam("acc"))
    .values(credit_micros=_ACC.c.credit_micros - bindparam("charge"),
            reserved_micros=_ACC.c.reserved_micros - bindparam("held"))
    .returning(_ACC.c.credit_micros, _ACC.c.alert_url, _ACC.c.alert_low_credit_micros,
               _ACC.c.alert_cap_percents))
_NEW_LEDGER = FastStatement(insert(_LEDGER).values(
    account_id=bindparam("acc"), key_id=bindparam("key"), reservation_id=bindparam("rid"),
    kind="charge", amount_micros=bindparam("amount"), model=bindparam("model_name"),
    prompt_tokens=bindparam("prompt"), completion_tokens=bindparam("completion"),
    created_at=bindparam("now"), request_id=bindparam("request_id")))
_RELEASE = FastStatement(
    update(_RES)
    .where(_RES.c.id == bindparam("rid"), _RES.c.status == "open")
    .values(status="released", updated_at=bindparam("now")))
_UNHOLD = FastStatement(
    update(_ACC)
    .where(_ACC.c.id == bindparam("acc"))
    .values(reserved_micros=_ACC.c.reserved_micros - bindparam("held")))
_OPEN_RESERVATION = FastStatement(
    select(_RES.c.id, _RES.c.account_id, _RES.c.key_id, _RES.c.model, _RES.c.reserved_micros,
           _RES.c.price_in, _RES.c.price_out, _RES.c.prompt_tokens, _RES.c.delivered_tokens,
           _RES.c.request_id, _RES.c.cap_period_start)
    .where(_RES.c.id == bindparam("rid"), _RES.c.status == "open")
    .with_for_update())


def topup(session: Session, key_id: str, amount_micros: int, actor: str = "cli") -> int:
    """Add prepaid credit to the key's account (ledger row and audit entry in the caller's
    transaction); returns the new balance."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise ConfigError(f"no key with id {key_id!r}")
    return topup_account(session, key.account_id, amount_micros, actor, key_id=key_id)


def topup_account(session: Session, account_id: int, amount_micros: int, actor: str = "cli",
                  key_id: str | None = None) -> int:
    """Add prepaid credit to an account (the console's admin top-up has no key in mind);
    returns the new balance."""
    if amount_micros <= 0:
        raise ConfigError("amount must be a positive number of micro-units")
    account = session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise ConfigError(f"account: no account with id {account_id}")
    account.credit_micros += amount_micros
    session.add(LedgerEntry(account_id=account.id, key_id=key_id, kind="topup",
                            amount_micros=amount_micros, created_at=utcnow()))
    record(session, actor, "topup", key_id, amount_micros=amount_micros, account_id=account_id)
    session.flush()
    return account.credit_micros


def cost_micros(prompt_tokens: int, completion_tokens: int, price_in: int, price_out: int) -> int:
    """Integer cost, rounded up: prices are micro-units per 1M tokens."""
    total = prompt_tokens * price_in + completion_tokens * price_out
    return -(-total // 1_000_000)


@dataclass(frozen=True)
class Hold:
    """A reservation made for one request (a copy of its committed row)."""

    id: str
    account_id: int
    key_id: str
    model: str
    reserved_micros: int
    price_in: int
    price_out: int
    prompt_tokens: int
    request_id: str | None = None
    cap_period_start: datetime | None = None  # set when held against the key's spend cap


def reserve(
    db: Engine,
    *,
    account_id: int,
    key_id: str,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
    price_in: int,
    price_out: int,
    owner: str | None = None,
    request_id: str | None = None,
    cap: SpendCap | None = None,
) -> Hold:
    """Hold the worst-case cost against the account's credit (and the key's spend cap, if it
    has one) or raise 402; the reservation row is committed on return."""
    worst = cost_micros(prompt_tokens, max_tokens, price_in, price_out)
    rid = "res_" + secrets.token_hex(12)
    now = utcnow()
    with fast_write(db) as cur:
        if cur.execute(_HOLD, {"acc": account_id, "worst": worst}) != 1:
            raise InsufficientCreditError(
                f"Insufficient credit: this request may cost up to {worst} micro-units "
                "(prompt tokens + max_tokens at this model's price); lower max_tokens or top up."
            )
        # the cap after the credit: the rows are locked in the order settling takes them
        cap_start = spendcaps.hold(cur, key_id, cap, worst) if cap is not None else None
        cur.execute(_NEW_RESERVATION, {
            "rid": rid, "acc": account_id, "key": key_id, "model_name": model,
            "worst": worst, "p_in": price_in, "p_out": price_out, "prompt": prompt_tokens,
            "now": now, "owner": owner, "request_id": request_id, "cap_start": cap_start})
    return Hold(rid, account_id, key_id, model, worst, price_in, price_out, prompt_tokens,
                request_id, cap_start)


def mark_delivered(db: Engine, hold_id: str, delivered_tokens: int) -> None:
    """Persist how many completion tokens the client has been sent so far."""
    with fast_write(db) as cur:
        cur.execute(_DELIVERED, {"rid": hold_id, "delivered": delivered_tokens, "now": utcnow()})


def _settle_in(cur: Cursor, hold: Hold, completion: int, prompt: int) -> int | None:
    now = utcnow()
    # the conditional open -> settled flip: of all processes trying, exactly one wins
    if cur.execute(_CLAIM, {"rid": hold.id, "delivered": completion, "now": now}) != 1:
        return None
    # never charge more than was reserved: the reservation was the customer's promise
    charge = min(cost_micros(prompt, completion, hold.price_in, hold.price_out),
                 hold.reserved_micros)
    account = cur.first(_CHARGE, {"acc": hold.account_id, "charge": charge,
                                  "held": hold.reserved_micros})
    assert account is not None, "a reservation's account is never deleted"
    cap_spent = None
    if hold.cap_period_start is not None:
        cap_spent = spendcaps.settle(cur, hold.key_id, hold.cap_period_start, charge,
                                     hold.reserved_micros)
    cur.execute(_NEW_LEDGER, {
        "acc": hold.account_id, "key": hold.key_id, "rid": hold.id, "amount": -charge,
        "model_name": hold.model, "prompt": prompt, "completion": completion, "now": now,
        "request_id": hold.request_id})
    # in this transaction: the alert commits with the charge that crossed its threshold
    alerts.after_charge(cur, alerts.Charged(hold.account_id, hold.key_id, charge,
                                            hold.request_id, hold.cap_period_start, cap_spent),
                        alerts.account_alerts(account))
    return charge


def settle_hold(db: Engine, hold: Hold, completion_tokens: int) -> int | None:
    """Charge a live request's real usage once; None when another process already settled it.

    The hold is the committed reservation row, so nothing has to be read back first.
    """
    with fast_write(db) as cur:
        return _settle_in(cur, hold, completion_tokens, hold.prompt_tokens)


def release(db: Engine, hold: Hold) -> bool:
    """Free a failed request's reservation without charging anything (not even the prompt).

    The same conditional ``open -> released`` flip as settling: if a reconciler already
    settled it, nothing changes and False is returned.
    """
    with fast_write(db) as cur:
        if cur.execute(_RELEASE, {"rid": hold.id, "now": utcnow()}) != 1:
            return False
        cur.execute(_UNHOLD, {"acc": hold.account_id, "held": hold.reserved_micros})
        if hold.cap_period_start is not None:
            spendcaps.settle(cur, hold.key_id, hold.cap_period_start, 0, hold.reserved_micros)
        return True


def settle(db: Engine, hold_id: str, completion_tokens: int | None = None,
           prompt_tokens: int | None = None) -> int | None:
    """Charge real usage once; returns the charge, or None when already settled elsewhere.

    ``completion_tokens=None`` bills the persisted delivered count (crash recovery).
    """
    with fast_write(db) as cur:
        row = cur.first(_OPEN_RESERVATION, {"rid": hold_id})
        if row is None:
            return None
        (rid, account_id, key_id, model, reserved, price_in, price_out, prompt0, delivered,
         request_id, cap_start) = row
        hold = Hold(rid, account_id, key_id, model, reserved, price_in, price_out, prompt0,
                    request_id, cap_start)
        completion = delivered if completion_tokens is None else completion_tokens
        prompt = prompt0 if prompt_tokens is None else prompt_tokens
        return _settle_in(cur, hold, completion, prompt)


def reconcile(db: Engine, stale_after_s: float, owners: list[str] | None = None) -> int:
    """Settle open reservations of the given dead ``owners`` (see :mod:`.leases`), and
    ownerless ones untouched for ``stale_after_s``; returns how many were settled."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    query = select(_RES.c.id).where(_RES.c.status == "open", _RES.c.owner.is_(None),
                                    _RES.c.updated_at <= cutoff)
    with read_connection(db) as conn:
        ids = list(conn.scalars(query))
        if owners:
            ids += list(conn.scalars(select(_RES.c.id).where(_RES.c.status == "open",
                                                             _RES.c.owner.in_(owners))))
    return sum(1 for hold_id in ids if settle(db, hold_id) is not None)


@dataclass(frozen=True)
class UsageRow:
    """One charge in the usage report."""

    created_at: datetime
    key_id: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    account_id: int | None = None


def usage(session: Session, key_id: str | None = None, since: datetime | None = None,
          account_id: int | None = None, until: datetime | None = None) -> list[UsageRow]:
    """Charges from the ledger, oldest first, filtered by key, account and time window
    (``since`` included, ``until`` excluded): what every usage view, CSV and API reads."""
    query = select(LedgerEntry).where(LedgerEntry.kind == "charge").order_by(LedgerEntry.id)
    if key_id is not None:
        query = query.where(LedgerEntry.key_id == key_id)
    if account_id is not None:
        query = query.where(LedgerEntry.account_id == account_id)
    if since is not None:
        query = query.where(LedgerEntry.created_at >= since)
    if until is not None:
        query = query.where(LedgerEntry.created_at < until)
    return [UsageRow(e.created_at, e.key_id, e.model, e.prompt_tokens, e.completion_tokens,
                     -e.amount_micros, e.account_id) for e in session.scalars(query)]


def ledger_sum(session: Session, account_id: int) -> int:
    """Sum of every ledger row of an account (top-ups minus charges)."""
    return int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0))
                              .where(LedgerEntry.account_id == account_id)) or 0)
