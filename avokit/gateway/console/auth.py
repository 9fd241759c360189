"""Console sessions and CSRF tokens.

A sign-in (an API key, or an administrator's name and password) is exchanged for a random
session token. The browser holds it in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS),
signed with the server secret and dated, so a forged or stale cookie is refused before the
database is read; the database holds only the token's sha256, its expiry and what it signs in
(one key's account, or one administrator). The API key itself is never stored in the session,
in a cookie, a URL or a page.

Each state-changing request carries a CSRF token: an HMAC of the session token under the
server secret (sent as a form field or the ``X-CSRF-Token`` header). Sign-in forms, which have
no session yet, carry one tied to a random pre-sign-in cookie (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from itsdangerous import BadSignature, TimestampSigner
from sqlalchemy import Engine, delete, update
from sqlalchemy.orm import Session

from avokit.gateway.db.models import AdminUser, ConsoleSession
from avokit.gateway.db.session import session_factory
from avokit.gateway.services import keys
from avokit.gateway.services.audit import as_utc, utcnow

Kind = Literal["customer", "admin"]
COOKIES: dict[str, str] = {"customer": "avokit_console", "admin": "avokit_admin"}
# the admin cookie is only ever sent to the admin console
COOKIE_PATHS: dict[str, str] = {"customer": "/console", "admin": "/console/admin"}
SIGNIN_COOKIE = "avokit_signin"


class SignInRequired(Exception):
    """No live session of the kind the page needs: sign in (redirect) or 401."""

    def __init__(self, kind: Kind) -> None:
        super().__init__(f"sign in to the {kind} console")
        self.kind = kind


class CsrfRefused(Exception):
    """A state-changing request without the right CSRF token: 403."""


@dataclass(frozen=True)
class Principal:
    """Who a live session signs in: a customer's key (and so its account) or an administrator."""

    token: str
    kind: Kind
    csrf: str
    key: keys.KeyInfo | None = None
    admin_name: str | None = None

    @property
    def account_id(self) -> int:
        """The customer's account (a customer session only)."""
        assert self.key is not None, "an admin session has no account"
        return self.key.account_id

    @property
    def actor(self) -> str:
        """Who the audit log names for this session's actions."""
        return f"admin:{self.admin_name}" if self.kind == "admin" else f"console:{self.key.id}"  # type: ignore[union-attr]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Start, load and end console sessions in the gateway's database."""

    def __init__(self, secret: str, ttl_s: float) -> None:
        self.secret = secret
        self.ttl_s = ttl_s
        self._signer = TimestampSigner(secret, salt="avokit-console-session")

    def csrf(self, token: str, purpose: str = "session") -> str:
        """The CSRF token bound to ``token`` (a session or pre-sign-in token)."""
        return hmac.new(self.secret.encode(), f"csrf:{purpose}:{token}".encode(),
                        hashlib.sha256).hexdigest()

    def check_csrf(self, token: str, presented: str | None, purpose: str = "session") -> None:
        """Raise :class:`CsrfRefused` unless ``presented`` is ``token``'s CSRF token."""
        if not presented or not hmac.compare_digest(self.csrf(token, purpose), presented):
            raise CsrfRefused("missing or wrong CSRF token: reload the page and try again")

    def signed(self, token: str) -> str:
        """The cookie value for ``token``: signed and dated."""
        return self._signer.sign(token).decode()

    def unsigned(self, cookie: str | None) -> str | None:
        """The token of a cookie signed by :meth:`signed` within the session lifetime."""
        if not cookie:
            return None
        try:
            return self._signer.unsign(cookie, max_age=int(self.ttl_s)).decode()
        except BadSignature:  # forged, altered or expired: the same as no cookie
            return None

    def start(self, db: Engine, kind: Kind, *, key: keys.KeyInfo | None = None,
              admin: AdminUser | None = None) -> str:
        """A new session for a key or an administrator; returns its (unsigned) token."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with session_factory(db).begin() as s:
            # sessions that ended long ago are of no further use: keep the table small
            s.execute(delete(ConsoleSession).where(
                ConsoleSession.expires_at < now - timedelta(days=1)))
            s.add(ConsoleSession(
                id=_digest(token), kind=kind, key_id=key.id if key else None,
                account_id=key.account_id if key else None,
                admin_id=admin.id if admin else None, created_at=now,
                expires_at=now + timedelta(seconds=self.ttl_s)))
        return token

    def load(self, db: Engine, cookie: str | None, kind: Kind) -> Principal | None:
        """The live session behind a cookie, or None (bad signature, unknown, ended, expired,
        wrong kind, or its key or administrator no longer valid)."""
        token = self.unsigned(cookie)
        if token is None:
            return None
        with session_factory(db)() as s:
            row = s.get(ConsoleSession, _digest(token))
            if (row is None or row.kind != kind or row.ended_at is not None
                    or (as_utc(row.expires_at) or utcnow()) <= utcnow()):
                return None
            return self._principal(s, row, token)

    def _principal(self, s: Session, row: ConsoleSession, token: str) -> Principal | None:
        csrf = self.csrf(token)
        if row.kind == "admin":
            admin = s.get(AdminUser, row.admin_id)
            if admin is None or admin.disabled_at is not None:
                return None
            return Principal(token, "admin", csrf, admin_name=admin.name)
        # the key is read on every request: revoking it ends its console sessions too
        info = keys.key_info(s, row.key_id or "")
        if info is None or info.account_id != row.account_id:
            return None
        return Principal(token, "customer", csrf, key=info)

    def rebind(self, db: Engine, token: str, key_id: str) -> None:
        """Move a customer session to another key of its account (after rotating its own)."""
        with session_factory(db).begin() as s:
            s.execute(update(ConsoleSession).where(ConsoleSession.id == _digest(token))
                      .values(key_id=key_id))

    def end(self, db: Engine, token: str) -> None:
        """Sign out: the session is refused from now on, whatever cookie still holds it."""
        with session_factory(db).begin() as s:
            s.execute(update(ConsoleSession).where(ConsoleSession.id == _digest(token))
                      .values(ended_at=utcnow()))
