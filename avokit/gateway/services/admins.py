"""Web-console administrators: created only by ``avokit admin create`` (no default account),
passwords stored as scrypt hashes, checked in constant time."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from avokit.gateway.db.models import AdminUser
from avokit.gateway.errors import ConfigError
from avokit.gateway.services.audit import record, utcnow

MIN_PASSWORD = 12
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,99}$")
# scrypt cost: ~50 ms and 16 MiB per check, so a stolen table is slow to brute-force while a
# sign-in stays quick (attempts are rate-limited too)
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$digest`` (hex) of ``password`` with a fresh salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` value (constant-time compare)."""
    try:
        kind, n, r, p, salt, want = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                         p=int(p), dklen=len(want) // 2)
    return hmac.compare_digest(got.hex(), want)


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # checked against when the name is unknown, so an unknown name costs the same time as a
    # known one (a sign-in must not tell which administrator names exist); built on first use
    return hash_password(secrets.token_hex(16))


def _by_name(session: Session, name: str) -> AdminUser | None:
    return session.scalar(select(AdminUser).where(AdminUser.name == name))


def create_admin(session: Session, name: str, password: str, actor: str = "cli") -> AdminUser:
    """A new administrator; refuses a taken or malformed name and a short password."""
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"name: {name!r} must be 1-100 letters, digits or _.@- "
                          "(starting with a letter or digit)")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"password: must be at least {MIN_PASSWORD} characters")
    if _by_name(session, name) is not None:
        raise ConfigError(f"name: an administrator named {name!r} already exists")
    admin = AdminUser(name=name, password_hash=hash_password(password), created_at=utcnow())
    session.add(admin)
    session.flush()
    record(session, actor, "admin_create", None, admin=name)
    return admin


def verify_admin(session: Session, name: str, password: str) -> AdminUser | None:
    """The enabled administrator with this name and password, else None."""
    admin = _by_name(session, name)
    if admin is None or admin.disabled_at is not None:
        check_password(_dummy_hash(), password)
        return None
    return admin if check_password(admin.password_hash, password) else None


def set_disabled(session: Session, name: str, disabled: bool, actor: str = "cli") -> AdminUser:
    """Disable (every session of it ends at its next page) or re-enable an administrator."""
    admin = _by_name(session, name)
    if admin is None:
        raise ConfigError(f"name: no administrator named {name!r}")
    admin.disabled_at = utcnow() if disabled else None
    record(session, actor, "admin_disable" if disabled else "admin_enable", None, admin=name)
    return admin


def list_admins(session: Session) -> list[AdminUser]:
    """Every administrator, oldest first."""
    return list(session.scalars(select(AdminUser).order_by(AdminUser.id)))
