"""Dependencies shared by routes: the gateway state and the authenticated key."""

from __future__ import annotations

from fastapi import Header, Request

from avokit.gateway.services.keys import KeyInfo
from avokit.gateway.services.serving import Gateway


def gateway(request: Request) -> Gateway:
    """The process's gateway state."""
    return request.app.state.gateway


async def current_key(request: Request, authorization: str | None = Header(None)) -> KeyInfo:
    """The caller's key; raises the one 401 otherwise."""
    return await gateway(request).authenticate(authorization)
