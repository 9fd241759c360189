"""Gateway domain errors and the single handler that turns them into OpenAI error bodies.

OpenAI's shape is ``{"error": {"message", "type", "param", "code"}}``. Every failure in the
gateway is a :class:`GatewayError`; FastAPI's own validation and JSON errors are mapped to a
400 naming the field by the same handler, so clients see one format.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from avokit.errors import AvokitError


class GatewayError(AvokitError):
    """A request failure with an HTTP status and an OpenAI error type/code."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI error object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigError(AvokitError):
    """The gateway is misconfigured (settings, registry, database URL)."""


class AuthenticationError(GatewayError):
    """401: one identical body for a missing, malformed, unknown, revoked or expired key."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__("Incorrect API key provided.")


class PermissionDeniedError(GatewayError):
    """403: the key may not use this model, scope or parameter."""

    status = 403
    type = "permission_error"
    code = "permission_denied"


class InsufficientCreditError(GatewayError):
    """402: the prepaid credit does not cover the worst case of this request."""

    status = 402
    type = "insufficient_quota"
    code = "insufficient_quota"


class RateLimitError(GatewayError):
    """429 with Retry-After and x-ratelimit-* headers."""

    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class BadRequestError(GatewayError):
    """400 naming the bad field."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class NotFoundError(GatewayError):
    """404: unknown model or route."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class UpstreamError(GatewayError):
    """502: the generation engine failed."""

    status = 502
    type = "server_error"
    code = "upstream_error"


def _validation_to_gateway(exc: RequestValidationError) -> BadRequestError:
    errors = exc.errors()
    if not errors:
        return BadRequestError("invalid request body")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid" or (not loc and first.get("type") in (
        "model_attributes_type", "dict_type")):
        return BadRequestError("request body is not valid JSON", param=None, code="invalid_json")
    return BadRequestError(f"{param or 'body'}: {first.get('msg', 'invalid value')}", param=param)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, RequestValidationError):
        exc = _validation_to_gateway(exc)
    elif not isinstance(exc, GatewayError):
        # unexpected: never echo internals (they could hold request data) to the client
        exc = GatewayError("The server had an error while processing your request.")
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def install_error_handler(app: FastAPI) -> None:
    """Register the one handler for gateway, validation and unexpected errors."""
    app.add_exception_handler(GatewayError, _handle)
    app.add_exception_handler(RequestValidationError, _handle)
    app.add_exception_handler(Exception, _handle)
