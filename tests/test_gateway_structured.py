"""Structured outputs and tool calling: the official `openai` client against a real `avokit
serve` process with a tiny random model, the in-process engine's batches, the vLLM pass-through.

A random model writes garbage: every test first shows that its free output does not parse, so
an answer that parses and validates proves the grammar mask, not luck. Answers are validated by
pydantic models independent of the grammar library (``extra="forbid"``, the same bounds)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import SECRET, Server, run_mock_upstream
from structured_support import (  # noqa: F401  (client, registry, served: fixtures)
    MESSAGES,
    MODEL,
    PERSON,
    TOOLS,
    Address,
    Person,
    WeatherArgs,
    calls_validate,
    client,
    each_seed,
    make_key,
    parses,
    registry,
    served,
)


def test_free_output_of_the_random_model_does_not_parse(client: openai.OpenAI) -> None:
    """The mechanism check: without a grammar this model's answers are not JSON."""
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda seed: client.chat.completions.create(
            model=MODEL, messages=MESSAGES, seed=seed, temperature=1, max_tokens=80
        ).choices[0].message.content, range(10)))
    assert not any(parses(t) for t in texts), texts
    assert not any((t or "").startswith('{"name":') for t in texts)


def test_json_schema_validates_for_every_seed(client: openai.OpenAI) -> None:
    def check(seed: int) -> None:
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=seed,
                                           temperature=1, max_tokens=200,
                                           response_format=PERSON)  # type: ignore[arg-type]
        choice = r.choices[0]
        assert choice.finish_reason == "stop", (seed, choice)
        Person.model_validate_json(choice.message.content or "")
        assert r.usage is not None and r.usage.completion_tokens > 0

    each_seed(check)


def test_json_schema_streamed_validates_for_every_seed(client: openai.OpenAI) -> None:
    def check(seed: int) -> None:
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, seed=seed, temperature=1, max_tokens=200,
            response_format=PERSON, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True})
        text, finish, usage = "", None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
                # the answer is JSON from its first token on (the role chunk carries "")
                assert text == "" or text.startswith("{")
        assert finish == "stop"
        Person.model_validate_json(text)
        assert usage is not None and usage.completion_tokens > 0

    each_seed(check)


def test_the_sdk_parse_helper_returns_the_parsed_object(client: openai.OpenAI) -> None:
    r = client.chat.completions.parse(model=MODEL, messages=MESSAGES, seed=3, max_tokens=200,
                                      response_format=Person)  # type: ignore[arg-type]
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Person) and isinstance(parsed.address, Address)


def test_max_tokens_cutting_the_json_says_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=0, max_tokens=6,
                                       response_format=PERSON)  # type: ignore[arg-type]
    assert r.choices[0].finish_reason == "length"
    text = r.choices[0].message.content or ""
    assert text.startswith('{"') and not parses(text)
    assert r.usage is not None and r.usage.completion_tokens == 6  # billed like any token


def test_json_object_and_text_modes(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=1, max_tokens=30,
                                       response_format={"type": "json_object"})
    assert (r.choices[0].message.content or "").startswith("{")
    free = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=1, max_tokens=30)
    as_text = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=1,
                                             max_tokens=30, response_format={"type": "text"})
    assert free.choices[0].message.content == as_text.choices[0].message.content


def test_legacy_completions_take_response_format(served: tuple[Server, str]) -> None:
    srv, key = served
    r = httpx.post(srv.url + "/v1/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": MODEL, "prompt": "Someone:", "max_tokens": 200, "seed": 2,
                         "response_format": PERSON}, timeout=60)
    assert r.status_code == 200, r.text
    Person.model_validate_json(r.json()["choices"][0]["text"])


def test_tool_choice_required_gives_valid_calls(client: openai.OpenAI) -> None:
    def check(seed: int) -> list[str]:
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Weather?"}], seed=seed,
            temperature=1, max_tokens=200, tools=TOOLS, tool_choice="required",  # type: ignore
            parallel_tool_calls=False)
        assert r.choices[0].finish_reason == "tool_calls", r.choices[0]
        return calls_validate(r.choices[0].message, single=True)

    each_seed(check)


def test_tool_calls_streamed_in_openai_shape(client: openai.OpenAI) -> None:
    def check(seed: int) -> None:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Weather?"}], seed=seed,
            temperature=1, max_tokens=200, tools=TOOLS, tool_choice="required",  # type: ignore
            parallel_tool_calls=False, stream=True)
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in stream:
            for c in chunk.choices:
                assert not c.delta.content
                finish = c.finish_reason or finish
                for d in c.delta.tool_calls or []:
                    entry = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] += d.id or ""
                    entry["name"] += (d.function.name or "") if d.function else ""
                    entry["arguments"] += (d.function.arguments or "") if d.function else ""
        assert finish == "tool_calls" and len(calls) == 1
        call = calls[0]
        assert call["id"].startswith("call_")
        args = json.loads(call["arguments"])
        if call["name"] == "get_weather":
            WeatherArgs.model_validate(args)
        else:
            assert call["name"] == "get_time" and args["tz"] in ("utc", "cet")

    each_seed(check)


def test_named_tool_choice(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Time?"}], seed=5, max_tokens=200,
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert calls_validate(r.choices[0].message, single=True) == ["get_time"]


def test_parallel_tool_calls_decide_whether_a_second_call_may_follow(registry: Path) -> None:
    """This random model always closes the array after one call, so the grammar is checked
    directly: after a first call, ``,`` is allowed with parallel_tool_calls and refused
    without (the answer then must end)."""
    from avokit.gateway.engines.base import load_tokenizer
    from avokit.gateway.grammars import GrammarCompiler, tool_mode, tools_spec
    from avokit.gateway.protocol import Tool

    tok = load_tokenizer(registry / MODEL)
    compiler = GrammarCompiler()
    tools = [Tool.model_validate(t) for t in TOOLS]
    first = tok('[{"name":"get_time","arguments":{"tz":"utc"}}', add_special_tokens=False).input_ids
    comma = tok(",", add_special_tokens=False).input_ids
    for parallel in (True, False):
        mode = tool_mode(tools, "required", parallel, compiler.limits)
        assert mode is not None
        matcher = compiler.constraint(MODEL, tok, tools_spec(mode, compiler.limits)).matcher.deep_copy()
        assert matcher.try_consume_tokens(first) == len(first)
        assert (matcher.try_consume_tokens(comma) == len(comma)) is parallel
    # auto: free text, or the marker and then only valid calls
    mode = tool_mode(tools, "auto", True, compiler.limits)
    assert mode is not None
    auto = compiler.constraint(MODEL, tok, tools_spec(mode, compiler.limits)).matcher
    text = tok("It is sunny.", add_special_tokens=False).input_ids
    marker = tok("<tool_call>", add_special_tokens=False).input_ids
    assert auto.deep_copy().try_consume_tokens(text) == len(text)
    after_marker = auto.deep_copy()
    assert after_marker.try_consume_tokens(marker) == len(marker)
    assert after_marker.try_consume_tokens(text) == 0
    assert after_marker.try_consume_tokens(first) == len(first)
    compiler.close()


def test_tool_history_and_auto_choice(client: openai.OpenAI) -> None:
    """A conversation with an assistant call and the tool's answer goes through the template;
    ``auto`` lets the model answer in text (this one never writes the call marker)."""
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo","unit":"c"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees"}]
    r = client.chat.completions.create(model=MODEL, messages=messages, seed=0, max_tokens=20,
                                       tools=TOOLS)  # type: ignore[arg-type]
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    none = client.chat.completions.create(model=MODEL, messages=messages, seed=0, max_tokens=20,
                                          tools=TOOLS, tool_choice="none")  # type: ignore
    assert none.choices[0].finish_reason == "length" and none.choices[0].message.content


@pytest.mark.parametrize("body, param", [
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "if": {"type": "object"}}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "strng"}}}}, "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "pattern": "(("}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"enum": ["x" * 1000] * 80}}}}, "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": json.loads(
        '{"type":"array","items":' * 40 + '{}' + '}' * 40)}}}, "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"tools": [TOOLS[1]] * 2}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(200)]},
     "tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "#/properties/b"}}}}}]},
     "tools[0].function.parameters"),
    ({"tools": TOOLS, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "strng"}}}}, "response_format.json_schema.schema"),
])
def test_bad_schemas_and_tool_lists_are_400s_naming_the_field(
        served: tuple[Server, str], body: dict[str, Any], param: str) -> None:
    srv, key = served
    r = httpx.post(srv.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": MODEL, "messages": MESSAGES, "max_tokens": 5, **body},
                   timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()


def test_engine_batch_mixing_constrained_and_free_rows(registry: Path) -> None:
    """A constrained and a free request batched together each get exactly what they get alone;
    a grammar is compiled once per distinct schema."""
    from avokit.gateway.engines.base import GenParams, scan_registry
    from avokit.gateway.engines.transformers_engine import TransformersEngine
    from avokit.gateway.grammars import GrammarCompiler, response_format_spec
    from avokit.gateway.protocol import ResponseFormat
    from avokit.gateway.services import prompts

    async def run() -> None:
        engine = TransformersEngine(scan_registry(registry), max_batch_size=8,
                                    batch_wait_ms=50)
        tok = engine.tokenizer(MODEL)
        compiler = GrammarCompiler()
        spec = response_format_spec(ResponseFormat.model_validate(PERSON), "response_format",
                                    compiler.limits)
        assert spec is not None
        ids = prompts.encode_chat(tok, MESSAGES)

        def params(seed: int, constrained: bool) -> GenParams:
            c = compiler.constraint(MODEL, tok, spec) if constrained else None
            return GenParams(ids, 150, temperature=1.0, seed=seed, constraint=c)

        async def text(p: GenParams) -> tuple[str, str]:
            events, fin = await engine.complete(MODEL, p)
            return "".join(e.text for e in events), fin.finish_reason

        try:
            alone = [await text(params(s, s % 2 == 0)) for s in range(4)]
            together = await asyncio.gather(*(text(params(s, s % 2 == 0)) for s in range(4)))
        finally:
            await engine.aclose()
        assert list(together) == alone
        for s, (out, fin) in enumerate(alone):
            if s % 2 == 0:
                assert fin == "stop"
                Person.model_validate_json(out)
            else:
                assert fin == "length" and not parses(out)
        assert compiler.cached() == 1
        first = compiler.constraint(MODEL, tok, spec).matcher
        assert compiler.constraint(MODEL, tok, spec).matcher is first  # compiled once

    asyncio.run(run())


def test_a_broken_grammar_fails_its_own_row_only(registry: Path) -> None:
    """A row whose matcher is in an error state fails alone (502); the free row batched with
    it gets exactly the answer it gets alone."""
    import llguidance
    import llguidance.hf

    from avokit.gateway.engines.base import Constraint, GenParams, scan_registry
    from avokit.gateway.engines.transformers_engine import TransformersEngine
    from avokit.gateway.errors import UpstreamError

    async def run() -> None:
        engine = TransformersEngine(scan_registry(registry), max_batch_size=8,
                                    batch_wait_ms=50)
        tok = engine.tokenizer(MODEL)
        lltok = llguidance.hf.from_tokenizer(tok)
        broken = llguidance.LLMatcher(lltok, "start: nope", log_level=0)
        assert broken.is_error()  # the mechanism: this matcher cannot produce a mask
        ids = list(tok("Hello").input_ids)
        free = GenParams(ids, 12, temperature=1.0, seed=4)
        bad = GenParams(ids, 12, temperature=1.0, seed=4,
                        constraint=Constraint("start: nope", broken, None, lltok.vocab_size))
        try:
            alone, _ = await engine.complete(MODEL, free)
            both = await asyncio.gather(engine.complete(MODEL, bad), engine.complete(MODEL, free),
                                        return_exceptions=True)
        finally:
            await engine.aclose()
        assert isinstance(both[0], UpstreamError)
        assert not isinstance(both[1], BaseException)
        assert [e.text for e in both[1][0]] == [e.text for e in alone]

    asyncio.run(run())


def test_grammar_cache_is_bounded(registry: Path) -> None:
    """The LRU keeps at most cache_size grammars, evicting the least recently used."""
    from avokit.gateway.engines.base import load_tokenizer
    from avokit.gateway.grammars import GrammarCompiler, GrammarLimits, response_format_spec
    from avokit.gateway.protocol import ResponseFormat

    compiler = GrammarCompiler(GrammarLimits(cache_size=2))
    tok = load_tokenizer(registry / MODEL)

    def spec(n: int) -> Any:
        fmt = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "array", "maxItems": n}}})
        return response_format_spec(fmt, "response_format", compiler.limits)

    first = compiler.constraint(MODEL, tok, spec(1)).matcher
    compiler.constraint(MODEL, tok, spec(2))
    assert compiler.constraint(MODEL, tok, spec(1)).matcher is first  # hit; 2 is now oldest
    compiler.constraint(MODEL, tok, spec(3))
    assert compiler.cached() == 2
    assert compiler.constraint(MODEL, tok, spec(1)).matcher is first
    compiler.close()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from run_mock_upstream(tmp_path_factory.mktemp("upstream"))


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_upstream_gets_the_schema_in_its_own_field(
        registry: Path, upstream: str, tmp_path: Path, stream: bool) -> None:
    """The mock upstream echoes vLLM's ``structured_outputs`` field back as its answer."""
    url = f"sqlite:///{tmp_path}/gateway.db"
    key = make_key(url)
    srv = Server({"AVOKIT_REGISTRY": str(registry), "AVOKIT_DB_URL": url,
                  "AVOKIT_SECRET": SECRET, "AVOKIT_ENGINE": "vllm", "AVOKIT_UPSTREAM": upstream},
                 tmp_path / "server.log").start()
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)

        def answer(**kw: Any) -> str:
            if not stream:
                r = client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                                   max_tokens=100, **kw)
                return r.choices[0].message.content or ""
            chunks = client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                                    max_tokens=100, stream=True, **kw)
            return "".join(c.delta.content or "" for ch in chunks for c in ch.choices)

        assert json.loads(answer(response_format=PERSON)) == {
            "structured_outputs": {"json": PERSON["json_schema"]["schema"]}}
        assert json.loads(answer(response_format={"type": "json_object"})) == {
            "structured_outputs": {"json_object": True}}
        sent = json.loads(answer(tools=TOOLS, tool_choice="required"))["structured_outputs"]
        assert sent["json"]["type"] == "array" and sent["json"]["minItems"] == 1
        assert "structured_outputs" not in answer()  # free requests pass nothing
        bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strng"}}}
        with pytest.raises(openai.BadRequestError):  # refused before the upstream
            answer(response_format=bad)
    finally:
        srv.stop()


def test_invalid_pydantic_answer_is_detected() -> None:
    """The validators used above do reject what the schema forbids (they can fail)."""
    with pytest.raises(ValidationError):
        Person.model_validate_json('{"name":"x","role":"boss","address":{"city":"a","zip":1},'
                                   '"tags":[],"active":true}')
    with pytest.raises(ValidationError):
        WeatherArgs.model_validate({"city": "Oslo", "unit": "c", "extra": 1})
