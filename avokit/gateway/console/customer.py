"""The customer console: sign in with an API key, usage, keys and model cards.

Every page reads only the signed-in key's account; keys of other accounts read as unknown.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from avokit.gateway.console import web
from avokit.gateway.console.auth import SIGNIN_COOKIE, CsrfRefused, Principal
from avokit.gateway.console.cards import load_card
from avokit.gateway.console.charts import grouped_bars
from avokit.gateway.db.models import Account, ApiKey
from avokit.gateway.db.session import session_factory
from avokit.gateway.errors import (
    AuthenticationError,
    ConfigError,
    RateLimitError,
    ServiceUnavailableError,
)
from avokit.gateway.services import keys, metering, usage
from avokit.gateway.services.audit import as_utc
from avokit.gateway.services.metering import UsageRow

router = APIRouter()
MAX_GRACE_H = 7 * 24.0


@router.get("/console", response_class=HTMLResponse)
def index(request: Request) -> Response:
    """The playground when signed in, else the sign-in page."""
    try:
        web.customer(request)
    except web.SignInRequired:
        return web.redirect(web.SIGNIN_URLS["customer"])
    return web.redirect("/console/playground")


def signin_form(request: Request, kind: str, template: str, status: int = 200,
                **context: Any) -> Response:
    """A sign-in page with a fresh pre-sign-in cookie and the CSRF token bound to it."""
    pre = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    response = web.render(request, template, status=status,
                          csrf=web.state(request).sessions.csrf(pre, "signin"), kind=kind,
                          **context)
    response.set_cookie(SIGNIN_COOKIE, pre, max_age=3600, path="/console", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


def signin_refused(request: Request, kind: str,
                   err: RateLimitError | ServiceUnavailableError) -> Response:
    """The sign-in page again with the limiter's status (429, or 503 without its Redis) and
    Retry-After."""
    response = signin_form(request, kind, "signin.html", status=err.status, error=err.message)
    response.headers["Retry-After"] = err.headers.get("Retry-After", "60")
    return response


async def checked_signin(request: Request) -> dict[str, str]:
    """The sign-in form's fields once its CSRF token is right (raises CsrfRefused otherwise)."""
    form = await request.form()
    pre = request.cookies.get(SIGNIN_COOKIE)
    presented = form.get("csrf")
    if not pre:
        raise CsrfRefused("no sign-in cookie: load the sign-in page first")
    web.state(request).sessions.check_csrf(pre, presented if isinstance(presented, str) else None,
                                           "signin")
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.get("/console/signin", response_class=HTMLResponse)
def signin_page(request: Request) -> Response:
    """Sign in with an API key."""
    return signin_form(request, "customer", "signin.html")


@router.post("/console/signin", response_class=HTMLResponse)
async def signin(request: Request) -> Response:
    """Exchange an API key for a session; the key goes no further than this request."""
    fields = await checked_signin(request)
    try:
        await web.count_signin(request)
    except (RateLimitError, ServiceUnavailableError) as err:
        return signin_refused(request, "customer", err)
    gw = web.gw(request)
    try:
        info = await run_in_threadpool(keys.authenticate_request, gw.db, gw.secret,
                                       fields.get("key", "").strip())
    except AuthenticationError:
        return signin_form(request, "customer", "signin.html", status=401,
                           error="key: that API key is not valid (unknown, revoked or expired).")
    sessions = web.state(request).sessions
    token = await run_in_threadpool(sessions.start, gw.db, "customer", key=info)
    return web.signed_in(request, "customer", token, "/console/playground")


@router.post("/console/signout")
def signout(request: Request, posted: web.CustomerPost) -> Response:
    """End the session."""
    return web.signed_out(request, "customer", posted.who.token)


def usage_context(rows: list[UsageRow], by: str) -> dict[str, Any]:
    """Charts (spend and tokens per day, one bar per key or account) and the daily table."""
    series = usage.daily_totals(rows, by=by)
    days = sorted({t.day for totals in series.values() for t in totals})
    labels = [d.isoformat() for d in days]
    named = {k: v for k, v in series.items() if k != "all"}

    def values(attr: str) -> dict[str, list[float]]:
        return {name: [float(next((getattr(t, attr) for t in totals if t.day == d), 0))
                       for d in days] for name, totals in named.items()}

    return {
        "charts": [grouped_bars(labels, values("cost_micros"), title="Spend per day",
                                unit="micro-units"),
                   grouped_bars(labels, values("tokens"), title="Tokens per day",
                                unit="tokens")] if days else [],
        "daily": series.get("all", []),
        "total_cost": sum(r.cost_micros for r in rows),
        "total_tokens": sum(r.prompt_tokens + r.completion_tokens for r in rows),
        "requests": len(rows),
    }


def _account_rows(request: Request, who: Principal, key_id: str | None, since: datetime
                  ) -> list[UsageRow]:
    with session_factory(web.gw(request).db)() as s:
        if key_id:
            keys.owned_key(s, who.account_id, key_id)
        return metering.usage(s, key_id or None, since, account_id=who.account_id)


@router.get("/console/usage", response_class=HTMLResponse)
def usage_page(request: Request, who: web.Customer, window: web.CustomerWindow, key: str = "") -> Response:
    """Spend and tokens per day and per key over the last ``days`` days, remaining credit,
    the CSV download."""
    try:
        rows = _account_rows(request, who, key, window.since)
    except ConfigError as err:
        return web.render(request, "message.html", who, status=404, message=str(err))
    with session_factory(web.gw(request).db)() as s:
        account = s.get(Account, who.account_id)
        account_keys = keys.account_keys(s, who.account_id)
    assert account is not None
    return web.render(request, "usage.html", who, account=account, keys=account_keys,
                      selected=key, days=window.days, day_choices=web.USAGE_DAY_CHOICES,
                      **usage_context(rows, "key"))


@router.get("/console/usage.csv")
def usage_csv(request: Request, who: web.Customer, window: web.CustomerWindow, key: str = "") -> Response:
    """The account's (or one of its keys') charges of the last ``days`` days, as
    ``avokit usage --csv`` writes them."""
    try:
        rows = _account_rows(request, who, key, window.since)
    except ConfigError as err:
        return web.render(request, "message.html", who, status=404, message=str(err))
    name = f"usage-{key or f'account-{who.account_id}'}.csv"
    return web.csv_download(usage.usage_csv(rows), name)


def keys_page(request: Request, who: Principal, status: int = 200, **extra: Any) -> Response:
    """The account's keys (prefix, scope, limits, last use) and the create form."""
    with session_factory(web.gw(request).db)() as s:
        rows = keys.account_keys(s, who.account_id)
        last = usage.last_used(s, [k.id for k in rows])
    models = sorted(m for m in web.gw(request).models if who.key and who.key.may_use(m))
    return web.render(request, "keys.html", who, status=status, keys=rows, last_used=last,
                      models=models, states={k.id: key_state(k) for k in rows}, **extra)


def key_state(row: ApiKey) -> str:
    """``revoked``, ``expired``, ``expires <UTC time>`` or ``active``."""
    expires = as_utc(row.expires_at)
    if row.revoked_at is not None:
        return "revoked"
    if expires is not None and expires <= datetime.now(timezone.utc):
        return "expired"
    return f"expires {str(expires)[:19]}" if expires is not None else "active"


@router.get("/console/keys", response_class=HTMLResponse)
def keys_list(request: Request, who: web.Customer) -> Response:
    """The account's keys."""
    return keys_page(request, who)


def whole(posted: web.Posted, name: str, default: str = "") -> int:
    """A whole-number form field; the error names it."""
    text = posted.text(name, default)
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a whole number") from None


def hours(posted: web.Posted, name: str, low: float, high: float) -> float | None:
    """An optional number of hours in [low, high]; the error names the field."""
    text = posted.text(name)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a number of hours") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be between {low:g} and {high:g} hours")
    return value


@router.post("/console/keys", response_class=HTMLResponse)
def keys_create(request: Request, posted: web.CustomerPost) -> Response:
    """A new key on the account, no stronger than the signed-in key; shown once."""
    who = posted.who
    assert who.key is not None
    try:
        valid_h = hours(posted, "expires_hours", 1, 24 * 3650)
        expires = (datetime.now(timezone.utc) + timedelta(hours=valid_h)) if valid_h else None
        with session_factory(web.gw(request).db).begin() as s:
            plaintext, info = keys.derive_key(
                s, web.gw(request).secret, who.key, name=posted.text("name"),
                scope=posted.text("scope", "customer"),
                models=[m for m in posted.form.getlist("models") if isinstance(m, str)],
                rpm=whole(posted, "rpm", str(who.key.rpm)),
                tpm=whole(posted, "tpm", str(who.key.tpm)), expires_at=expires, actor=who.actor)
    except ConfigError as err:
        return keys_page(request, who, status=400, error=str(err))
    return keys_page(request, who, new_key=plaintext, new_key_id=info.id)


@router.post("/console/keys/{key_id}/rotate", response_class=HTMLResponse)
def keys_rotate(request: Request, key_id: str, posted: web.CustomerPost) -> Response:
    """A replacement key (shown once); the old one works for the grace period."""
    who = posted.who
    gw = web.gw(request)
    try:
        grace_h = hours(posted, "grace_hours", 0, MAX_GRACE_H)
        with session_factory(gw.db).begin() as s:
            keys.owned_key(s, who.account_id, key_id)
            plaintext, info = keys.rotate(s, gw.secret, key_id, 3600.0 * (grace_h or 0.0),
                                          actor=who.actor)
    except ConfigError as err:
        return keys_page(request, who, status=400, error=str(err))
    if who.key is not None and key_id == who.key.id:  # the session follows its own key
        web.state(request).sessions.rebind(gw.db, who.token, info.id)
    return keys_page(request, who, new_key=plaintext, new_key_id=info.id, rotated=key_id)


@router.post("/console/keys/{key_id}/revoke", response_class=HTMLResponse)
def keys_revoke(request: Request, key_id: str, posted: web.CustomerPost) -> Response:
    """Revoke now; revoking the signed-in key ends this session too."""
    who = posted.who
    try:
        with session_factory(web.gw(request).db).begin() as s:
            keys.owned_key(s, who.account_id, key_id)
            keys.revoke(s, key_id, actor=who.actor)
    except ConfigError as err:
        return keys_page(request, who, status=400, error=str(err))
    if who.key is not None and key_id == who.key.id:
        return web.signed_out(request, "customer", who.token)
    return web.redirect("/console/keys")


@router.get("/console/models", response_class=HTMLResponse)
def models_page(request: Request, who: web.Customer) -> Response:
    """The released models this key may use, each with its card."""
    gw = web.gw(request)
    cards = [load_card(m.path, True) for name, m in sorted(gw.models.items())
             if who.key is not None and who.key.may_use(name)]
    return web.render(request, "models.html", who, cards=cards, base="/console/models")


@router.get("/console/models/{name}", response_class=HTMLResponse)
def model_card(request: Request, name: str, who: web.Customer) -> Response:
    """One model's card: lineage and licences, evaluation, gate verdict."""
    gw = web.gw(request)
    served = gw.models.get(name)
    if served is None or who.key is None or not who.key.may_use(name):
        # the same answer for unknown and not-for-this-key, as the API gives
        return web.render(request, "message.html", who, status=404,
                          message=f"The model {name!r} does not exist or you do not have "
                                  "access to it.")
    return web.render(request, "card.html", who, card=load_card(served.path, True))
