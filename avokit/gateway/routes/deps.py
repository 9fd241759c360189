"""What routes share: the gateway state, the authenticated key, and typed request bodies."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from avokit.gateway.errors import BadRequestError
from avokit.gateway.services.keys import KeyInfo
from avokit.gateway.services.serving import Gateway

Body = TypeVar("Body", bound=BaseModel)
COMPONENT_REF = "#/components/schemas/"
# Deepest JSON nesting accepted in a request body (OpenAI bodies, JSON schemas of tools and
# response formats included, stay far below it); deeper is a 400, found without recursion.
MAX_JSON_DEPTH = 64


def _too_deep(raw: bytes, data: Any) -> bool:
    """Whether ``data`` (parsed from ``raw``) nests deeper than :data:`MAX_JSON_DEPTH`."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:  # the usual body: no walk at all
        return False
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:  # an explicit stack: the attacker's depth never becomes ours
        node, depth = stack.pop()
        children = (node.values() if isinstance(node, dict) else node
                    if isinstance(node, list) else ())
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_JSON_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def gateway(request: Request) -> Gateway:
    """The process's gateway state."""
    return request.app.state.gateway


async def current_key(request: Request, authorization: str | None = Header(None)) -> KeyInfo:
    """The caller's key; raises the one 401 otherwise."""
    return await gateway(request).authenticate(authorization)


def parse_body(model: type[Body], raw: bytes) -> Body:
    """``raw`` JSON as ``model``, with FastAPI's body errors (blocking: call it in a thread).

    The generation routes read their body themselves so that the key check, this parse and
    the rest of the request's blocking work share one worker-thread hop; the errors are the
    ones FastAPI raises for a declared body, so the one handler answers them the same way.
    """
    too_deep = BadRequestError(f"request body nests JSON more than {MAX_JSON_DEPTH} levels "
                               "deep", code="invalid_json")
    try:
        data = json.loads(raw)  # as FastAPI: lone surrogates parse, and their field is named
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both are
        raise BadRequestError("request body is not valid JSON", code="invalid_json") from err
    except RecursionError:  # the C decoder stops at the interpreter's recursion limit
        raise too_deep from None
    if _too_deep(raw, data):
        raise too_deep
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)],
            body=data) from err


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the required JSON body and the optional
    ``Authorization`` header: what FastAPI lists for a declared body and ``Header`` parameter.

    The schema's ``$defs`` are moved to ``components`` by the app's schema builder.
    """
    schema = model.model_json_schema(ref_template=COMPONENT_REF + "{model}")
    return {
        "parameters": [{"name": "authorization", "in": "header", "required": False,
                        "schema": {"anyOf": [{"type": "string"}, {"type": "null"}],
                                   "title": "Authorization"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
    }

