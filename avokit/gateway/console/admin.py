"""The admin console at /console/admin: accounts (top-ups, alert webhooks), every key (spend
caps, revocation), usage across accounts, the audit log and the released models.

Administrators sign in with a name and password created by ``avokit admin create`` (there is
no default one). A customer session is not an admin session: its cookie is never read here.
Every admin action goes through the services that write the audit log, as ``admin:NAME``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from avokit.gateway.console import web
from avokit.gateway.console.auth import Principal
from avokit.gateway.console.cards import registry_card, registry_cards
from avokit.gateway.console.customer import (
    checked_signin,
    key_state,
    signin_form,
    signin_refused,
    usage_context,
    whole,
)
from avokit.gateway.db.models import Account, ApiKey
from avokit.gateway.db.session import session_factory
from avokit.gateway.errors import ConfigError, RateLimitError, ServiceUnavailableError
from avokit.gateway.services import admins, alerts, audit, keys, metering, usage, webhooks
from avokit.gateway.services.audit import record
from avokit.gateway.services.spendcaps import PERIODS

router = APIRouter(prefix="/console/admin")
AUDIT_PAGE = 500


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request) -> Response:
    """Administrator sign-in."""
    return signin_form(request, "admin", "signin.html")


def _verify(request: Request, name: str, password: str) -> str | None:
    """The new session token of a valid administrator (sign-in audited), else None."""
    db = web.gw(request).db
    with session_factory(db).begin() as s:
        found = admins.verify_admin(s, name, password)
        if found is None:
            return None
        record(s, f"admin:{found.name}", "signin", None, client=web.client_address(request))
    return web.state(request).sessions.start(db, "admin", admin=found)


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request) -> Response:
    """Exchange a name and password for an admin session."""
    fields = await checked_signin(request)
    try:
        await web.count_signin(request)
    except (RateLimitError, ServiceUnavailableError) as err:
        return signin_refused(request, "admin", err)
    token = await run_in_threadpool(_verify, request, fields.get("name", "").strip(),
                                    fields.get("password", ""))
    if token is None:
        return signin_form(request, "admin", "signin.html", status=401,
                           error="name or password: not a valid administrator sign-in.")
    return web.signed_in(request, "admin", token, "/console/admin")


@router.post("/signout")
def signout(request: Request, posted: web.AdminPost) -> Response:
    """End the admin session."""
    return web.signed_out(request, "admin", posted.who.token)


def accounts_page(request: Request, who: Principal, status: int = 200, **extra: Any
                  ) -> Response:
    """Every account with its balance and key count, the top-up and new-account forms."""
    with session_factory(web.gw(request).db)() as s:
        counts = dict(s.execute(select(ApiKey.account_id, func.count(ApiKey.id))
                                .group_by(ApiKey.account_id)).tuples().all())
        accounts = list(s.scalars(select(Account).order_by(Account.id)))
    return web.render(request, "admin_accounts.html", who, status=status, accounts=accounts,
                      key_counts=counts, **extra)


@router.get("", response_class=HTMLResponse)
def accounts(request: Request, who: web.Admin) -> Response:
    """The admin console's first page: accounts."""
    return accounts_page(request, who)


@router.post("/accounts/{account_id}/topup", response_class=HTMLResponse)
def topup(request: Request, account_id: int, posted: web.AdminPost) -> Response:
    """Add prepaid credit to an account (ledger row and audit entry)."""
    try:
        amount = whole(posted, "amount_micros")
        with session_factory(web.gw(request).db).begin() as s:
            metering.topup_account(s, account_id, amount, actor=posted.who.actor)
    except ConfigError as err:
        return accounts_page(request, posted.who, status=400, error=str(err))
    return web.redirect("/console/admin")


@router.post("/accounts", response_class=HTMLResponse)
def create_account(request: Request, posted: web.AdminPost) -> Response:
    """A new account with its first key (shown once), priced for every model."""
    try:
        prices = {"*": {"input": whole(posted, "price_in"), "output": whole(posted, "price_out")}}
        with session_factory(web.gw(request).db).begin() as s:
            plaintext, info = keys.create_key(
                s, web.gw(request).secret, name=posted.text("name"),
                scope=posted.text("scope", "customer"),  # type: ignore[arg-type]
                prices=prices, rpm=whole(posted, "rpm", "60"), tpm=whole(posted, "tpm", "100000"),
                credit_micros=whole(posted, "credit_micros", "0"), actor=posted.who.actor)
    except ConfigError as err:
        return accounts_page(request, posted.who, status=400, error=str(err))
    return accounts_page(request, posted.who, new_key=plaintext, new_key_id=info.id)


def keys_page(request: Request, who: Principal, status: int = 200, **extra: Any) -> Response:
    """Every key of every account, with the spend-cap and revoke forms."""
    with session_factory(web.gw(request).db)() as s:
        rows = keys.list_keys(s)
        last = usage.last_used(s, [k.id for k, _ in rows])
    return web.render(request, "admin_keys.html", who, status=status, rows=rows,
                      last_used=last, states={k.id: key_state(k) for k, _ in rows},
                      periods=PERIODS, **extra)


@router.get("/keys", response_class=HTMLResponse)
def all_keys(request: Request, who: web.Admin) -> Response:
    """Every key of every account."""
    return keys_page(request, who)


@router.post("/keys/{key_id}/spend_cap", response_class=HTMLResponse)
def spend_cap(request: Request, key_id: str, posted: web.AdminPost) -> Response:
    """Set a key's spend cap per period, or remove it (an empty cap); audited, and applied
    from the next request on every replica."""
    try:
        text = posted.text("spend_cap_micros")
        cap = whole(posted, "spend_cap_micros") if text else None
        period = posted.text("cap_period", "month") if cap is not None else None
        with session_factory(web.gw(request).db).begin() as s:
            keys.set_spend_cap(s, key_id, cap, period, actor=posted.who.actor)
    except ConfigError as err:
        return keys_page(request, posted.who, status=400, error=str(err))
    return web.redirect("/console/admin/keys")


@router.post("/accounts/{account_id}/alerts", response_class=HTMLResponse)
def account_alerts(request: Request, account_id: int, posted: web.AdminPost) -> Response:
    """Set an account's alert webhook and thresholds (an empty URL turns alerts off); shows
    the signing secret its receiver verifies with."""
    url = posted.text("alert_url") or None
    try:
        low = whole(posted, "low_credit_micros") if posted.text("low_credit_micros") else None
        percents_text = posted.text("cap_percents")
        percents = alerts.parse_percents(percents_text) if percents_text else None
        with session_factory(web.gw(request).db).begin() as s:
            account = alerts.configure(s, account_id, url=url, low_credit_micros=low,
                                       cap_percents=percents,
                                       rotate_secret=posted.text("rotate_secret") == "on",
                                       actor=posted.who.actor)
            version = account.alert_secret_version
    except ConfigError as err:
        return accounts_page(request, posted.who, status=400, error=str(err))
    if url is None:
        return web.redirect("/console/admin")
    secret = webhooks.signing_secret(web.gw(request).secret, account_id, version)
    return accounts_page(request, posted.who, alert_secret=secret, alert_account=account_id)


@router.post("/keys/{key_id}/revoke")
def revoke(request: Request, key_id: str, posted: web.AdminPost) -> Response:
    """Revoke any key now."""
    try:
        with session_factory(web.gw(request).db).begin() as s:
            keys.revoke(s, key_id, actor=posted.who.actor)
    except ConfigError as err:
        return web.render(request, "message.html", posted.who, status=404, message=str(err))
    return web.redirect("/console/admin/keys")


@router.get("/usage", response_class=HTMLResponse)
def usage_page(request: Request, who: web.Admin, window: web.AdminWindow) -> Response:
    """Usage across accounts over the last ``days`` days: per day and per account."""
    with session_factory(web.gw(request).db)() as s:
        rows = metering.usage(s, since=window.since)
    per_account: dict[int | None, int] = {}
    for r in rows:
        per_account[r.account_id] = per_account.get(r.account_id, 0) + r.cost_micros
    return web.render(request, "admin_usage.html", who, per_account=per_account, days=window.days,
                      day_choices=web.USAGE_DAY_CHOICES, **usage_context(rows, "account"))


@router.get("/usage.csv")
def usage_csv(request: Request, who: web.Admin, window: web.AdminWindow) -> Response:
    """Every charge of the last ``days`` days, as ``avokit usage --csv`` writes it."""
    with session_factory(web.gw(request).db)() as s:
        rows = metering.usage(s, since=window.since)
    return web.csv_download(usage.usage_csv(rows), "usage-all.csv")


@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, who: web.Admin) -> Response:
    """The newest audit entries first."""
    with session_factory(web.gw(request).db)() as s:
        entries = audit.newest_audit_entries(s, AUDIT_PAGE)
    return web.render(request, "admin_audit.html", who, entries=entries)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, who: web.Admin) -> Response:
    """Every release in the registry: served, or why not (gate verdict, unreadable manifest)."""
    cards = registry_cards(web.state(request).registry, set(web.gw(request).models))
    return web.render(request, "models.html", who, cards=cards, base="/console/admin/models")


@router.get("/models/{name}", response_class=HTMLResponse)
def model_card(request: Request, name: str, who: web.Admin) -> Response:
    """One release's card."""
    card = registry_card(web.state(request).registry, name, set(web.gw(request).models))
    if card is None:
        return web.render(request, "message.html", who, status=404,
                          message=f"no release named {name!r} in the registry")
    return web.render(request, "card.html", who, card=card)
