"""The request pipeline shared by /v1/completions and /v1/chat/completions.

authenticate -> model and scope checks -> model-stealing guards -> tokenise -> size checks
-> rate limit -> reserve worst case (ledger row exists before the engine runs) -> generate
-> persist delivered tokens while streaming -> settle real usage exactly once.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy import Engine as Database
from starlette.concurrency import run_in_threadpool

from avokit.gateway import requestid
from avokit.gateway.engines.base import Engine, Finished, GenParams, ServedModel, TokenEvent
from avokit.gateway.errors import (
    BadRequestError,
    GatewayError,
    InsufficientCreditError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from avokit.gateway.grammars import (
    GrammarCompiler,
    GrammarSpec,
    ToolMode,
    response_format_spec,
    tool_mode,
    tools_spec,
)
from avokit.gateway.metrics import GatewayMetrics
from avokit.gateway.protocol import ChatCompletionRequest, CompletionRequest
from avokit.gateway.services import keys, metering, prompts, tool_calls
from avokit.gateway.services.ratelimit import Limiter
from avokit.gateway.services.spendcaps import SpendCapExceededError

# Customer keys may see at most this many alternatives per token (model-stealing guard).
CUSTOMER_MAX_TOP_LOGPROBS = 5


@dataclass
class Gateway:
    """Process-wide state handed to the routes (built by ``create_app``, never at import)."""

    secret: str
    db: Database
    engine: Engine
    models: dict[str, ServedModel]
    limiter: Limiter
    max_tokens_default: int
    owner: str | None = None  # this process's lease id: its reservations name it
    metrics: GatewayMetrics | None = None
    grammars: GrammarCompiler = field(default_factory=GrammarCompiler)

    async def authenticate(self, authorization: str | None) -> keys.KeyInfo:
        """:meth:`key_for` in a worker thread (it reads the database)."""
        return await run_in_threadpool(self.key_for, authorization)

    def key_for(self, authorization: str | None) -> keys.KeyInfo:
        """Key from an ``Authorization: Bearer`` header value; any failure is the one 401
        (blocking: one database read)."""
        token = None
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        return keys.authenticate_request(self.db, self.secret, token)


@dataclass
class Prepared:
    """A validated, tokenised request, ready to reserve and dispatch."""

    key: keys.KeyInfo
    model: str
    params: GenParams
    stream: bool
    include_usage: bool
    echo_text: str = ""
    echo_scores: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    tools: ToolMode | None = None  # the answer may be tool calls


def _check_model(gw: Gateway, key: keys.KeyInfo, model: str) -> None:
    # unknown, not allowed for this key, or without a price for it: one identical 404, so a
    # key learns nothing about the models served to others, and nothing is served for free
    if model not in gw.models or not key.may_use(model):
        raise ModelNotFoundError(model)


def _guard_logit_bias(key: keys.KeyInfo, logit_bias: dict[str, float] | None) -> None:
    if not logit_bias:
        return
    if key.scope == "customer":
        raise PermissionDeniedError("logit_bias is not available to this key.",
                                    param="logit_bias")
    # the engines do not apply it: refusing beats answering as if it had been applied
    raise BadRequestError("logit_bias is not supported by this server.", param="logit_bias")


def _stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _size(gw: Gateway, model: str, n_prompt: int, max_tokens: int | None, field_name: str,
          prompt_param: str) -> int:
    ctx = gw.models[model].context_length
    if n_prompt >= ctx:
        raise BadRequestError(
            f"{prompt_param}: {n_prompt} tokens is too long for {model!r} "
            f"(context length {ctx}).", param=prompt_param, code="context_length_exceeded")
    room = ctx - n_prompt
    if max_tokens is None:
        return min(gw.max_tokens_default, room)
    if max_tokens > room:
        raise BadRequestError(
            f"{field_name}: {max_tokens} is too large; the prompt uses {n_prompt} of {ctx} "
            f"tokens, so at most {room} can be generated.", param=field_name,
            code="context_length_exceeded")
    return max_tokens


def _prompt_ids(gw: Gateway, model: str, tok: Any, prompt: Any) -> tuple[list[int], str]:
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) != 1:
            raise BadRequestError("prompt: send one prompt per request", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        prompts.check_fits(tok, prompt, gw.models[model].context_length, "prompt")
        return prompts.encode_text(tok, prompt), prompt
    ids = [int(t) for t in prompt]
    ctx = gw.models[model].context_length
    if len(ids) >= ctx:  # before decoding them for echo: that would cost time for nothing
        raise BadRequestError(f"prompt: {len(ids)} tokens is too long for {model!r} (context "
                              f"length {ctx}).", param="prompt", code="context_length_exceeded")
    if any(t < 0 or t >= len(tok) for t in ids):
        raise BadRequestError("prompt: token id out of the vocabulary", param="prompt")
    return ids, tok.decode(ids)


def prepare_completion(gw: Gateway, key: keys.KeyInfo, req: CompletionRequest) -> Prepared:
    """Validate and tokenise a /v1/completions request (blocking: call it in a thread)."""
    _check_model(gw, key, req.model)
    _guard_logit_bias(key, req.logit_bias)
    if key.scope == "customer":
        if req.echo and req.logprobs is not None:
            raise PermissionDeniedError("echo with logprobs is available to eval keys only.",
                                        param="echo")
        if req.logprobs is not None and req.logprobs > CUSTOMER_MAX_TOP_LOGPROBS:
            raise PermissionDeniedError(
                f"logprobs is capped at {CUSTOMER_MAX_TOP_LOGPROBS} for this key.", param="logprobs")
    tok = gw.engine.tokenizer(req.model)
    ids, echo_text = _prompt_ids(gw, req.model, tok, req.prompt)
    if not ids:
        raise BadRequestError("prompt: must not be empty", param="prompt")
    max_tokens = _size(gw, req.model, len(ids), req.max_tokens, "max_tokens", "prompt")
    spec = response_format_spec(req.response_format, "response_format", gw.grammars.limits)
    params = GenParams(ids, max_tokens, req.temperature, req.top_p, _stop_list(req.stop),
                       req.logprobs, req.seed, _constraint(gw, req.model, tok, spec))
    return Prepared(key, req.model, params, req.stream,
                    bool(req.stream_options and req.stream_options.include_usage),
                    echo_text=echo_text if req.echo else "",
                    echo_scores=req.echo and req.logprobs is not None)


def prepare_chat(gw: Gateway, key: keys.KeyInfo, req: ChatCompletionRequest) -> Prepared:
    """Validate a chat request and render it with the model's own chat template (blocking)."""
    _check_model(gw, key, req.model)
    _guard_logit_bias(key, req.logit_bias)
    if key.scope == "customer":
        if req.top_logprobs is not None and req.top_logprobs > CUSTOMER_MAX_TOP_LOGPROBS:
            raise PermissionDeniedError(
                f"top_logprobs is capped at {CUSTOMER_MAX_TOP_LOGPROBS} for this key.",
                param="top_logprobs")
    if req.top_logprobs is not None and not req.logprobs:
        raise BadRequestError("top_logprobs requires logprobs: true", param="top_logprobs")
    tok = gw.engine.tokenizer(req.model)
    if not getattr(tok, "chat_template", None):
        raise BadRequestError(f"model {req.model!r} has no chat template; use /v1/completions",
                              param="model")
    limits = gw.grammars.limits
    mode = tool_mode(req.tools, req.tool_choice, req.parallel_tool_calls, limits)
    spec = response_format_spec(req.response_format, "response_format", limits)
    if mode is not None:
        if spec is not None:  # its own compile first: a bad schema is a 400 naming its field
            _constraint(gw, req.model, tok, spec)
        spec = tools_spec(mode, limits, answer=spec)
    messages, template_kwargs = tool_calls.render(tok, req.messages, req.tools)
    prompts.check_fits(tok, "".join(m["content"] for m in messages),
                       gw.models[req.model].context_length, "messages")
    ids = prompts.encode_chat(tok, messages, **template_kwargs)
    wanted = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    field_name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    max_tokens = _size(gw, req.model, len(ids), wanted, field_name, "messages")
    top = (req.top_logprobs or 0) if req.logprobs else None
    params = GenParams(ids, max_tokens, req.temperature, req.top_p, _stop_list(req.stop), top,
                       req.seed, _constraint(gw, req.model, tok, spec))
    return Prepared(key, req.model, params, req.stream,
                    bool(req.stream_options and req.stream_options.include_usage), tools=mode)


def _constraint(gw: Gateway, model: str, tok: Any, spec: GrammarSpec | None) -> Any:
    return None if spec is None else gw.grammars.constraint(model, tok, spec)


def _refusal_kind(err: GatewayError) -> str | None:
    """The ``kind`` label of a refused admission (None: not a refusal)."""
    if isinstance(err, RateLimitError):
        return f"rate_limit_{err.limit}"
    if isinstance(err, SpendCapExceededError):
        return "spend_cap"
    if isinstance(err, InsufficientCreditError):
        return "credit"
    if isinstance(err, ServiceUnavailableError):
        return "limits_unavailable"
    return None


def _check_tpm(prep: Prepared, worst_tokens: int) -> None:
    # a request larger than the key's whole minute can never be admitted: a 429 would have
    # the client retry it forever
    if worst_tokens > prep.key.tpm:
        raise BadRequestError(
            f"max_tokens: this request may use up to {worst_tokens} tokens (prompt + "
            f"max_tokens), more than this key's limit of {prep.key.tpm} tokens per minute; "
            "lower max_tokens or shorten the prompt.", param="max_tokens",
            code="tokens_per_minute_exceeded")


def admit(gw: Gateway, prep: Prepared, request_id: str | None = None) -> metering.Hold:
    """Rate limit, then reserve the worst case in the database against the account's credit
    and the key's spend cap (blocking; 402 if it does not fit).

    The limit comes first: a key over its limit costs no database write.
    """
    worst_tokens = len(prep.params.prompt_ids) + prep.params.max_tokens
    _check_tpm(prep, worst_tokens)
    price = prep.key.price(prep.model)
    if price is None:  # may_use() already refused it; never fall through to a free request
        raise ModelNotFoundError(prep.model)
    price_in, price_out = price
    try:
        prep.headers = gw.limiter.check(prep.key.id, prep.key.rpm, prep.key.tpm, worst_tokens)
        hold = metering.reserve(
            gw.db, account_id=prep.key.account_id, key_id=prep.key.id, model=prep.model,
            prompt_tokens=len(prep.params.prompt_ids), max_tokens=prep.params.max_tokens,
            price_in=price_in, price_out=price_out, owner=gw.owner, request_id=request_id,
            cap=prep.key.spend_cap)
    except GatewayError as err:
        kind = _refusal_kind(err)
        if gw.metrics is not None and kind is not None:
            gw.metrics.refused(kind)
        raise
    if gw.metrics is not None:
        gw.metrics.open_reservations.inc()
    return hold


async def prepare_and_admit(gw: Gateway, prepare: Callable[[], Prepared]
                            ) -> tuple[Prepared, metering.Hold]:
    """``prepare()`` (the API routes: check the key, parse and validate the body, tokenise),
    then :func:`admit`, in one worker thread.

    All of it blocks (database reads and a write, CPU, a Redis round trip): one hop off the
    event loop for all of it, so no prompt stalls other requests and no extra thread handoff
    is paid (each costs a thread wake-up and a return to the loop).
    The hop is not abandoned on cancellation, so a reservation made is always returned.
    """
    request_id = requestid.current()

    def work() -> tuple[Prepared, metering.Hold]:
        prep = prepare()
        requestid.note_model(prep.model)
        return prep, admit(gw, prep, request_id)

    if gw.metrics is None:
        return await run_in_threadpool(work)
    gw.metrics.waiting.inc()
    try:
        return await run_in_threadpool(work)
    finally:
        gw.metrics.waiting.dec()


async def _settle(gw: Gateway, hold: metering.Hold, completion: int) -> None:
    # shielded: a client disconnect cancels the request task, but billing must still happen
    with anyio.CancelScope(shield=True):
        charge = await run_in_threadpool(metering.settle_hold, gw.db, hold, completion)
    if gw.metrics is not None:
        gw.metrics.open_reservations.dec()
        if charge is not None:  # exactly what the ledger row says; None: settled elsewhere
            gw.metrics.billed(hold.model, hold.account_id, hold.prompt_tokens, completion,
                              charge)


async def _release(gw: Gateway, hold: metering.Hold) -> None:
    # the engine failed this request: the customer pays nothing for it
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(metering.release, gw.db, hold)
    if gw.metrics is not None:
        gw.metrics.open_reservations.dec()
        gw.metrics.engine_failed(hold.model)


async def run_to_end(gw: Gateway, prep: Prepared, hold: metering.Hold
                     ) -> tuple[list[TokenEvent], Finished, Any]:
    """Non-streaming: one engine call for the whole answer, then settle.

    Nothing reaches the client before the answer is complete, so a failed generation is
    not billed at all: its reservation is released.
    """
    running = gw.metrics.in_engine if gw.metrics is not None else contextlib.nullcontext()
    try:
        with running:
            scores = None
            if prep.echo_scores:
                scores = await gw.engine.score_prompt(prep.model, prep.params.prompt_ids,
                                                      prep.params.top_logprobs or 0)
            events, finished = await gw.engine.complete(prep.model, prep.params)
    except Exception:
        await _release(gw, hold)
        raise
    except BaseException:  # cancelled (client gone): nothing was delivered, bill the prompt
        await _settle(gw, hold, 0)
        raise
    await _settle(gw, hold, finished.completion_tokens)
    return events, finished, scores


async def stream_events(gw: Gateway, prep: Prepared, hold: metering.Hold
                        ) -> AsyncIterator[TokenEvent | Finished]:
    """Streaming: persist the delivered count after each event; settle whatever happens.

    An engine failure releases the reservation (a failed request is never billed); a client
    that goes away is billed for what it was sent.
    """
    delivered = 0
    failed = False
    timer = gw.metrics.stream_timer(prep.model) if gw.metrics is not None else None
    running = gw.metrics.in_engine if gw.metrics is not None else contextlib.nullcontext()
    try:
        with running:
            async for ev in _timed(gw.engine.generate(prep.model, prep.params), timer):
                if isinstance(ev, Finished):
                    delivered = ev.completion_tokens
                    yield ev
                    return
                delivered += ev.tokens
                yield ev
                # after the client was handed the event: a crash now bills what it received
                await run_in_threadpool(metering.mark_delivered, gw.db, hold.id, delivered)
    except Exception:
        failed = True
        raise
    finally:
        await (_release(gw, hold) if failed else _settle(gw, hold, delivered))


async def _timed(events: AsyncIterator[TokenEvent | Finished], timer: Any
                 ) -> AsyncIterator[TokenEvent | Finished]:
    # the engine's own pace, before the gateway writes or sends anything
    async for ev in events:
        if timer is not None and isinstance(ev, TokenEvent):
            timer.event(ev.tokens)
        yield ev


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def sse_error(err: Exception) -> bytes:
    """An error after the stream started, as an SSE error event (OpenAI's error shape)."""
    if not isinstance(err, GatewayError):
        err = GatewayError("The server had an error while processing your request.")
    return sse(err.body())


def new_id(prefix: str) -> str:
    """Response id."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now_s() -> int:
    """Unix time for ``created``."""
    return int(time.time())
