"""GET /metrics on the API port: Prometheus text, for the metrics token only.

Without ``AVOKIT_METRICS_TOKEN`` the route answers 404 as if it did not exist (use
``avokit serve --metrics-bind`` for a separate admin address); with it, any other
``Authorization`` is the one 401.
"""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from avokit.gateway.errors import AuthenticationError, NotFoundError
from avokit.gateway.metrics import GatewayMetrics

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, authorization: str | None = Header(None)) -> Response:
    """The process's (or every worker's) metrics in the Prometheus text format."""
    token: str | None = request.app.state.metrics_token
    if not token or request.app.state.metrics is None:  # no token, or metrics turned off
        raise NotFoundError("Not Found", code="not_found")
    presented = (authorization or "")[7:].strip() if (authorization or "")[:7].lower() \
        == "bearer " else ""
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise AuthenticationError()
    collected: GatewayMetrics = request.app.state.metrics  # not None: checked above
    # in multiprocess mode this reads every worker's files: off the event loop
    body = await asyncio.to_thread(collected.exposition)
    return Response(body, media_type=collected.content_type)
