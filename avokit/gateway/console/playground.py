"""The playground: chat with a released model as the signed-in key, streamed.

The browser never holds the key: it posts to ``/console/api/chat`` with its session cookie and
CSRF header, and the request runs the API's own pipeline (:mod:`avokit.gateway.services.serving`:
the key's model and parameter checks, rate limits, the credit reservation, settlement) as that
key. Each answer ends with its token counts and the amount the ledger charged for it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from avokit.gateway.console import web
from avokit.gateway.console.auth import Principal
from avokit.gateway.engines.base import Finished
from avokit.gateway.protocol import ChatCompletionRequest, ChatMessage, ResponseFormat
from avokit.gateway.services import serving, usage

router = APIRouter()


class PlaygroundChat(BaseModel):
    """What the playground sends: the conversation and the sampling controls."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(64, ge=1, le=2**31 - 1)
    json_mode: bool = False  # response_format json_object: the answer is decoded as JSON


def model_caps(request: Request, who: Principal) -> list[dict[str, Any]]:
    """The models this key may use, with its price and the largest answer it may ask for."""
    gw = web.gw(request)
    assert who.key is not None
    out = []
    for name, served in sorted(gw.models.items()):
        price = who.key.price(name)
        if not who.key.may_use(name) or price is None:
            continue
        out.append({"name": name, "price_in": price[0], "price_out": price[1],
                    # the prompt needs at least one token; tpm bounds a single request too
                    "max_tokens": max(1, min(served.context_length - 1, who.key.tpm))})
    return out


@router.get("/console/playground", response_class=HTMLResponse)
def playground(request: Request, who: web.Customer) -> Response:
    """The chat page."""
    return web.render(request, "playground.html", who, models=model_caps(request, who))


async def _chat_post(request: Request) -> tuple[Principal, PlaygroundChat]:
    """The signed-in customer (CSRF header checked) and the validated body."""
    who = await run_in_threadpool(web.customer, request)
    web.state(request).sessions.check_csrf(who.token, request.headers.get("x-csrf-token"))
    try:
        return who, PlaygroundChat.model_validate_json(await request.body())
    except ValidationError as err:  # the API's 400 naming the field
        raise RequestValidationError(err.errors()) from None


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


@router.post("/console/api/chat")
async def chat(request: Request,
               checked: Annotated[tuple[Principal, PlaygroundChat], Depends(_chat_post)]
               ) -> Response:
    """Stream one answer as server-sent events: ``delta`` events, then ``done`` with the token
    counts and the charge (or ``error``). Errors before the first token are the API's own."""
    who, body = checked
    gw = web.gw(request)
    assert who.key is not None
    req = ChatCompletionRequest(model=body.model, messages=body.messages, stream=True,
                                temperature=body.temperature, top_p=body.top_p,
                                max_tokens=body.max_tokens,
                                response_format=ResponseFormat(type="json_object") if body.json_mode
                                else None)
    key = who.key
    prep, hold = await serving.prepare_and_admit(gw, lambda: serving.prepare_chat(gw, key, req))

    async def events() -> AsyncIterator[bytes]:
        finished = Finished("length", 0)
        try:
            async for ev in serving.stream_events(gw, prep, hold):
                if isinstance(ev, Finished):
                    finished = ev
                else:
                    yield _event({"type": "delta", "text": ev.text})
        except Exception as err:  # the status line is gone: report in-band
            yield _event({"type": "error", "message": getattr(err, "message", "server error")})
            return
        # stream_events settled the reservation before ending: read what the ledger charged
        charged = await run_in_threadpool(usage.charge_of, gw.db, hold.id)
        yield _event({"type": "done", "finish_reason": finished.finish_reason,
                      "prompt_tokens": len(prep.params.prompt_ids),
                      "completion_tokens": finished.completion_tokens,
                      "cost_micros": charged})

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={**prep.headers, "Cache-Control": "no-store"})
