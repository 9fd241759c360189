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
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    limit: str = "requests"  # which per-minute limit refused it: "requests" or "tokens"


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


class ModelNotFoundError(NotFoundError):
    """404 for a model that does not exist *or* that this key may not use: one body for both,
    so a key cannot enumerate the models served to others."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model {model!r} does not exist or you do not have access to it.",
                         param="model")


class PayloadTooLargeError(GatewayError):
    """413: the request body is over the configured limit (refused before parsing)."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ServiceUnavailableError(GatewayError):
    """503: a dependency the gateway must not run without (the shared limiter) is down."""

    status = 503
    type = "server_error"
    code = "service_unavailable"


class UpstreamError(GatewayError):
    """502: the generation engine failed."""

    status = 502
    type = "server_error"
    code = "upstream_error"


def _param(loc: tuple[Any, ...]) -> str | None:
    # drop "body" and pydantic's union-member tags ("function-after[...]", "list[int]")
    parts = [str(p) for p in loc if p != "body" and (isinstance(p, int) or str(p).isidentifier())]
    return ".".join(parts) or None


def _validation_to_gateway(exc: RequestValidationError) -> BadRequestError:
    errors = exc.errors()
    if not errors:
        return BadRequestError("invalid request body")
    # in a union (``prompt: str | list[str] | list[int]``) the member that fails on a value
    # (bad Unicode, out of range) says more than the members of the wrong type
    first = next((e for e in errors if e.get("type") == "value_error"), errors[0])
    param = _param(tuple(first.get("loc", ())))
    kind = first.get("type")
    if kind == "json_invalid" or (param is None and kind in ("model_attributes_type",
                                                             "dict_type")):
        return BadRequestError("request body is not valid JSON", param=None, code="invalid_json")
    if kind == "extra_forbidden":
        return BadRequestError(f"Unrecognized request argument supplied: {param}", param=param,
                               code="unknown_parameter")
    # the first error names the bad value; pydantic's "Value error, " prefix says nothing
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return BadRequestError(f"{param or 'body'}: {msg}", param=param)


def _http_to_gateway(exc: StarletteHTTPException) -> GatewayError:
    err = GatewayError(str(exc.detail), headers=dict(exc.headers or {}))
    err.status = exc.status_code
    err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    err.code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return err


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, RequestValidationError):
        exc = _validation_to_gateway(exc)
    elif isinstance(exc, StarletteHTTPException):
        exc = _http_to_gateway(exc)
    elif not isinstance(exc, GatewayError):
        # unexpected: never echo internals (they could hold request data) to the client
        exc = GatewayError("The server had an error while processing your request.")
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def install_error_handler(app: FastAPI) -> None:
    """Register the one handler for gateway, validation and unexpected errors."""
    app.add_exception_handler(GatewayError, _handle)
    app.add_exception_handler(RequestValidationError, _handle)
    app.add_exception_handler(StarletteHTTPException, _handle)  # 404/405 and body errors
    app.add_exception_handler(Exception, _handle)
