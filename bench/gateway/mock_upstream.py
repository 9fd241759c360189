"""A mock OpenAI-compatible upstream (the role vLLM plays) that answers instantly.

Used by the gateway benchmark (same upstream for avokit and LiteLLM) and by the gateway
tests (slow streaming for kill -9, a mid-stream failure). Behaviour from the environment:
MOCK_TOKENS (completion tokens per answer, default 8; capped by max_tokens), MOCK_DELAY_S
(sleep between streamed chunks, default 0), MOCK_CHUNK_TOKENS (tokens per streamed chunk,
default 1). Like vLLM, ``stream_options.continuous_usage_stats`` puts the running usage in
every chunk. A request with max_tokens == 13 breaks the
connection after 3 streamed tokens (to test errors after a stream started). A request with
vLLM's ``structured_outputs`` field answers with that field echoed as JSON,
``{"structured_outputs": ...}`` (one piece per token), so the gateway tests can check
what was passed through.

Run: python -m bench.gateway.mock_upstream PORT
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TOKENS = int(os.environ.get("MOCK_TOKENS", "8"))
DELAY = float(os.environ.get("MOCK_DELAY_S", "0"))
CHUNK = int(os.environ.get("MOCK_CHUNK_TOKENS", "1"))


def _n_prompt(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    prompt = body.get("prompt", "")
    return len(prompt) if isinstance(prompt, list) else len(str(prompt).split())


async def _answer(request: Request) -> Response:
    body = await request.json()
    chat = request.url.path.endswith("/chat/completions")
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or TOKENS
    n = min(TOKENS, int(max_tokens))
    usage = {"prompt_tokens": _n_prompt(body), "completion_tokens": n,
             "total_tokens": _n_prompt(body) + n}
    base = {"id": "mock-1", "created": int(time.time()), "model": body.get("model", "m")}
    pieces = ["tok "] * n
    finish = "length"
    if "structured_outputs" in body:
        echo = json.dumps({"structured_outputs": body["structured_outputs"]})
        pieces, finish = [echo[i:i + 8] for i in range(0, len(echo), 8)], "stop"
        n = len(pieces)
        usage = {**usage, "completion_tokens": n, "total_tokens": usage["prompt_tokens"] + n}
    if not body.get("stream"):
        if chat:
            return JSONResponse({**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                "finish_reason": finish}], "usage": usage})
        return JSONResponse({**base, "object": "text_completion", "choices": [{
            "index": 0, "text": "".join(pieces), "logprobs": None, "finish_reason": finish}],
            "usage": usage})

    continuous = bool((body.get("stream_options") or {}).get("continuous_usage_stats"))

    def running(done: int) -> dict[str, Any]:
        if not continuous:
            return {}
        return {"usage": {**usage, "completion_tokens": done,
                          "total_tokens": usage["prompt_tokens"] + done}}

    async def events() -> AsyncIterator[bytes]:
        for i in range(0, n, CHUNK):
            if DELAY:
                await asyncio.sleep(DELAY)
            if int(max_tokens) == 13 and i == 3:
                raise RuntimeError("mock upstream breaks the stream on purpose")
            text = "".join(pieces[i:i + CHUNK])
            choice = ({"index": 0, "delta": {"content": text}, "finish_reason": None} if chat
                      else {"index": 0, "text": text, "logprobs": None, "finish_reason": None})
            payload = {**base, "choices": [choice], **running(min(i + CHUNK, n))}
            yield f"data: {json.dumps(payload)}\n\n".encode()
        last = ({"index": 0, "delta": {}, "finish_reason": finish} if chat
                else {"index": 0, "text": "", "logprobs": None, "finish_reason": finish})
        yield f"data: {json.dumps({**base, 'choices': [last]})}\n\n".encode()
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def _models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "avo-tiny", "object": "model"}]})


app = Starlette(routes=[
    Route("/v1/completions", _answer, methods=["POST"]),
    Route("/v1/chat/completions", _answer, methods=["POST"]),
    Route("/v1/models", _models, methods=["GET"]),
])

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
