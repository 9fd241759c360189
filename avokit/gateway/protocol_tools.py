"""OpenAI API shapes of structured outputs and tool calling (``response_format``, ``tools``,
``tool_choice``, tool calls), fields in OpenAI's documented order; re-exported by
:mod:`avokit.gateway.protocol`, whose request and response bodies use them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from avokit.gateway.protocol_text import Name, Text


class JSONSchemaFormat(BaseModel):
    """``response_format.json_schema``: a named JSON Schema the output must validate against."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: Name
    description: Text | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``response_format``: free text, any JSON object, or JSON matching a schema."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = Field(None, validate_default=True)

    @field_validator("json_schema")
    @classmethod
    def _schema_for_its_type(cls, value: JSONSchemaFormat | None, info: Any) -> Any:
        kind = info.data.get("type")
        if kind == "json_schema" and value is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        if kind != "json_schema" and value is not None:
            raise ValueError(f"json_schema is only allowed when type is 'json_schema', not {kind!r}")
        return value


class FunctionDefinition(BaseModel):
    """A function the model may call; ``parameters`` is the JSON Schema of its arguments."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    """One entry of ``tools``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming the one function to call."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: NamedFunction


class FunctionCall(BaseModel):
    """The function of a tool call; ``arguments`` is a JSON text."""

    name: Text
    arguments: Text


class ToolCall(BaseModel):
    """A call the assistant made (in a response, or sent back in the history)."""

    id: Text
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolCallDelta(BaseModel):
    """A streamed piece of a tool call: id, type and name come with its first piece."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCall | None = None
