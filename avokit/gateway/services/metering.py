"""Reserve the worst case before dispatch, settle real usage after, exactly once.

* ``reserve``: one conditional ``UPDATE accounts SET reserved = reserved + cost WHERE
  credit - reserved >= cost`` plus the reservation row, in one transaction. The database
  serialises concurrent UPDATEs on the row (SQLite write lock, PostgreSQL row lock), so no
  interleaving of workers or replicas can overspend.
* ``mark_delivered``: the stream persists its delivered token count as it goes.
* ``settle``: flips the reservation ``open -> settled`` with a conditional UPDATE (only one
  settler can win), charges the real cost and appends one ledger row whose
  ``reservation_id`` is unique.
* ``reconcile``: on start-up (and periodically) settles reservations left open by a dead
  process, billing what was delivered.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from avokit.gateway.db.models import Account, LedgerEntry, Reservation
from avokit.gateway.errors import InsufficientCreditError
from avokit.gateway.services.audit import utcnow


def cost_micros(prompt_tokens: int, completion_tokens: int, price_in: int, price_out: int) -> int:
    """Integer cost, rounded up: prices are micro-units per 1M tokens."""
    total = prompt_tokens * price_in + completion_tokens * price_out
    return -(-total // 1_000_000)


@dataclass(frozen=True)
class Hold:
    """A reservation made for one request."""

    id: str
    account_id: int
    key_id: str
    model: str
    reserved_micros: int
    price_in: int
    price_out: int
    prompt_tokens: int


def reserve(
    sessions: sessionmaker[Session],
    *,
    account_id: int,
    key_id: str,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
    price_in: int,
    price_out: int,
) -> Hold:
    """Hold the worst-case cost or raise 402; the reservation row is committed on return."""
    worst = cost_micros(prompt_tokens, max_tokens, price_in, price_out)
    hold = Hold("res_" + secrets.token_hex(12), account_id, key_id, model, worst,
                price_in, price_out, prompt_tokens)
    now = utcnow()
    with sessions.begin() as session:
        result = session.execute(
            update(Account)
            .where(Account.id == account_id,
                   Account.credit_micros - Account.reserved_micros >= worst)
            .values(reserved_micros=Account.reserved_micros + worst)
        )
        if result.rowcount != 1:
            raise InsufficientCreditError(
                f"Insufficient credit: this request may cost up to {worst} micro-units "
                "(prompt tokens + max_tokens at this model's price); lower max_tokens or top up."
            )
        session.add(Reservation(
            id=hold.id, account_id=account_id, key_id=key_id, model=model, status="open",
            reserved_micros=worst, price_in=price_in, price_out=price_out,
            prompt_tokens=prompt_tokens, delivered_tokens=0, created_at=now, updated_at=now,
        ))
    return hold


def mark_delivered(sessions: sessionmaker[Session], hold_id: str, delivered_tokens: int) -> None:
    """Persist how many completion tokens the client has been sent so far."""
    with sessions.begin() as session:
        session.execute(
            update(Reservation)
            .where(Reservation.id == hold_id, Reservation.status == "open")
            .values(delivered_tokens=delivered_tokens, updated_at=utcnow())
        )


def settle(sessions: sessionmaker[Session], hold_id: str, completion_tokens: int | None = None,
           prompt_tokens: int | None = None) -> int | None:
    """Charge real usage once; returns the charge, or None when already settled elsewhere.

    ``completion_tokens=None`` bills the persisted delivered count (crash recovery).
    """
    with sessions.begin() as session:
        row = session.get(Reservation, hold_id)
        if row is None or row.status != "open":
            return None
        completion = row.delivered_tokens if completion_tokens is None else completion_tokens
        prompt = row.prompt_tokens if prompt_tokens is None else prompt_tokens
        claimed = session.execute(
            update(Reservation)
            .where(Reservation.id == hold_id, Reservation.status == "open")
            .values(status="settled", delivered_tokens=completion, updated_at=utcnow())
        )
        if claimed.rowcount != 1:
            return None
        # never charge more than was reserved: the reservation was the customer's promise
        charge = min(cost_micros(prompt, completion, row.price_in, row.price_out),
                     row.reserved_micros)
        session.execute(
            update(Account).where(Account.id == row.account_id).values(
                credit_micros=Account.credit_micros - charge,
                reserved_micros=Account.reserved_micros - row.reserved_micros,
            )
        )
        session.add(LedgerEntry(
            account_id=row.account_id, key_id=row.key_id, reservation_id=row.id, kind="charge",
            amount_micros=-charge, model=row.model, prompt_tokens=prompt,
            completion_tokens=completion, created_at=utcnow(),
        ))
        return charge


def reconcile(sessions: sessionmaker[Session], stale_after_s: float) -> int:
    """Settle open reservations untouched for ``stale_after_s``; returns how many."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    with sessions() as session:
        ids = list(session.scalars(
            select(Reservation.id).where(Reservation.status == "open",
                                         Reservation.updated_at <= cutoff)
        ))
    return sum(1 for hold_id in ids if settle(sessions, hold_id) is not None)


@dataclass(frozen=True)
class UsageRow:
    """One charge in the usage report."""

    created_at: datetime
    key_id: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int


def usage(session: Session, key_id: str | None = None, since: datetime | None = None) -> list[UsageRow]:
    """Charges from the ledger, oldest first, filtered by key and start time."""
    query = select(LedgerEntry).where(LedgerEntry.kind == "charge").order_by(LedgerEntry.id)
    if key_id is not None:
        query = query.where(LedgerEntry.key_id == key_id)
    if since is not None:
        query = query.where(LedgerEntry.created_at >= since)
    return [UsageRow(e.created_at, e.key_id, e.model, e.prompt_tokens, e.completion_tokens,
                     -e.amount_micros) for e in session.scalars(query)]


def ledger_sum(session: Session, account_id: int) -> int:
    """Sum of every ledger row of an account (top-ups minus charges)."""
    return int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0))
                              .where(LedgerEntry.account_id == account_id)) or 0)
