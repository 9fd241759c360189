"""API keys: created random, shown once, stored only as HMAC-SHA256 with the server secret.

A key is ``sk-avo-`` + 32 random bytes (urlsafe base64). Lookup is by hash (an index), then
the stored and computed digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Row, bindparam, select
from sqlalchemy.orm import Session

from avokit.gateway.db.fast import FastStatement, fast_read
from avokit.gateway.db.models import Account, ApiKey
from avokit.gateway.errors import AuthenticationError, ConfigError
from avokit.gateway.services import metering, spendcaps
from avokit.gateway.services.audit import as_utc, record, utcnow
from avokit.gateway.services.spendcaps import PERIODS, SpendCap

KEY_PREFIX = "sk-avo-"
Scope = Literal["customer", "eval", "admin"]
SCOPES: tuple[str, ...] = ("customer", "eval", "admin")


@dataclass(frozen=True)
class KeyInfo:
    """What a request needs to know about its key (no secret, no hash)."""

    id: str
    account_id: int
    name: str
    scope: str
    allowed_models: tuple[str, ...]
    prices: dict[str, Any]
    rpm: int
    tpm: int
    expires_at: datetime | None
    revoked_at: datetime | None
    spend_cap_micros: int | None = None
    spend_cap_period: str | None = None

    @property
    def spend_cap(self) -> SpendCap | None:
        """The key's spend cap per period, if it has one."""
        if self.spend_cap_micros is None or self.spend_cap_period is None:
            return None
        return SpendCap(self.spend_cap_micros, self.spend_cap_period)

    def may_use(self, model: str) -> bool:
        """Whether the key lists this model (or ``*``) and has a price for it.

        Pricing fails closed: a model the key has no price for (no entry, no ``*``) is not
        served to it. A free model is one priced ``0:0`` on purpose.
        """
        listed = "*" in self.allowed_models or model in self.allowed_models
        return listed and self.price(model) is not None

    def price(self, model: str) -> tuple[int, int] | None:
        """(input, output) micro-units per 1M tokens for ``model`` (``*`` is the fallback);
        None when the key has no price for it."""
        entry = self.prices.get(model, self.prices.get("*"))
        if entry is None:
            return None
        return int(entry["input"]), int(entry["output"])


def hash_key(secret: str, key: str) -> str:
    """HMAC-SHA256 of the key under the server secret, hex."""
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def display_prefix(key: str) -> str:
    """What lists show of a key: ``sk-avo-`` and 4 of its 43 random characters."""
    return key[:len(KEY_PREFIX) + 4]


def _info(row: ApiKey | Row[Any] | SimpleNamespace) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        scope=row.scope,
        allowed_models=tuple(row.allowed_models),
        prices=dict(row.prices),
        rpm=row.rpm,
        tpm=row.tpm,
        expires_at=as_utc(row.expires_at),
        revoked_at=as_utc(row.revoked_at),
        spend_cap_micros=row.spend_cap_micros,
        spend_cap_period=row.spend_cap_period,
    )


_KEY_COLUMNS = ("id", "account_id", "key_hash", "name", "scope", "allowed_models", "prices",
                "rpm", "tpm", "expires_at", "revoked_at", "spend_cap_micros", "spend_cap_period")
_BY_HASH = select(*(ApiKey.__table__.c[name] for name in _KEY_COLUMNS)).where(
    ApiKey.__table__.c.key_hash == bindparam("digest"))
_FAST_BY_HASH = FastStatement(_BY_HASH)


def _digest(secret: str, presented: str | None) -> str:
    if not presented or not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        raise AuthenticationError()
    return hash_key(secret, presented)


def _usable(info: KeyInfo) -> bool:
    """Not revoked and not expired, now."""
    return info.revoked_at is None and (info.expires_at is None or info.expires_at > utcnow())


def _live(row: Any, digest: str) -> KeyInfo:
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        raise AuthenticationError()
    info = _info(row)
    if not _usable(info):
        raise AuthenticationError()
    return info


def authenticate(session: Connection | Session, secret: str, presented: str | None) -> KeyInfo:
    """The key's info, or the one identical 401 for missing/unknown/revoked/expired keys."""
    digest = _digest(secret, presented)
    return _live(session.execute(_BY_HASH, {"digest": digest}).first(), digest)


def authenticate_request(db: Engine, secret: str, presented: str | None) -> KeyInfo:
    """:func:`authenticate` for the request path: one indexed read on the DBAPI cursor.

    The database is read on every request, so a revocation or expiry written by any process
    or replica applies to the next request.
    """
    digest = _digest(secret, presented)
    with fast_read(db) as cur:
        raw = cur.first(_FAST_BY_HASH, {"digest": digest})
    row = None if raw is None else SimpleNamespace(**dict(zip(_KEY_COLUMNS, raw)))
    return _live(row, digest)


def _validate(scope: str, models: list[str], prices: dict[str, Any], rpm: int, tpm: int) -> None:
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if not models:
        raise ConfigError("models: give at least one model name or '*'")
    if rpm <= 0 or tpm <= 0:
        raise ConfigError("rpm and tpm must be positive")
    for model, entry in prices.items():
        if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
            raise ConfigError(f"prices[{model!r}] must be {{'input': int, 'output': int}}")
        if int(entry["input"]) < 0 or int(entry["output"]) < 0:
            raise ConfigError(f"prices[{model!r}] must not be negative")


def _validate_cap(spend_cap_micros: int | None, spend_cap_period: str | None) -> None:
    if (spend_cap_micros is None) != (spend_cap_period is None):
        raise ConfigError("spend_cap: give both the cap (micro-units) and its period "
                          f"({' or '.join(PERIODS)}), or neither")
    if spend_cap_micros is not None and spend_cap_micros < 0:
        raise ConfigError("spend_cap: must not be negative")
    if spend_cap_period is not None and spend_cap_period not in PERIODS:
        raise ConfigError(f"spend_cap_period: must be one of {', '.join(PERIODS)}, "
                          f"not {spend_cap_period!r}")


def create_key(
    session: Session,
    secret: str,
    *,
    name: str,
    scope: Scope = "customer",
    models: list[str] | None = None,
    prices: dict[str, Any] | None = None,
    rpm: int = 60,
    tpm: int = 100_000,
    credit_micros: int = 0,
    expires_at: datetime | None = None,
    account_id: int | None = None,
    actor: str = "cli",
    spend_cap_micros: int | None = None,
    spend_cap_period: str | None = None,
) -> tuple[str, KeyInfo]:
    """Create a key (and its account unless ``account_id``); returns the plaintext once.

    Pricing fails closed: a key given credit must be given its prices too (free is a price
    set on purpose, ``{"*": {"input": 0, "output": 0}}``), never a default.
    """
    models = models or ["*"]
    if prices is None and credit_micros:
        raise ConfigError("prices: a key with credit needs prices (give the price of each "
                          "model, or '*'; a free key is priced 0:0 on purpose)")
    prices = prices if prices is not None else {"*": {"input": 0, "output": 0}}
    _validate(scope, models, prices, rpm, tpm)
    _validate_cap(spend_cap_micros, spend_cap_period)
    now = utcnow()
    if account_id is None:
        account = Account(name=name, credit_micros=0, reserved_micros=0, created_at=now)
        session.add(account)
        session.flush()
        account_id = account.id
    elif session.get(Account, account_id) is None:
        raise ConfigError(f"account {account_id} does not exist")
    plaintext = new_key()
    row = ApiKey(
        id="key_" + secrets.token_hex(8),
        account_id=account_id,
        key_hash=hash_key(secret, plaintext),
        name=name,
        scope=scope,
        allowed_models=list(models),
        prices=dict(prices),
        rpm=rpm,
        tpm=tpm,
        created_at=now,
        expires_at=expires_at,
        prefix=display_prefix(plaintext),
        spend_cap_micros=spend_cap_micros,
        spend_cap_period=spend_cap_period,
    )
    session.add(row)
    session.flush()
    record(session, actor, "create", row.id, name=name, scope=scope, models=models, prices=prices,
           rpm=rpm, tpm=tpm, expires_at=expires_at, account_id=account_id,
           spend_cap_micros=spend_cap_micros, spend_cap_period=spend_cap_period)
    if credit_micros:
        metering.topup(session, row.id, credit_micros, actor=actor)
    return plaintext, _info(row)


def get_key(session: Session, key_id: str) -> ApiKey:
    """The key row by public id, or a ConfigError naming it."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise ConfigError(f"no key with id {key_id!r}")
    return row


def set_spend_cap(session: Session, key_id: str, spend_cap_micros: int | None,
                  spend_cap_period: str | None, actor: str = "cli") -> None:
    """Set (or with both None, remove) a key's spend cap; it applies from the next request
    on every replica (read with the key on each request). What the key was charged earlier
    in the current period counts against the new cap."""
    _validate_cap(spend_cap_micros, spend_cap_period)
    row = get_key(session, key_id)
    row.spend_cap_micros, row.spend_cap_period = spend_cap_micros, spend_cap_period
    if spend_cap_period is not None:
        spendcaps.seed_period(session, key_id, spend_cap_period)
    record(session, actor, "spend_cap", key_id, spend_cap_micros=spend_cap_micros,
           spend_cap_period=spend_cap_period)


def revoke(session: Session, key_id: str, actor: str = "cli") -> None:
    """Revoke now; every replica refuses it on the next request (checked in the DB each time)."""
    row = get_key(session, key_id)
    row.revoked_at = utcnow()
    record(session, actor, "revoke", key_id)


def rotate(session: Session, secret: str, key_id: str, grace_s: float = 3600.0,
           actor: str = "cli") -> tuple[str, KeyInfo]:
    """A new key with the same settings and account; the old one expires after ``grace_s``."""
    old = get_key(session, key_id)
    if old.revoked_at is not None:
        raise ConfigError(f"key {key_id!r} is revoked; create a new one instead")
    plaintext, info = create_key(
        session, secret, name=old.name, scope=old.scope,  # type: ignore[arg-type]
        models=list(old.allowed_models), prices=dict(old.prices), rpm=old.rpm, tpm=old.tpm,
        expires_at=as_utc(old.expires_at), account_id=old.account_id, actor=actor,
        spend_cap_micros=old.spend_cap_micros, spend_cap_period=old.spend_cap_period,
    )
    grace_end = utcnow() + timedelta(seconds=grace_s)
    current = as_utc(old.expires_at)
    old.expires_at = grace_end if current is None else min(current, grace_end)
    old.rotated_to = info.id
    record(session, actor, "rotate", key_id, new_key=info.id, grace_s=grace_s)
    return plaintext, info


def list_keys(session: Session) -> list[tuple[ApiKey, Account]]:
    """Every key with its account, oldest first."""
    rows = session.execute(
        select(ApiKey, Account).join(Account, ApiKey.account_id == Account.id)
        .order_by(ApiKey.created_at)
    )
    return [(k, a) for k, a in rows.tuples()]


def account_keys(session: Session, account_id: int) -> list[ApiKey]:
    """The keys of one account, oldest first."""
    return list(session.scalars(select(ApiKey).where(ApiKey.account_id == account_id)
                                .order_by(ApiKey.created_at)))


def owned_key(session: Session, account_id: int, key_id: str) -> ApiKey:
    """The key if it belongs to ``account_id``; another account's key reads as unknown, so a
    customer learns nothing about keys outside its account."""
    row = session.get(ApiKey, key_id)
    if row is None or row.account_id != account_id:
        raise ConfigError(f"no key with id {key_id!r}")
    return row


def derive_key(session: Session, secret: str, parent: KeyInfo, *, name: str, scope: str,
               models: list[str], rpm: int, tpm: int, expires_at: datetime | None = None,
               actor: str = "console") -> tuple[str, KeyInfo]:
    """A new key on ``parent``'s account that can do no more than ``parent``: the same prices
    (a customer never sets its own), a subset of its models, limits no higher than its own and
    its scope or ``customer``; the error names the field that asks for more."""
    if not name.strip():
        raise ConfigError("name: give the new key a name")
    if scope not in (parent.scope, "customer"):
        raise ConfigError(f"scope: a {parent.scope} key may create {parent.scope} or customer "
                          f"keys, not {scope!r}")
    allowed = "*" in parent.allowed_models
    outside = [m for m in models if not allowed and m not in parent.allowed_models]
    if not models or outside:
        raise ConfigError(f"models: choose among {', '.join(parent.allowed_models)}"
                          + (f" ({', '.join(outside)} is not one)" if outside else ""))
    if not 0 < rpm <= parent.rpm:
        raise ConfigError(f"rpm: must be between 1 and {parent.rpm} (this key's own limit)")
    if not 0 < tpm <= parent.tpm:
        raise ConfigError(f"tpm: must be between 1 and {parent.tpm} (this key's own limit)")
    if parent.expires_at is not None:
        expires_at = parent.expires_at if expires_at is None else min(expires_at,
                                                                      parent.expires_at)
    # a derived key is never uncapped where its parent is capped (it counts on its own)
    return create_key(session, secret, name=name.strip(), scope=scope,  # type: ignore[arg-type]
                      models=models, prices=dict(parent.prices), rpm=rpm, tpm=tpm,
                      expires_at=expires_at, account_id=parent.account_id, actor=actor,
                      spend_cap_micros=parent.spend_cap_micros,
                      spend_cap_period=parent.spend_cap_period)


def key_info(session: Session, key_id: str) -> KeyInfo | None:
    """The key's info if it is live (not revoked, not expired), else None."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return None
    info = _info(row)
    return info if _usable(info) else None
