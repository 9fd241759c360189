"""OpenAI API shapes (request and response bodies), fields in OpenAI's documented order.

These are API shapes only; database rows live in :mod:`avokit.gateway.db.models`.

Requests are validated here to OpenAI's documented ranges before anything reaches the
engine, and an argument the gateway does not implement is a 400 naming it, never ignored:
unknown fields are forbidden, and known-but-unsupported values (``n > 1``, penalties, ...)
fail their field's validator. Every string must be valid Unicode (a lone UTF-16 surrogate
cannot be tokenised): :data:`Text` checks it and names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from avokit.gateway.protocol_text import (  # noqa: F401 (re-exported)
    INT64_MAX,
    INT64_MIN,
    Penalty,
    Seed,
    Text,
    TokenCount,
)
from avokit.gateway.protocol_tools import (  # noqa: F401 (re-exported)
    FunctionCall,
    FunctionDefinition,
    JSONSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
)

# OpenAI's caps: up to 4 stop sequences; logprobs up to 20 alternatives (eval keys; customer
# keys are capped lower by the serving layer)
MAX_STOP, MAX_TOP_LOGPROBS = 4, 20


def _unsupported(name: str, value: Any, default: Any) -> Any:
    if value is not None and value != default:
        raise ValueError(f"{name}={value!r} is not supported by this server")
    return value


class StreamOptions(BaseModel):
    """``stream_options``: include a final usage chunk."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class _Request(BaseModel):
    # an argument we would ignore is refused instead ("Unrecognized request argument")
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("frequency_penalty", "presence_penalty", check_fields=False)
    @classmethod
    def _no_penalties(cls, value: float | None, info: Any) -> float | None:
        return _unsupported(info.field_name, value, 0.0)

    @field_validator("n", check_fields=False)
    @classmethod
    def _one_choice(cls, value: int) -> int:
        return _unsupported("n", value, 1)

    @field_validator("logit_bias", check_fields=False)
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token in value or {}:
            if not token.isdigit():
                raise ValueError(f"logit_bias keys are token ids, not {token[:20]!r}")
        return value

    @field_validator("stream_options", check_fields=False)
    @classmethod
    def _stream_options_need_stream(cls, value: Any, info: Any) -> Any:
        # ``stream`` is declared before ``stream_options``, so it is validated already
        if value is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream is true")
        return value


class CompletionRequest(_Request):
    """POST /v1/completions."""

    model: Text
    prompt: Text | list[Text] | list[Annotated[int, Field(ge=0, le=2**31 - 1)]]
    best_of: int | None = Field(None, ge=1, le=20)
    echo: bool = False
    frequency_penalty: Penalty | None = None
    logit_bias: dict[Text, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    max_tokens: TokenCount | None = 16
    n: int = Field(1, ge=1, le=128)
    presence_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: Text | Annotated[list[Text], Field(max_length=MAX_STOP)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    suffix: Text | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    user: Annotated[Text, Field(max_length=256)] | None = None
    # vLLM's extension of the legacy endpoint (OpenAI's has none): constrain the text
    response_format: ResponseFormat | None = None

    @field_validator("best_of")
    @classmethod
    def _one_candidate(cls, value: int | None) -> int | None:
        return _unsupported("best_of", value, 1)

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        return _unsupported("suffix", value or None, None)


class ContentPart(BaseModel):
    """A text part of a message (the only kind this text model reads)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    """One chat message (text content only)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Text | list[ContentPart] | None = None
    name: Annotated[Text, Field(max_length=256)] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: Text | None = None

    @field_validator("tool_calls")
    @classmethod
    def _assistant_calls(cls, value: list[ToolCall] | None, info: Any) -> Any:
        if value is not None and info.data.get("role") != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return value

    @field_validator("tool_call_id")
    @classmethod
    def _tool_answers(cls, value: str | None, info: Any) -> Any:
        if value is not None and info.data.get("role") != "tool":
            raise ValueError("only tool messages carry a tool_call_id")
        return value

    def text(self) -> str:
        """The message text, its parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: Text
    frequency_penalty: Penalty | None = None
    logit_bias: dict[Text, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    max_completion_tokens: TokenCount | None = None
    max_tokens: TokenCount | None = None
    n: int = Field(1, ge=1, le=128)
    parallel_tool_calls: bool = True
    presence_penalty: Penalty | None = None
    response_format: ResponseFormat | None = None
    seed: Seed | None = None
    stop: Text | Annotated[list[Text], Field(max_length=MAX_STOP)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    tools: list[Tool] | None = None
    top_p: float = Field(1.0, gt=0, le=1)
    user: Annotated[Text, Field(max_length=256)] | None = None


class Usage(BaseModel):
    """Token usage, present in every response."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """Legacy completions logprobs block."""

    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] | None = None


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "avokit"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error the gateway answers: ``{"error": {...}}``."""

    error: ErrorDetail


# declared on every key-protected route, so the OpenAPI schema lists what can come back
_OK_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "the response object; with stream=true, server-sent events of the "
                         "chunk objects, ending with `data: [DONE]`"},
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = _OK_RESPONSE | {
    status: {"model": ErrorResponse, "description": what} for status, what in [
        (400, "invalid request: names the parameter (context_length_exceeded, ...)"),
        (401, "missing, unknown, revoked or expired key"),
        (402, "the credit does not cover this request's worst case"),
        (403, "a parameter this key may not use"),
        (404, "unknown model, or one this key may not use"),
        (413, "request body over the limit"),
        (429, "rate limit (Retry-After, x-ratelimit-*)"),
        (502, "the generation engine failed (not billed)"),
        (503, "the shared rate-limit store is unreachable"),
    ]}
