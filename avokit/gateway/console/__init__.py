"""The web console served by ``avokit serve`` under /console (customers) and /console/admin
(administrators): server-rendered Jinja2 pages, one small script for the playground."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from avokit.gateway.console import admin, customer, playground
from avokit.gateway.console.auth import Sessions
from avokit.gateway.console.web import EXCEPTION_HANDLERS, HERE, ConsoleState, SecurityHeaders
from avokit.gateway.settings import GatewaySettings


def install_console(app: FastAPI, settings: GatewaySettings) -> None:
    """Add the console's routes, static files, error handlers and security headers to ``app``."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["money"] = lambda micros: f"{int(micros or 0):,}"
    app.state.console = ConsoleState(
        sessions=Sessions(settings.require_secret(), settings.console_session_s),
        templates=templates, registry=settings.registry,
        signins_per_minute=settings.console_signins_per_minute)
    for exc, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.add_middleware(SecurityHeaders)
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")),
              name="console-static")
    app.include_router(customer.router)
    app.include_router(playground.router)
    app.include_router(admin.router)
