"""What every console page shares: its state on the app, the session dependencies, the CSRF
check of posted forms, cookies, page rendering and the security headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avokit.gateway.console.auth import (
    COOKIE_PATHS,
    COOKIES,
    SIGNIN_COOKIE,
    CsrfRefused,
    Kind,
    Principal,
    Sessions,
    SignInRequired,
)
from avokit.gateway.errors import ConfigError
from avokit.gateway.services.serving import Gateway

HERE = Path(__file__).resolve().parent
SIGNIN_URLS: dict[str, str] = {"customer": "/console/signin", "admin": "/console/admin/signin"}
# scripts only from /console/static (no inline script, no eval), no framing, forms post here only
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")


@dataclass
class ConsoleState:
    """The console's process-wide state (built by ``create_app``, never at import)."""

    sessions: Sessions
    templates: Jinja2Templates
    registry: Path
    signins_per_minute: int


def state(request: Request) -> ConsoleState:
    """The console state of this app."""
    return request.app.state.console


def gw(request: Request) -> Gateway:
    """The gateway state (database, models, engine, secret)."""
    return request.app.state.gateway


def _principal(request: Request, kind: Kind) -> Principal:
    found = state(request).sessions.load(gw(request).db, request.cookies.get(COOKIES[kind]), kind)
    if found is None:
        raise SignInRequired(kind)
    return found


def customer(request: Request) -> Principal:
    """The signed-in customer (sync: FastAPI runs it in a thread, it reads the database)."""
    return _principal(request, "customer")


def admin(request: Request) -> Principal:
    """The signed-in administrator; a customer session is not one (its cookie is ignored)."""
    return _principal(request, "admin")


@dataclass(frozen=True)
class Posted:
    """A state-changing form post whose session and CSRF token were checked."""

    who: Principal
    form: FormData

    def text(self, name: str, default: str = "") -> str:
        """A form field as text (stripped)."""
        value = self.form.get(name, default)
        return value.strip() if isinstance(value, str) else default


async def _posted(request: Request, kind: Kind) -> Posted:
    who = await run_in_threadpool(_principal, request, kind)
    form = await request.form()
    presented = form.get("csrf") or request.headers.get("x-csrf-token")
    state(request).sessions.check_csrf(who.token, presented if isinstance(presented, str)
                                       else None)
    return Posted(who, form)


async def customer_post(request: Request) -> Posted:
    """A customer's form post (session and CSRF token checked)."""
    return await _posted(request, "customer")


async def admin_post(request: Request) -> Posted:
    """An administrator's form post (session and CSRF token checked)."""
    return await _posted(request, "admin")


Customer = Annotated[Principal, Depends(customer)]
Admin = Annotated[Principal, Depends(admin)]
CustomerPost = Annotated[Posted, Depends(customer_post)]
AdminPost = Annotated[Posted, Depends(admin_post)]


# the usage pages' window: the last N days (the database filters, so a long history is not
# read to draw a month)
USAGE_DAYS_DEFAULT, USAGE_DAYS_MAX = 30, 366
USAGE_DAY_CHOICES = (7, 30, 90, 366)


def usage_window(days: str) -> tuple[int, datetime]:
    """``days`` from a usage page's query ("" for the default) and the UTC start it means;
    ConfigError naming ``days`` unless a whole number from 1 to 366."""
    if not days:
        n = USAGE_DAYS_DEFAULT
    elif days.isdigit() and 1 <= int(days) <= USAGE_DAYS_MAX:
        n = int(days)
    else:
        raise ConfigError(f"days: must be a whole number of days from 1 to {USAGE_DAYS_MAX}, "
                          f"not {days[:20]!r}")
    return n, datetime.now(timezone.utc) - timedelta(days=n)


class UsageQueryRefused(Exception):
    """A usage page's ``days`` that is no window: the page says why, with a 400."""

    def __init__(self, who: Principal, message: str) -> None:
        super().__init__(message)
        self.who = who


@dataclass(frozen=True)
class Window:
    """The usage pages' window: the last ``days`` days, from ``since`` (UTC)."""

    days: int
    since: datetime


def _window(who: Principal, days: str) -> Window:
    try:
        n, since = usage_window(days)
    except ConfigError as err:
        raise UsageQueryRefused(who, str(err)) from None
    return Window(n, since)


def customer_window(who: Customer, days: str = "") -> Window:
    """The ``days`` query of a customer's usage page or CSV (a dependency)."""
    return _window(who, days)


def admin_window(who: Admin, days: str = "") -> Window:
    """The ``days`` query of the administrators' usage page or CSV (a dependency)."""
    return _window(who, days)


CustomerWindow = Annotated[Window, Depends(customer_window)]
AdminWindow = Annotated[Window, Depends(admin_window)]


def client_address(request: Request) -> str:
    """The peer address sign-in attempts are counted against."""
    return request.client.host if request.client else "unknown"


async def count_signin(request: Request) -> None:
    """Count one sign-in attempt of this client in the gateway's limiter (shared by every
    replica through Redis when ``--redis`` is set, so N replicas do not grant N times the
    guesses); raises its 429 past the limit, or its 503 when Redis is unreachable."""
    limiter, per_minute = gw(request).limiter, state(request).signins_per_minute
    # the "signin:" prefix keeps these counters apart from API keys' (ids like "key_...")
    await run_in_threadpool(limiter.check, "signin:" + client_address(request), per_minute,
                            2**62, 1)


def render(request: Request, template: str, who: Principal | None = None, status: int = 200,
           **context: Any) -> HTMLResponse:
    """A console page; never cached (pages show balances, and once, a new key)."""
    context.update(request=request, who=who, csrf=who.csrf if who else context.get("csrf", ""))
    response = state(request).templates.TemplateResponse(request, template, context,
                                                         status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def set_session_cookie(request: Request, response: Response, kind: Kind, token: str) -> None:
    """Hand the browser its signed session cookie (HttpOnly, SameSite=Strict, Secure on HTTPS)."""
    st = state(request)
    response.set_cookie(COOKIES[kind], st.sessions.signed(token), max_age=int(st.sessions.ttl_s),
                        path=COOKIE_PATHS[kind], httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_session_cookie(response: Response, kind: Kind) -> None:
    """Remove the session cookie of ``kind``."""
    response.delete_cookie(COOKIES[kind], path=COOKIE_PATHS[kind], httponly=True,
                           samesite="strict")


def signed_in(request: Request, kind: Kind, token: str, url: str) -> Response:
    """After a sign-in: to ``url`` with the new session's cookie; the pre-sign-in cookie goes."""
    response = redirect(url)
    set_session_cookie(request, response, kind, token)
    response.delete_cookie(SIGNIN_COOKIE, path="/console")
    return response


def signed_out(request: Request, kind: Kind, token: str) -> Response:
    """End a session (refused from now on, whatever cookie still holds it): to the sign-in page."""
    state(request).sessions.end(gw(request).db, token)
    response = redirect(SIGNIN_URLS[kind])
    clear_session_cookie(response, kind)
    return response


def csv_download(text: str, filename: str) -> Response:
    """A CSV file download that no cache keeps (usage holds spend)."""
    return Response(text, media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "no-store"})


def redirect(url: str) -> RedirectResponse:
    """303 See Other: after a post, the browser loads ``url`` with GET."""
    return RedirectResponse(url, status_code=303)


async def _signin_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    if request.method == "GET" and not request.url.path.startswith("/console/api/"):
        response: Response = redirect(SIGNIN_URLS[exc.kind])
    else:
        response = JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error",
                                           "param": None, "code": "signin_required"}}, 401)
    clear_session_cookie(response, exc.kind)
    return response


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error",
                                   "param": "csrf", "code": "csrf_refused"}}, 403)


async def _usage_query_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UsageQueryRefused)
    return render(request, "message.html", exc.who, status=400, message=str(exc))


EXCEPTION_HANDLERS = {SignInRequired: _signin_required, CsrfRefused: _csrf_refused,
                      UsageQueryRefused: _usage_query_refused}


class SecurityHeaders:
    """Adds the Content-Security-Policy and related headers to every /console response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/console"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]
            await send(message)

        await self.app(scope, receive, with_headers)
