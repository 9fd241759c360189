"""Usage reports over the ledger's charges: the CSV of ``avokit usage --csv`` (the console's
download is the same function), daily totals for the console's charts, and each key's last
billed request and each reservation's charge."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import TextIO

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from avokit.gateway.db.models import LedgerEntry
from avokit.gateway.db.session import read_connection
from avokit.gateway.services.audit import as_utc
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
class DayTotal:
    """One day's (and one key's, or all keys') billed usage."""

    day: date
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def daily_totals(rows: Iterable[UsageRow], by: str = "key") -> dict[str, list[DayTotal]]:
    """``{"all", and each key id (by="key") or "account N" (by="account"): [DayTotal per day
    with charges, oldest first]}``."""
    series: dict[str, dict[date, DayTotal]] = defaultdict(dict)
    for r in rows:
        day = (as_utc(r.created_at) or r.created_at).date()
        names = ["all", (r.key_id or "-") if by == "key" else f"account {r.account_id}"]
        for name in names:
            total = series[name].setdefault(day, DayTotal(day))
            total.requests += 1
            total.prompt_tokens += r.prompt_tokens
            total.completion_tokens += r.completion_tokens
            total.cost_micros += r.cost_micros
    return {name: [days[d] for d in sorted(days)] for name, days in series.items()}


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
