"""An upstream vLLM OpenAI server as the generation engine (GPU scale).

The gateway tokenises the prompt (and applies the chat template) with the model's own
tokenizer from the registry, then sends the token ids to the upstream ``/v1/completions``,
so keys, limits, metering and model-stealing guards are identical to the in-process engine.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import httpx

from avokit.gateway.engines.base import (
    Finished,
    GenParams,
    PromptScores,
    ServedModel,
    TokenEvent,
    load_tokenizer,
)
from avokit.gateway.errors import NotFoundError, UpstreamError


class VLLMEngine:
    """Streams completions from an OpenAI-compatible upstream over one pooled HTTP client."""

    def __init__(self, models: dict[str, ServedModel], upstream: str, timeout_s: float = 600.0):
        self.models = models
        self.base = upstream.rstrip("/")
        if not self.base.endswith("/v1"):
            self.base += "/v1"
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=256),
        )
        self._tokenizers: dict[str, Any] = {}

    def tokenizer(self, model: str) -> Any:
        """The registry tokenizer of ``model``."""
        if model not in self.models:
            raise NotFoundError(f"The model {model!r} does not exist.", param="model")
        if model not in self._tokenizers:
            self._tokenizers[model] = load_tokenizer(self.models[model].path)
        return self._tokenizers[model]

    def _body(self, model: str, params: GenParams, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model, "prompt": params.prompt_ids, "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p, "stream": stream,
        }
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed
        if params.top_logprobs is not None:
            body["logprobs"] = params.top_logprobs
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def generate(self, model: str, params: GenParams) -> AsyncIterator[TokenEvent | Finished]:
        """Relay the upstream SSE stream as token events; upstream usage is authoritative."""
        sent = 0
        finish = "length"
        usage_tokens: int | None = None
        try:
            async with self.client.stream("POST", f"{self.base}/completions",
                                          json=self._body(model, params, True)) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread()).decode(errors="replace")[:300]
                    raise UpstreamError(f"upstream answered {resp.status_code}: {detail}")
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage_tokens = int(chunk["usage"].get("completion_tokens", sent))
                    for choice in chunk.get("choices") or []:
                        event = _event(choice)
                        sent += event.tokens
                        yield event
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except httpx.HTTPError as err:
            raise UpstreamError(f"upstream request failed: {type(err).__name__}") from err
        yield Finished(finish if finish in ("stop", "length") else "stop",
                       usage_tokens if usage_tokens is not None else sent)

    async def score_prompt(self, model: str, prompt_ids: list[int], top: int) -> PromptScores:
        """vLLM's echo + logprobs with max_tokens=0."""
        body = {"model": model, "prompt": prompt_ids, "max_tokens": 0, "echo": True,
                "logprobs": max(top, 0), "temperature": 0}
        try:
            resp = await self.client.post(f"{self.base}/completions", json=body)
        except httpx.HTTPError as err:
            raise UpstreamError(f"upstream request failed: {type(err).__name__}") from err
        if resp.status_code != 200:
            raise UpstreamError(f"upstream answered {resp.status_code} to a scoring request")
        lp = resp.json()["choices"][0]["logprobs"]
        return PromptScores(lp["tokens"], lp["token_logprobs"], lp.get("top_logprobs")
                            or [None] * len(lp["tokens"]), lp.get("text_offset") or [])

    async def aclose(self) -> None:
        """Close the HTTP pool."""
        await self.client.aclose()


def _event(choice: dict[str, Any]) -> TokenEvent:
    lp = choice.get("logprobs") or None
    if lp and lp.get("tokens") is not None:
        return TokenEvent(text=choice.get("text") or "", tokens=len(lp["tokens"]),
                          token_strs=list(lp["tokens"]),
                          logprobs=[float(x) for x in lp["token_logprobs"]],
                          top_logprobs=list(lp.get("top_logprobs") or []))
    text = choice.get("text") or ""
    # vLLM streams one token per chunk; an empty final chunk carries no token
    return TokenEvent(text=text, tokens=1 if text else 0)
