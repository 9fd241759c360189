"""Request ids: every response carries ``x-request-id``; logs, ledger and audit rows name it.

A client's own ``x-request-id`` is kept when it is short and plain (letters, digits and
``-_.:``, at most 128 characters), so a customer's support ticket can quote the id their
client logged; anything else (too long, other characters, several values) is replaced by a
fresh ``req_`` id, so nothing a client sends reaches the logs or the ledger unchecked.

The id lives in a context variable set by :class:`RequestIds` (the outermost middleware), so
code on the request path (worker threads included: they run in a copy of the request's
context) reads it with :func:`current` instead of threading it through every call.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode()
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
STATE_KEY = "avokit_request"


@dataclass
class RequestContext:
    """What the request path learns about one request: its id, and (generation routes) the
    model it asked for, which the metrics middleware labels the request with."""

    id: str
    model: str | None = None


_CURRENT: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "avokit_request", default=None)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_request_id() -> str:
    """A fresh id: ``req_`` and 24 hex digits."""
    return "req_" + secrets.token_hex(12)


def accept(presented: str | None) -> str:
    """The client's id when it is safe to keep, else a fresh one."""
    if presented is not None and _SAFE.fullmatch(presented):
        return presented
    return new_request_id()


def current() -> str | None:
    """The id of the request being served in this context (None outside a request)."""
    ctx = _CURRENT.get()
    return None if ctx is None else ctx.id


def note_model(model: str) -> None:
    """Record the request's model (read by the metrics middleware when it answers)."""
    ctx = _CURRENT.get()
    if ctx is not None:
        ctx.model = model


def model_of(scope: Scope) -> str | None:
    """The model noted for the request of ``scope`` (None: not a generation request)."""
    ctx = scope.get("state", {}).get(STATE_KEY)
    return None if ctx is None else ctx.model


def _presented(scope: Scope) -> str | None:
    found = [value for name, value in scope.get("headers", ()) if name == _HEADER_BYTES]
    if len(found) != 1:  # none, or several (which one would a ticket quote?)
        return None
    try:
        return found[0].decode("ascii")
    except UnicodeDecodeError:
        return None


class RequestIds:
    """ASGI middleware: choose the request's id, expose it, and stamp it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Set the id for the request's context and add it to the response headers."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept(_presented(scope))
        ctx = RequestContext(request_id)
        scope.setdefault("state", {})[STATE_KEY] = ctx
        token = _CURRENT.set(ctx)

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER_BYTES]
                headers.append((_HEADER_BYTES, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            _CURRENT.reset(token)


class RequestIdFilter(logging.Filter):
    """Gives every log record a ``request_id`` attribute (``-`` outside a request), for
    formats such as ``avokit serve``'s access log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate; always keeps the record."""
        if not hasattr(record, "request_id"):
            record.request_id = current() or "-"
        return True


def install_request_id_logging() -> None:
    """Attach :class:`RequestIdFilter` to the root, uvicorn and avokit loggers and their
    handlers (idempotent), so any format may name ``%(request_id)s``."""
    for name in ["", "uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "avokit"]:
        logger = logging.getLogger(name)
        for target in [logger, *logger.handlers]:
            if not any(isinstance(f, RequestIdFilter) for f in target.filters):
                target.addFilter(RequestIdFilter())
