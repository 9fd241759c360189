"""Audit log of admin changes (key creation, revocation, rotation, top-ups)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from avokit.gateway.db.models import AuditEntry
from avokit.gateway.requestid import current as current_request_id


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def record(session: Session, actor: str, action: str, key_id: str | None, **detail: Any) -> None:
    """Append one audit row in the caller's transaction (it commits with the change itself);
    a change made through an HTTP request (the console) names that request's id."""
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=actor,
            action=action,
            key_id=key_id,
            detail=json.dumps(detail, sort_keys=True, default=str),
            request_id=current_request_id(),
        )
    )


def audit_entries(session: Session, key_id: str | None = None) -> list[AuditEntry]:
    """Audit rows, oldest first, optionally for one key."""
    query = select(AuditEntry).order_by(AuditEntry.id)
    if key_id is not None:
        query = query.where(AuditEntry.key_id == key_id)
    return list(session.scalars(query))


def newest_audit_entries(session: Session, limit: int) -> list[AuditEntry]:
    """The ``limit`` newest audit rows, newest first (read with a limit, not the whole log)."""
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))
