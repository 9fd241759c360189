"""Usage reports over the ledger's charges: the CSV of ``avokit usage --csv`` (the console's
download is the same function), daily totals for the console's charts, and each key's last
billed request and each reservation's charge."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TextIO

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from avokit.gateway.db.models import LedgerEntry
from avokit.gateway.db.session import read_connection
from avokit.gateway.errors import BadRequestError
from avokit.gateway.services.audit import as_utc, utcnow
from avokit.gateway.services.metering import UsageRow

CSV_HEADER = ["time", "key", "model", "prompt_tokens", "completion_tokens", "cost_micros"]


def usage_values(rows: Iterable[UsageRow]) -> list[list[str | int]]:
    """One report row per charge, in :data:`CSV_HEADER` order (times to the second, UTC)."""
    return [[str(r.created_at)[:19], r.key_id or "", r.model or "", r.prompt_tokens,
             r.completion_tokens, r.cost_micros] for r in rows]


def write_usage_csv(rows: Iterable[UsageRow], out: TextIO) -> None:
    """The usage CSV (header, then one line per charge) written to ``out``."""
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    writer.writerows(usage_values(rows))


def usage_csv(rows: Iterable[UsageRow]) -> str:
    """:func:`write_usage_csv` as a string (the console's download)."""
    out = io.StringIO()
    write_usage_csv(rows, out)
    return out.getvalue()


@dataclass
class Totals:
    """Billed usage summed over some charges."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, row: UsageRow) -> None:
        """Count one charge."""
        self.requests += 1
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cost_micros += row.cost_micros


@dataclass
class DayTotal(Totals):
    """One day's (and one key's, or all keys') billed usage."""

    day: date = date.min


def day_of(row: UsageRow) -> date:
    """The UTC day of a charge (SQLite hands back naive UTC times)."""
    return (as_utc(row.created_at) or row.created_at).date()


def daily_totals(rows: Iterable[UsageRow], by: str = "key") -> dict[str, list[DayTotal]]:
    """``{"all", and each key id (by="key") or "account N" (by="account"): [DayTotal per day
    with charges, oldest first]}``."""
    series: dict[str, dict[date, DayTotal]] = defaultdict(dict)
    for r in rows:
        day = day_of(r)
        names = ["all", (r.key_id or "-") if by == "key" else f"account {r.account_id}"]
        for name in names:
            series[name].setdefault(day, DayTotal(day=day)).add(r)
    return {name: [days[d] for d in sorted(days)] for name, days in series.items()}


GROUP_BY = ("day", "model", "key")


def grouped_totals(rows: list[UsageRow], group_by: str) -> list[tuple[str, Totals]]:
    """Totals per UTC day (the console's daily table, :func:`daily_totals`), per model or per
    key, each named (ISO day, model or key id), in day or name order."""
    if group_by == "day":
        return [(t.day.isoformat(), t) for t in daily_totals(rows).get("all", [])]
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}, not {group_by!r}")
    groups: dict[str, Totals] = {}
    for r in rows:
        name = (r.model if group_by == "model" else r.key_id) or "-"
        groups.setdefault(name, Totals()).add(r)
    return sorted(groups.items())


def last_used(session: Session, key_ids: list[str]) -> dict[str, str]:
    """Each key's last billed request (UTC, to the second); keys never billed are absent.

    Read from the ledger rather than written on every request: the request path stays as it
    is, and a request that was refused never counts as a use.
    """
    if not key_ids:
        return {}
    rows = session.execute(select(LedgerEntry.key_id, func.max(LedgerEntry.created_at))
                           .where(LedgerEntry.kind == "charge", LedgerEntry.key_id.in_(key_ids))
                           .group_by(LedgerEntry.key_id))
    return {key: str(at)[:19] for key, at in rows.tuples() if key is not None}


def charge_of(db: Engine, reservation_id: str) -> int | None:
    """What the ledger charged for one reservation (micro-units); None if not settled."""
    with read_connection(db) as conn:
        amount = conn.scalar(select(LedgerEntry.amount_micros)
                             .where(LedgerEntry.reservation_id == reservation_id))
    return None if amount is None else -int(amount)


WINDOW_DEFAULT_DAYS, WINDOW_MAX_DAYS = 30, 366


@dataclass(frozen=True)
class Window:
    """A usage window in UTC: ``start`` included, ``end`` excluded."""

    start: datetime
    end: datetime


def _unix_time(text: str, param: str) -> datetime:
    if not text.isdigit() or len(text) > 11:
        raise BadRequestError(f"{param}: expected a Unix time in whole seconds, not "
                              f"{text[:40]!r}", param=param)
    return datetime.fromtimestamp(int(text), timezone.utc)


def parse_window(start_time: str | None, end_time: str | None,
                 now: datetime | None = None) -> Window:
    """The window of a usage API query (Unix seconds; ``end_time`` defaults to now,
    ``start_time`` to 30 days before it); 400 naming the parameter unless
    ``start_time < end_time`` and the window is at most 366 days."""
    end = _unix_time(end_time, "end_time") if end_time else (now or utcnow())
    start = (_unix_time(start_time, "start_time") if start_time
             else end - timedelta(days=WINDOW_DEFAULT_DAYS))
    if start >= end:
        raise BadRequestError("start_time: must be before end_time", param="start_time")
    if end - start > timedelta(days=WINDOW_MAX_DAYS):
        raise BadRequestError(f"start_time: the window may span at most {WINDOW_MAX_DAYS} "
                              "days; move start_time or end_time", param="start_time")
    return Window(start, end)


def parse_group_by(group_by: str) -> str:
    """``group_by`` if it is one of :data:`GROUP_BY`; 400 naming it otherwise."""
    if group_by not in GROUP_BY:
        raise BadRequestError(f"group_by: must be one of {', '.join(GROUP_BY)}, not "
                              f"{group_by[:40]!r}", param="group_by")
    return group_by
