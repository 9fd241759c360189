"""Tool calling for students without a tool-calling chat template: prompt in, calls out.

Into the prompt: a chat template that reads ``tools`` (and assistant ``tool_calls``) gets them
as the template expects. Any other template gets the tools as a system message that shows the
call format, and earlier calls are written back into their assistant turn in that same format:
:data:`~avokit.gateway.grammars.CALL_MARKER` and a JSON array of ``{"name", "arguments"}``.
``tool`` messages keep their role and content.

Out of the answer: under ``required`` or a named function the whole answer is that array
(decoded under its grammar, so it parses); under ``auto`` an answer that starts with the marker
is calls, anything else is text. Calls get ids ``call_<hex>`` and their arguments as JSON text.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from avokit.gateway.grammars import CALL_MARKER, ToolMode
from avokit.gateway.protocol import ChatMessage
from avokit.gateway.protocol_tools import FunctionCall, Tool, ToolCall

_INSTRUCTIONS = ("Functions:\n{tools}\nTo call: " + CALL_MARKER
                 + '[{{"name":NAME,"arguments":{{...}}}}]')


def _template_reads(tok: Any, word: str) -> bool:
    return word in (getattr(tok, "chat_template", None) or "")


def _call_text(calls: list[ToolCall]) -> str:
    out = []
    for call in calls:
        try:
            args = json.loads(call.function.arguments)
        except ValueError:
            args = call.function.arguments  # what the client sent back, kept as it was
        out.append({"name": call.function.name, "arguments": args})
    return CALL_MARKER + json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def render(tok: Any, messages: list[ChatMessage], tools: list[Tool] | None
           ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The chat template's messages and extra arguments (``tools``) for this conversation."""
    native_calls = _template_reads(tok, "tool_calls")
    out: list[dict[str, Any]] = []
    for m in messages:
        entry: dict[str, Any] = {"role": m.role, "content": m.text()}
        if m.tool_calls:
            if native_calls:
                entry["tool_calls"] = [c.model_dump() for c in m.tool_calls]
            else:
                entry["content"] = (entry["content"] + _call_text(m.tool_calls)).strip()
        if m.tool_call_id is not None and native_calls:
            entry["tool_call_id"] = m.tool_call_id
        out.append(entry)
    if not tools:
        return out, {}
    specs = [t.model_dump(exclude_none=True) for t in tools]
    if _template_reads(tok, "tools"):
        return out, {"tools": specs}
    listing = "\n".join(json.dumps(s["function"], ensure_ascii=False) for s in specs)
    note = _INSTRUCTIONS.format(tools=listing)
    if out and out[0]["role"] in ("system", "developer"):
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{note}".strip()}
    else:
        out.insert(0, {"role": "system", "content": note})
    return out, {}


def parse(text: str, mode: ToolMode) -> list[ToolCall] | None:
    """The calls in a finished answer, or None when it is text (or a call cut short)."""
    body = text
    if mode.choice == "auto":
        if not text.startswith(CALL_MARKER):
            return None
        body = text[len(CALL_MARKER):]
    try:
        items = json.loads(body)
    except ValueError:
        return None
    known = {t.function.name for t in mode.tools}
    if not isinstance(items, list) or not items:
        return None
    calls = []
    for item in items:
        if not (isinstance(item, dict) and item.get("name") in known and "arguments" in item):
            return None
        calls.append(ToolCall(id=f"call_{secrets.token_hex(12)}", function=FunctionCall(
            name=item["name"], arguments=json.dumps(item["arguments"], ensure_ascii=False,
                                                separators=(",", ":")))))
    return calls


def may_be_calls(text: str, mode: ToolMode) -> bool:
    """While streaming: whether ``text`` so far may still turn out to be calls (so it is held
    back instead of sent as content)."""
    if mode.choice != "auto":
        return True
    return text.startswith(CALL_MARKER) or CALL_MARKER.startswith(text)
