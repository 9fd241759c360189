"""What a request's output must look like, as a grammar: ``response_format`` and tool calls.

The gateway turns ``response_format`` (``json_object`` / ``json_schema``) and ``tools`` with
``tool_choice`` into one llguidance grammar, checks it against the caps of
:class:`GrammarLimits` and compiles it for the model's tokenizer in a worker thread with a time
limit, so a bad or hostile schema is a 400 naming its field before anything is reserved or
queued. Compiled grammars sit in a bounded LRU keyed by the model and the canonical JSON of the
schema; every request deep-copies its own matcher from there (compile once per distinct schema).

Tool calls are written by the model as a JSON array ``[{"name": ..., "arguments": {...}}]``;
with ``tool_choice`` ``auto`` the answer is either free text (JSON under the schema when
``response_format`` asks for JSON) or :data:`CALL_MARKER` followed by that array (the model
chooses with its first tokens). llguidance needs no torch: a replica in
front of vLLM validates schemas the same way and passes them on in vLLM's own field.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from avokit.gateway.engines.base import Constraint
from avokit.gateway.errors import BadRequestError
from avokit.gateway.protocol import NamedToolChoice, ResponseFormat, Tool

CALL_MARKER = "<tool_call>"
# compact JSON: no free whitespace, so a model cannot spend its tokens on blanks
_JSON_OPTIONS: Any = {"whitespace_flexible": False}  # llguidance's JsonCompileOptions
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class GrammarLimits:
    """Caps on user-supplied schemas: a schema is user input."""

    max_schema_bytes: int = 64 * 1024  # canonical JSON of one schema (or all tools together)
    max_depth: int = 32  # nesting of JSON objects/arrays inside a schema
    max_tools: int = 128
    compile_timeout_s: float = 5.0
    cache_size: int = 256  # compiled grammars kept (per gateway process)


@dataclass(frozen=True)
class GrammarSpec:
    """A grammar to enforce: the llguidance grammar text, the field it came from (named in
    errors), vLLM's ``structured_outputs`` value (None: the upstream decodes freely), and the
    canonical JSON it was built from (the cache key)."""

    grammar: str
    param: str
    upstream: dict[str, Any] | None
    key: str
    schema: dict[str, Any] | None = None  # the JSON Schema of a response_format answer


@dataclass(frozen=True)
class ToolMode:
    """How a chat request may call tools: ``auto`` (text or calls), ``required`` (calls only;
    ``named`` narrows it to one function), and whether several calls may come at once."""

    choice: str  # auto | required | named
    tools: tuple[Tool, ...]
    parallel: bool


def canonical(value: Any) -> str:
    """Compact JSON (no spaces): equal schemas share a cache entry. Keys keep their order:
    the order of ``properties`` is the order the model writes them in."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _check_size(value: Any, param: str, limits: GrammarLimits) -> str:
    text = canonical(value)
    if len(text.encode("utf-8")) > limits.max_schema_bytes:
        raise BadRequestError(f"{param}: the schema is over {limits.max_schema_bytes} bytes",
                              param=param)
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_depth:
            raise BadRequestError(f"{param}: the schema nests deeper than {limits.max_depth} "
                                  "levels", param=param)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return text


def response_format_spec(fmt: ResponseFormat | None, param: str, limits: GrammarLimits
                         ) -> GrammarSpec | None:
    """The grammar of ``response_format`` (None for ``text`` or no format)."""
    import llguidance

    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        schema = _ANY_OBJECT
        upstream: dict[str, Any] = {"json_object": True}
        param = f"{param}.type"
    else:
        assert fmt.json_schema is not None
        schema = fmt.json_schema.schema_
        param = f"{param}.json_schema.schema"
        upstream = {"json": schema}
    key = _check_size(schema, param, limits)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(key, defaults=_JSON_OPTIONS)
    return GrammarSpec(grammar, param, upstream, "json:" + key, schema)


def tool_mode(tools: list[Tool] | None, choice: str | NamedToolChoice | None, parallel: bool,
              limits: GrammarLimits) -> ToolMode | None:
    """The request's tool mode; None when the output is free text (no tools, or ``none``)."""
    if not tools:
        if choice is not None and choice != "none":
            raise BadRequestError("tool_choice: requires tools", param="tool_choice")
        return None
    if len(tools) > limits.max_tools:
        raise BadRequestError(f"tools: at most {limits.max_tools} tools per request",
                              param="tools")
    names = [t.function.name for t in tools]
    if len(set(names)) != len(names):
        raise BadRequestError("tools: function names must be unique", param="tools")
    if choice == "none":
        return None
    if isinstance(choice, NamedToolChoice):
        picked = [t for t in tools if t.function.name == choice.function.name]
        if not picked:
            raise BadRequestError(f"tool_choice: no tool named {choice.function.name!r}",
                                  param="tool_choice.function.name")
        return ToolMode("named", tuple(picked), False)
    return ToolMode(choice or "auto", tuple(tools), parallel)


def _hoist_defs(schema: dict[str, Any], prefix: str, defs: dict[str, Any], param: str
                ) -> dict[str, Any]:
    """``schema`` with its ``$defs``/``definitions`` moved into ``defs`` under ``prefix`` and
    its local refs rewritten: a tool's parameters become one branch of a larger schema, where
    ``#/$defs/X`` would otherwise point at the wrong root."""
    schema = copy.deepcopy(schema)
    local = {**schema.pop("definitions", {}), **schema.pop("$defs", {})}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.removeprefix("#/$defs/").removeprefix("#/definitions/")
                if name == ref or name not in local:
                    raise BadRequestError(f"{param}: $ref {ref!r} is not supported here (only "
                                          "#/$defs/NAME of the same parameters)", param=param)
                node = {**node, "$ref": f"#/$defs/{prefix}{name}"}
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, sub in local.items():
        defs[prefix + name] = rewrite(sub)
    return rewrite(schema)


def calls_schema(mode: ToolMode, limits: GrammarLimits) -> dict[str, Any]:
    """The JSON Schema of the call array: each item one tool's name and arguments."""
    defs: dict[str, Any] = {}
    items = []
    for i, tool in enumerate(mode.tools):
        param = f"tools[{i}].function.parameters"
        params = tool.function.parameters
        _check_size(params or {}, param, limits)
        args = (_hoist_defs(params, f"t{i}_", defs, param) if params else
                {"type": "object", "properties": {}})
        items.append({"type": "object", "properties": {
            "name": {"const": tool.function.name}, "arguments": args},
            "required": ["name", "arguments"], "additionalProperties": False})
    schema: dict[str, Any] = {"type": "array", "minItems": 1,
                              "items": items[0] if len(items) == 1 else {"anyOf": items}}
    if not mode.parallel:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


def _json_rule(schema: dict[str, Any]) -> str:
    """A Lark ``%json`` body: the schema with the gateway's compact-JSON options."""
    return json.dumps({"x-guidance": _JSON_OPTIONS, **schema}, ensure_ascii=False)


def tools_spec(mode: ToolMode, limits: GrammarLimits, answer: GrammarSpec | None = None
               ) -> GrammarSpec:
    """The grammar of a tool-calling answer.

    ``required`` / ``named``: the call array alone (a call is what this turn must be, so a
    ``response_format`` applies to a later turn). ``auto``: :data:`CALL_MARKER` then the calls,
    or else the answer: free text that does not start with the marker, or, with ``answer``
    (the request's ``response_format``), JSON under its schema; the model picks the branch with
    its first tokens (a JSON value never starts with ``<``)."""
    import llguidance

    schema = calls_schema(mode, limits)
    key = _check_size(schema, "tools", limits)
    if mode.choice != "auto":
        grammar = llguidance.LLMatcher.grammar_from_json_schema(key, defaults=_JSON_OPTIONS)
        return GrammarSpec(grammar, "tools", {"json": schema}, "calls:" + key)
    marker = json.dumps(CALL_MARKER)
    if answer is not None and answer.schema is not None:
        start, cache_key = "answer", f"auto:{key}|{answer.key}"
        rule = f"answer: %json {_json_rule(answer.schema)}\n"
    else:
        start, cache_key = "TEXT", "auto:" + key
        rule = f"TEXT: /(?s:.*)/ & ~/(?s:{_regex_literal(CALL_MARKER)}.*)/\n"
    lark = f"start: {start} | {marker} calls\n{rule}calls: %json {_json_rule(schema)}\n"
    # vLLM's grammar field takes backend-specific syntax: its auto mode decodes freely and
    # the gateway parses the answer the same way
    return GrammarSpec(llguidance.LLMatcher.grammar_from_lark(lark), "tools", None, cache_key)


def _regex_literal(text: str) -> str:
    # Rust regex syntax: escaping any other character (``\<``) means something else
    return "".join(f"\\{c}" if c in "\\.+*?()|[]{}^$#&-~/" else c for c in text)


class GrammarCompiler:
    """Compiles grammars for a model's tokenizer: bounded LRU, time limit, errors as 400s."""

    def __init__(self, limits: GrammarLimits | None = None) -> None:
        self.limits = limits or GrammarLimits()
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._tokenizers: dict[str, tuple[Any, Any]] = {}
        # compilation runs here so the request thread can stop waiting after the time limit
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="avokit-grammar")

    def _ll_tokenizer(self, model: str, tok: Any) -> Any:
        import llguidance.hf

        with self._lock:
            found = self._tokenizers.get(model)
            if found is None or found[0] is not tok:
                found = self._tokenizers[model] = (tok, llguidance.hf.from_tokenizer(tok))
            return found[1]

    def constraint(self, model: str, tok: Any, spec: GrammarSpec) -> Constraint:
        """The compiled constraint of ``spec`` for ``model`` (blocking: call it in a thread)."""
        import llguidance

        with self._lock:
            matcher = self._cache.get((model, spec.key))
            if matcher is not None:
                self._cache.move_to_end((model, spec.key))
        if matcher is None:
            lltok = self._ll_tokenizer(model, tok)
            future = self._pool.submit(llguidance.LLMatcher, lltok, spec.grammar, log_level=0,
                                       limits=llguidance.LLParserLimits(verbose_errors=False))
            try:
                matcher = future.result(timeout=self.limits.compile_timeout_s)
            except FutureTimeout:
                raise BadRequestError(f"{spec.param}: the schema is too complex (compiling it "
                                      f"took over {self.limits.compile_timeout_s:g} s)",
                                      param=spec.param) from None
            if matcher.is_error():
                raise BadRequestError(f"{spec.param}: unsupported or invalid schema: "
                                      f"{matcher.get_error()[:300]}", param=spec.param)
            with self._lock:
                self._cache[(model, spec.key)] = matcher
                while len(self._cache) > self.limits.cache_size:
                    self._cache.popitem(last=False)
        return Constraint(spec.grammar, matcher, spec.upstream, self._ll_tokenizer(model, tok).vocab_size)

    def cached(self) -> int:
        """How many compiled grammars the cache holds."""
        with self._lock:
            return len(self._cache)

    def close(self) -> None:
        """Stop the compile threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
