"""Per-key spend caps per UTC calendar period (day or month), held like credit.

A capped key has one ``key_spend`` row per period: ``spent`` (settled charges) and
``reserved`` (open reservations' worst cases). Admitting a request adds its worst case with
one conditional UPDATE (``WHERE spent + reserved + worst <= cap``) in the same transaction as
the account's credit hold, so the database's row lock serialises every worker and replica:
no interleaving can admit past the cap. Settling moves the hold to ``spent`` at the exact
charge; releasing drops it. A reservation remembers its period, so a request that runs
across midnight is settled against the period that admitted it.

Rows are taken in one order everywhere (account, then the key's period row) so concurrent
holds and settlements cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from avokit.gateway.db.fast import Cursor, FastStatement
from avokit.gateway.db.models import KeySpend, LedgerEntry
from avokit.gateway.errors import InsufficientCreditError
from avokit.gateway.services.audit import utcnow

PERIODS = ("day", "month")
_SPEND = cast(Table, KeySpend.__table__)  # typed FromClause


class SpendCapExceededError(InsufficientCreditError):
    """402: the key's spend cap for this period does not cover the request's worst case."""

    code = "spend_cap_exceeded"


@dataclass(frozen=True)
class SpendCap:
    """A key's cap: at most ``micros`` charged (settled plus held) per ``period``."""

    micros: int
    period: str


def period_start(now: datetime, period: str) -> datetime:
    """The UTC start of the calendar ``period`` (day or month) holding ``now``."""
    now = now.astimezone(timezone.utc)
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"spend cap period must be one of {', '.join(PERIODS)}, not {period!r}")


def period_end(start: datetime, period: str) -> datetime:
    """The start of the next period."""
    if period == "day":
        return start + timedelta(days=1)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month)


def _new_period(dialect: object) -> FastStatement:
    return FastStatement(dialect.insert(_SPEND).values(  # type: ignore[attr-defined]
        key_id=bindparam("key"), period_start=bindparam("start"), spent_micros=0,
        reserved_micros=0).on_conflict_do_nothing())


# one upsert per dialect that serves replicas or a file: "create the period row if missing"
_NEW_PERIOD = {"sqlite": _new_period(sqlite), "postgresql": _new_period(postgresql)}
_CAP_HOLD = FastStatement(
    update(_SPEND)
    .where(_SPEND.c.key_id == bindparam("key"), _SPEND.c.period_start == bindparam("start"),
           _SPEND.c.spent_micros + _SPEND.c.reserved_micros + bindparam("worst")
           <= bindparam("cap"))
    .values(reserved_micros=_SPEND.c.reserved_micros + bindparam("worst")))
_CAP_CHARGE = FastStatement(
    update(_SPEND)
    .where(_SPEND.c.key_id == bindparam("key"), _SPEND.c.period_start == bindparam("start"))
    .values(spent_micros=_SPEND.c.spent_micros + bindparam("charge"),
            reserved_micros=_SPEND.c.reserved_micros - bindparam("held"))
    .returning(_SPEND.c.spent_micros))


def hold(cur: Cursor, key_id: str, cap: SpendCap, worst: int) -> datetime:
    """Hold ``worst`` against the key's cap in the caller's transaction; returns the period
    start, or raises :class:`SpendCapExceededError` (the caller's transaction rolls back)."""
    now = utcnow()
    start = period_start(now, cap.period)
    cur.execute(_NEW_PERIOD[cur.dialect_name], {"key": key_id, "start": start})
    if cur.execute(_CAP_HOLD, {"key": key_id, "start": start, "worst": worst,
                               "cap": cap.micros}) != 1:
        resets = period_end(start, cap.period).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise SpendCapExceededError(
            f"This key's {cap.period}ly spend cap of {cap.micros} micro-units would be "
            f"exceeded: this request may cost up to {worst} micro-units. The cap resets at "
            f"{resets}; lower max_tokens or ask for a higher cap.", param="spend_cap")
    return start


def settle(cur: Cursor, key_id: str, start: datetime, charge: int, held: int) -> int | None:
    """Move a settled request's hold to spent, at its exact charge (``charge=0`` releases);
    returns the period's spend after it (None if the period row is gone)."""
    row = cur.first(_CAP_CHARGE, {"key": key_id, "start": start, "charge": charge,
                                  "held": held})
    return None if row is None else int(row[0])


def spent(session: Session, key_id: str, period: str, now: datetime | None = None
          ) -> tuple[int, int]:
    """(spent, reserved) of the key in the period holding ``now``."""
    start = period_start(now or utcnow(), period)
    row = session.execute(select(KeySpend.spent_micros, KeySpend.reserved_micros).where(
        KeySpend.key_id == key_id, KeySpend.period_start == start)).first()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def seed_period(session: Session, key_id: str, period: str) -> None:
    """When a cap is set, count what the key was already charged this period (from the
    ledger), so a monthly cap set mid-month covers the whole month."""
    start = period_start(utcnow(), period)
    if session.get(KeySpend, (key_id, start)) is not None:
        return
    charged = session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(
        LedgerEntry.key_id == key_id, LedgerEntry.kind == "charge",
        LedgerEntry.created_at >= start))
    session.add(KeySpend(key_id=key_id, period_start=start, spent_micros=-int(charged or 0),
                         reserved_micros=0))
