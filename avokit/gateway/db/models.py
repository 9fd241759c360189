"""SQLAlchemy tables (storage shapes, separate from the API shapes in protocol.py).

Money is integer micro-units everywhere. ``accounts.credit_micros`` is the balance;
``accounts.reserved_micros`` is the sum of open reservations' worst cases, so the spendable
amount is ``credit - reserved`` and a reservation is one conditional UPDATE on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base; Alembic's env.py targets its metadata."""


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    credit_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # alerts (services/alerts.py): the webhook they are posted to (None: no alerts), the
    # version its signing secret is derived from, and the thresholds
    alert_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    alert_secret_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    alert_low_credit_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # percents of a capped key's period cap; None: the default (80 and 100)
    alert_cap_percents: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public id, e.g. key_1a2b...
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))  # customer | eval | admin
    allowed_models: Mapped[list[str]] = mapped_column(JSON)  # ["*"] = every served model
    # {model or "*": {"input": micros per 1M tokens, "output": micros per 1M tokens}}
    prices: Mapped[dict[str, Any]] = mapped_column(JSON)
    rpm: Mapped[int] = mapped_column(Integer)
    tpm: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rotated_to: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # the key's first characters, to tell keys apart in lists (4 of its 43 random characters;
    # None for keys made before the console)
    prefix: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # spend cap per UTC calendar period ("day" | "month"); None: no cap (credit still applies)
    spend_cap_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    spend_cap_period: Mapped[str | None] = mapped_column(String(8), nullable=True)


class KeySpend(Base):
    """A capped key's spend in one cap period: settled charges plus open reservations' worst
    cases, so a reservation against the cap is one conditional UPDATE, as for credit."""

    __tablename__ = "key_spend"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    spent_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)


class Reservation(Base):
    """One request's hold on credit; created before the engine is called, settled once."""

    __tablename__ = "reservations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), index=True)  # open | settled
    reserved_micros: Mapped[int] = mapped_column(BigInteger)
    price_in: Mapped[int] = mapped_column(BigInteger)
    price_out: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    delivered_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # the serving process (Instance.id) that holds it; None for rows from before leases
    owner: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)
    # the client's x-request-id (or the one the gateway made), copied to the ledger row
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # the start of the key's cap period it counts against; None when the key has no cap
    cap_period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                              nullable=True)


class Instance(Base):
    """One running serving process: its lease on its reservations, renewed by heartbeats."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    host: Mapped[str] = mapped_column(String(300))  # hostname + boot id
    pid: Mapped[int] = mapped_column(Integer)
    proc_start: Mapped[str] = mapped_column(String(40))  # tells a reused pid apart
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LedgerEntry(Base):
    """Append-only: top-ups (positive) and charges (negative); never updated or deleted."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    # unique: a reservation is charged at most once, whichever process settles it
    reservation_id: Mapped[str | None] = mapped_column(String(40), unique=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(12))  # topup | charge
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    request_id: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)


class AlertOutbox(Base):
    """An alert to post to its account's webhook, written in the transaction of the spend that
    crossed its threshold; its id is the idempotency key the receiver sees on every attempt."""

    __tablename__ = "alert_outbox"
    __table_args__ = (Index("ix_alert_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # evt_...
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    kind: Mapped[str] = mapped_column(String(40))  # credit.low | spend_cap.threshold
    # at most one row per (key, period, threshold): a cap alert fires once per period
    dedupe: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body, the same on every attempt
    status: Mapped[str] = mapped_column(String(12))  # pending | delivered | failed | dropped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # the delivery worker that claimed it, until when (another may take it after that)
    lease_owner: Mapped[str | None] = mapped_column(String(40), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)


class AuditEntry(Base):
    """Every admin change: who, what, on which key, with which details (never a secret)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)


class AdminUser(Base):
    """A web-console administrator (``avokit admin create``); never created by default."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))  # scrypt$n$r$p$salt$digest
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ConsoleSession(Base):
    """A signed-in web-console session: a customer's (one API key) or an admin's.

    Only the sha256 of the session token is stored, so a database dump signs nobody in.
    """

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token, hex
    kind: Mapped[str] = mapped_column(String(8))  # customer | admin
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    admin_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
