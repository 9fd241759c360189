"""POST /v1/completions and POST /v1/chat/completions: one generation path, two shapes.

Both routes check the key, parse and validate the body, tokenise and admit the request in
one worker-thread hop, then hand it and their :class:`_Shape` to :func:`_serve`, which runs
it whole or streamed and bills it.
The shapes only turn engine events into the typed bodies of :mod:`avokit.gateway.protocol`,
which are also the routes' declared ``response_model`` s: the OpenAPI schema is what is sent.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from avokit.gateway.engines.base import Finished, PromptScores, TokenEvent
from avokit.gateway.protocol import (
    ERROR_RESPONSES,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
    Usage,
)
from avokit.gateway.routes.deps import Body, gateway, json_body, parse_body
from avokit.gateway.services import metering, serving, tool_calls
from avokit.gateway.services.keys import KeyInfo
from avokit.gateway.services.serving import Gateway, Prepared

router = APIRouter()


def _usage(prep: Prepared, completion: int) -> Usage:
    prompt = len(prep.params.prompt_ids)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion)


def _legacy_logprobs(events: list[TokenEvent], scores: PromptScores | None, start: int
                     ) -> CompletionLogprobs:
    out = CompletionLogprobs(top_logprobs=[])
    assert out.top_logprobs is not None
    if scores is not None:
        out.tokens += scores.tokens
        out.token_logprobs += scores.logprobs
        out.top_logprobs += scores.top_logprobs
        out.text_offset += scores.offsets
    pos = start
    for ev in events:
        for tok, lp, top in zip(ev.token_strs, ev.logprobs, ev.top_logprobs):
            out.tokens.append(tok)
            out.token_logprobs.append(lp)
            out.top_logprobs.append(top)
            out.text_offset.append(pos)
            pos += len(tok)
    return out


def _chat_logprobs(events: list[TokenEvent]) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[
        TokenLogprob(token=t, logprob=lp, bytes=list(t.encode()), top_logprobs=[
            TopLogprob(token=k, logprob=v, bytes=list(k.encode())) for k, v in top.items()])
        for ev in events for t, lp, top in zip(ev.token_strs, ev.logprobs, ev.top_logprobs)])


class _Shape(abc.ABC):
    """How one endpoint turns engine events into its response bodies."""

    prefix = "cmpl"

    def __init__(self, prep: Prepared) -> None:
        self.prep = prep
        self.id = serving.new_id(self.prefix)
        self.created = serving.now_s()
        self.want_logprobs = prep.params.top_logprobs is not None

    @abc.abstractmethod
    def whole(self, events: list[TokenEvent], fin: Finished, scores: PromptScores | None
              ) -> BaseModel:
        """The non-streamed response."""

    def opening(self) -> list[BaseModel]:
        """Chunks sent before the first token."""
        return []

    @abc.abstractmethod
    def delta(self, ev: TokenEvent) -> list[BaseModel]:
        """The chunks of one engine event (none while it is held back)."""

    @abc.abstractmethod
    def closing(self, fin: Finished) -> list[BaseModel]:
        """The last chunks: anything held back, then the finish reason."""

    @abc.abstractmethod
    def usage_chunk(self, fin: Finished) -> BaseModel:
        """The final usage-only chunk (``stream_options.include_usage``)."""


class _CompletionShape(_Shape):
    prefix = "cmpl"

    def _body(self, choices: list[CompletionChoice], usage: Usage | None = None
              ) -> CompletionResponse:
        return CompletionResponse(id=self.id, created=self.created, model=self.prep.model,
                                  choices=choices, usage=usage)

    def whole(self, events: list[TokenEvent], fin: Finished, scores: PromptScores | None
              ) -> BaseModel:
        echo = self.prep.echo_text
        lp = _legacy_logprobs(events, scores, len(echo)) if self.want_logprobs else None
        text = echo + "".join(e.text for e in events)
        return self._body([CompletionChoice(text=text, logprobs=lp,
                                            finish_reason=fin.finish_reason)],
                          _usage(self.prep, fin.completion_tokens))

    def opening(self) -> list[BaseModel]:
        if not self.prep.echo_text:
            return []
        return [self._body([CompletionChoice(text=self.prep.echo_text)])]

    def delta(self, ev: TokenEvent) -> list[BaseModel]:
        lp = _legacy_logprobs([ev], None, 0) if self.want_logprobs else None
        return [self._body([CompletionChoice(text=ev.text, logprobs=lp)])]

    def closing(self, fin: Finished) -> list[BaseModel]:
        return [self._body([CompletionChoice(text="", finish_reason=fin.finish_reason)])]

    def usage_chunk(self, fin: Finished) -> BaseModel:
        return self._body([], _usage(self.prep, fin.completion_tokens))


class _ChatShape(_Shape):
    """Chat bodies; an answer that may be tool calls is held back while streaming until it is
    known to be text (then sent as content) or ends (then sent as ``tool_calls`` deltas)."""

    prefix = "chatcmpl"

    def __init__(self, prep: Prepared) -> None:
        super().__init__(prep)
        self.held: list[TokenEvent] = []
        self.is_text = prep.tools is None

    def _chunk(self, choices: list[ChatChunkChoice], usage: Usage | None = None
               ) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.prep.model,
                                   choices=choices, usage=usage)

    def whole(self, events: list[TokenEvent], fin: Finished, scores: PromptScores | None
              ) -> BaseModel:
        text = "".join(e.text for e in events)
        calls = tool_calls.parse(text, self.prep.tools) if self.prep.tools else None
        message = (AssistantMessage(tool_calls=calls) if calls else AssistantMessage(content=text))
        lp = _chat_logprobs(events) if self.want_logprobs and not calls else None
        return ChatCompletionResponse(
            id=self.id, created=self.created, model=self.prep.model,
            choices=[ChatChoice(message=message, logprobs=lp, finish_reason=(
                "tool_calls" if calls else fin.finish_reason))],
            usage=_usage(self.prep, fin.completion_tokens))

    def opening(self) -> list[BaseModel]:
        return [self._chunk([ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))])]

    def _content(self, events: list[TokenEvent]) -> BaseModel:
        lp = _chat_logprobs(events) if self.want_logprobs else None
        return self._chunk([ChatChunkChoice(
            delta=ChatDelta(content="".join(e.text for e in events)), logprobs=lp)])

    def delta(self, ev: TokenEvent) -> list[BaseModel]:
        if not self.is_text:
            assert self.prep.tools is not None
            self.held.append(ev)
            if tool_calls.may_be_calls("".join(e.text for e in self.held), self.prep.tools):
                return []
            self.is_text = True
            held, self.held = self.held, []
            return [self._content(held)]
        return [self._content([ev])]

    def closing(self, fin: Finished) -> list[BaseModel]:
        out: list[BaseModel] = []
        reason = fin.finish_reason
        if self.held:
            assert self.prep.tools is not None
            calls = tool_calls.parse("".join(e.text for e in self.held), self.prep.tools)
            if calls:
                reason = "tool_calls"
                out += [self._chunk([ChatChunkChoice(delta=ChatDelta(tool_calls=[ToolCallDelta(
                    index=i, id=c.id, type="function", function=c.function)]))])
                    for i, c in enumerate(calls)]
            else:
                out.append(self._content(self.held))
        return out + [self._chunk([ChatChunkChoice(delta=ChatDelta(),
                                                   finish_reason=reason)])]

    def usage_chunk(self, fin: Finished) -> BaseModel:
        return self._chunk([], _usage(self.prep, fin.completion_tokens))


def _sse(model: BaseModel) -> bytes:
    return b"data: " + model.model_dump_json().encode() + b"\n\n"


async def _serve(gw: Gateway, prep: Prepared, hold: metering.Hold, shape: _Shape) -> Response:
    """Generate whole or streamed, then settle the admitted request: both endpoints."""
    if not prep.stream:
        events, fin, scores = await serving.run_to_end(gw, prep, hold)
        return Response(shape.whole(events, fin, scores).model_dump_json(),
                        media_type="application/json", headers=prep.headers)

    async def body_iter() -> AsyncIterator[bytes]:
        try:
            for chunk in shape.opening():
                yield _sse(chunk)
            async for ev in serving.stream_events(gw, prep, hold):
                if isinstance(ev, Finished):
                    for chunk in shape.closing(ev):
                        yield _sse(chunk)
                    if prep.include_usage:
                        yield _sse(shape.usage_chunk(ev))
                    continue
                for chunk in shape.delta(ev):
                    yield _sse(chunk)
        except Exception as err:  # the status line is gone: report in-band
            yield serving.sse_error(err)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body_iter(), media_type="text/event-stream", headers=prep.headers)


async def _admitted(request: Request, model: type[Body],
                    prepare: Callable[[Gateway, KeyInfo, Body], Prepared]
                    ) -> tuple[Gateway, Prepared, metering.Hold]:
    """Key, body, tokens, limit and reservation of one request, in one worker-thread hop."""
    gw = gateway(request)
    authorization, raw = request.headers.get("authorization"), await request.body()

    def work() -> Prepared:
        key = gw.key_for(authorization)  # first: a caller without a key learns nothing more
        return prepare(gw, key, parse_body(model, raw))

    prep, hold = await serving.prepare_and_admit(gw, work)
    return gw, prep, hold


@router.post("/v1/completions", response_model=CompletionResponse, responses=ERROR_RESPONSES,
             openapi_extra=json_body(CompletionRequest))
async def completions(request: Request) -> Response:
    """Text completion; echo + logprobs for eval keys; streaming with usage."""
    gw, prep, hold = await _admitted(request, CompletionRequest, serving.prepare_completion)
    return await _serve(gw, prep, hold, _CompletionShape(prep))


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses=ERROR_RESPONSES, openapi_extra=json_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    """Chat completion rendered with the model's chat template; streaming with usage."""
    gw, prep, hold = await _admitted(request, ChatCompletionRequest, serving.prepare_chat)
    return await _serve(gw, prep, hold, _ChatShape(prep))
