"""POST /v1/completions and POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from avokit.gateway.engines.base import Finished, PromptScores, TokenEvent
from avokit.gateway.protocol import ChatCompletionRequest, CompletionRequest
from avokit.gateway.routes.deps import current_key, gateway
from avokit.gateway.services import serving
from avokit.gateway.services.keys import KeyInfo

router = APIRouter()


def _legacy_logprobs(events: list[TokenEvent], scores: PromptScores | None, start: int
                     ) -> dict[str, Any]:
    tokens: list[str] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    if scores is not None:
        tokens += scores.tokens
        lps += scores.logprobs
        tops += scores.top_logprobs
        offsets += scores.offsets
    pos = start
    for ev in events:
        for tok, lp, top in zip(ev.token_strs, ev.logprobs, ev.top_logprobs):
            tokens.append(tok)
            lps.append(lp)
            tops.append(top)
            offsets.append(pos)
            pos += len(tok)
    return {"text_offset": offsets, "token_logprobs": lps, "tokens": tokens, "top_logprobs": tops}


def _chat_logprobs(ev: TokenEvent) -> dict[str, Any]:
    return {"content": [
        {"token": t, "logprob": lp, "bytes": list(t.encode()),
         "top_logprobs": [{"token": k, "logprob": v, "bytes": list(k.encode())}
                          for k, v in top.items()]}
        for t, lp, top in zip(ev.token_strs, ev.logprobs, ev.top_logprobs)]}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request,
                      key: KeyInfo = Depends(current_key)) -> Any:
    """Text completion; echo + logprobs for eval keys; streaming with usage."""
    gw = gateway(request)
    # tokenising is CPU work: in a thread, so one long prompt never stalls other requests
    prep = await run_in_threadpool(serving.prepare_completion, gw, key, body)
    hold = await serving.admit(gw, prep)
    rid, created = serving.new_id("cmpl"), serving.now_s()
    n_prompt = len(prep.params.prompt_ids)
    want_lp = prep.params.top_logprobs is not None

    if not prep.stream:
        events, fin, scores = await serving.run_to_end(gw, prep, hold)
        text = prep.echo_text + "".join(e.text for e in events)
        choice = {"text": text, "index": 0,
                  "logprobs": _legacy_logprobs(events, scores, len(prep.echo_text))
                  if want_lp else None,
                  "finish_reason": fin.finish_reason}
        return JSONResponse({"id": rid, "object": "text_completion", "created": created,
                             "model": prep.model, "choices": [choice],
                             "usage": serving.usage_dict(n_prompt, fin.completion_tokens)},
                            headers=prep.headers)

    async def body_iter() -> AsyncIterator[bytes]:
        base = {"id": rid, "object": "text_completion", "created": created, "model": prep.model}
        try:
            if prep.echo_text:
                yield serving.sse({**base, "choices": [{"text": prep.echo_text, "index": 0,
                                                        "logprobs": None, "finish_reason": None}]})
            async for ev in serving.stream_events(gw, prep, hold):
                if isinstance(ev, Finished):
                    yield serving.sse({**base, "choices": [{"text": "", "index": 0,
                                       "logprobs": None, "finish_reason": ev.finish_reason}]})
                    if prep.include_usage:
                        yield serving.sse({**base, "choices": [], "usage":
                                           serving.usage_dict(n_prompt, ev.completion_tokens)})
                    continue
                lp = _legacy_logprobs([ev], None, 0) if want_lp else None
                yield serving.sse({**base, "choices": [{"text": ev.text, "index": 0,
                                                        "logprobs": lp, "finish_reason": None}]})
        except Exception as err:  # the status line is gone: report in-band
            yield serving.sse_error(err)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body_iter(), media_type="text/event-stream", headers=prep.headers)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           key: KeyInfo = Depends(current_key)) -> Any:
    """Chat completion rendered with the model's chat template; streaming with usage."""
    gw = gateway(request)
    prep = await run_in_threadpool(serving.prepare_chat, gw, key, body)
    hold = await serving.admit(gw, prep)
    rid, created = serving.new_id("chatcmpl"), serving.now_s()
    n_prompt = len(prep.params.prompt_ids)
    want_lp = prep.params.top_logprobs is not None

    if not prep.stream:
        events, fin, _ = await serving.run_to_end(gw, prep, hold)
        logprobs = None
        if want_lp:
            logprobs = {"content": [c for e in events for c in _chat_logprobs(e)["content"]]}
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": created, "model": prep.model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "".join(e.text for e in events)},
                         "logprobs": logprobs, "finish_reason": fin.finish_reason}],
            "usage": serving.usage_dict(n_prompt, fin.completion_tokens)}, headers=prep.headers)

    async def body_iter() -> AsyncIterator[bytes]:
        base = {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": prep.model}
        try:
            yield serving.sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                               "content": ""}, "logprobs": None, "finish_reason": None}]})
            async for ev in serving.stream_events(gw, prep, hold):
                if isinstance(ev, Finished):
                    yield serving.sse({**base, "choices": [{"index": 0, "delta": {},
                                       "logprobs": None, "finish_reason": ev.finish_reason}]})
                    if prep.include_usage:
                        yield serving.sse({**base, "choices": [], "usage":
                                           serving.usage_dict(n_prompt, ev.completion_tokens)})
                    continue
                yield serving.sse({**base, "choices": [{
                    "index": 0, "delta": {"content": ev.text},
                    "logprobs": _chat_logprobs(ev) if want_lp else None, "finish_reason": None}]})
        except Exception as err:  # the status line is gone: report in-band
            yield serving.sse_error(err)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body_iter(), media_type="text/event-stream", headers=prep.headers)
