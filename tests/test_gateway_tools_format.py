"""``response_format`` together with callable tools (OpenAI allows both): under ``auto`` the
model either calls tools or answers in the response format, one grammar holding both branches;
``required`` / a named function still force a call, ``none`` leaves the format alone. The
official `openai` client against `avokit serve` with a tiny random model, 50 seeds at
temperature 1, plain and streamed."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).parent))
from structured_support import (  # noqa: F401  (client, registry, served: fixtures)
    MODEL,
    PERSON,
    TOOLS,
    Person,
    WeatherArgs,
    calls_validate,
    client,
    each_seed,
    parses,
    registry,
    served,
)

ASK = [{"role": "user", "content": "Who is in Oslo, and what is the weather there?"}]


def test_one_grammar_holds_both_branches(registry: Path) -> None:
    """The combined grammar itself: the call marker then valid calls, or JSON valid under the
    response format; free text and JSON the schema forbids are refused from their first
    differing token."""
    from avokit.gateway.engines.base import load_tokenizer
    from avokit.gateway.grammars import (
        CALL_MARKER,
        GrammarCompiler,
        response_format_spec,
        tool_mode,
        tools_spec,
    )
    from avokit.gateway.protocol import ResponseFormat, Tool

    tok = load_tokenizer(registry / MODEL)
    compiler = GrammarCompiler()
    tools = [Tool.model_validate(t) for t in TOOLS]
    answer = response_format_spec(ResponseFormat.model_validate(PERSON), "response_format",
                                  compiler.limits)
    mode = tool_mode(tools, "auto", False, compiler.limits)
    assert answer is not None and mode is not None
    spec = tools_spec(mode, compiler.limits, answer=answer)
    assert spec.key != tools_spec(mode, compiler.limits).key  # its own cache entry
    matcher = compiler.constraint(MODEL, tok, spec).matcher

    def accepts(text: str) -> bool:
        ids = tok(text, add_special_tokens=False).input_ids
        m = matcher.deep_copy()
        return m.try_consume_tokens(ids) == len(ids) and m.is_accepting()

    person = ('{"name":"Ada","role":"admin","address":{"city":"Oslo","zip":150},'
              '"tags":["a"],"active":true}')
    Person.model_validate_json(person)
    call = CALL_MARKER + '[{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}]'
    assert accepts(person) and accepts(call)
    assert not accepts("It is sunny.")  # no free text: the answer has a format
    assert not accepts(person.replace('"admin"', '"boss"'))  # outside the enum
    assert not accepts(CALL_MARKER + '[{"name":"get_weather","arguments":{"city":"Oslo"}}]')
    # required still means a call, whatever the format
    required = tool_mode(tools, "required", False, compiler.limits)
    assert required is not None
    assert tools_spec(required, compiler.limits, answer=answer) == tools_spec(required,
                                                                              compiler.limits)
    compiler.close()


def _branch(content: str | None, tool_calls: Any, finish: str | None) -> str:
    """Which branch an answer took, after checking it is valid under that branch."""
    if tool_calls:
        assert finish == "tool_calls" and not content
        return "calls"
    assert finish == "stop", finish
    Person.model_validate_json(content or "")
    return "answer"


def test_auto_with_response_format_validates_for_every_seed(client: openai.OpenAI) -> None:
    def check(seed: int) -> str:
        r = client.chat.completions.create(
            model=MODEL, messages=ASK, seed=seed, temperature=1, max_tokens=200,
            tools=TOOLS, response_format=PERSON, parallel_tool_calls=False)  # type: ignore
        choice = r.choices[0]
        if choice.message.tool_calls:
            calls_validate(choice.message, single=True)
        return _branch(choice.message.content, choice.message.tool_calls, choice.finish_reason)

    branches = Counter(each_seed(check))
    assert sum(branches.values()) == 50
    assert set(branches) == {"calls", "answer"}, branches  # this model takes both


def test_auto_with_response_format_streamed_validates_for_every_seed(
        client: openai.OpenAI) -> None:
    def check(seed: int) -> str:
        stream = client.chat.completions.create(
            model=MODEL, messages=ASK, seed=seed, temperature=1, max_tokens=200, stream=True,
            tools=TOOLS, response_format=PERSON, parallel_tool_calls=False)  # type: ignore
        text, finish = "", None
        calls: dict[int, dict[str, str]] = {}
        for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
                # an answer streams as JSON from its first character; calls never as content
                assert text == "" or text.startswith("{")
                for d in c.delta.tool_calls or []:
                    entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
                    entry["name"] += (d.function.name or "") if d.function else ""
                    entry["arguments"] += (d.function.arguments or "") if d.function else ""
        for call in calls.values():
            args = json.loads(call["arguments"])
            if call["name"] == "get_weather":
                WeatherArgs.model_validate(args)
            else:
                assert call["name"] == "get_time" and args["tz"] in ("utc", "cet")
        assert len(calls) <= 1
        return _branch(text, calls, finish)

    branches = Counter(each_seed(check))
    assert set(branches) == {"calls", "answer"}, branches


def test_tool_choice_still_decides_with_a_response_format(client: openai.OpenAI) -> None:
    """``required`` gives calls for the seeds that answered in JSON under ``auto``; ``none``
    gives the formatted answer and no calls."""
    def ask(seed: int, **kw: Any) -> Any:
        return client.chat.completions.create(model=MODEL, messages=ASK, seed=seed,
                                              temperature=1, max_tokens=200, tools=TOOLS,
                                              response_format=PERSON, **kw).choices[0]

    answered = [s for s in range(12) if ask(s).message.tool_calls is None]
    assert answered  # the mechanism: auto left these seeds in the answer branch
    for seed in answered[:3]:
        forced = ask(seed, tool_choice="required", parallel_tool_calls=False)
        assert forced.finish_reason == "tool_calls"
        calls_validate(forced.message, single=True)
    for seed in range(3):
        free = ask(seed, tool_choice="none")
        assert free.message.tool_calls is None and free.finish_reason == "stop"
        Person.model_validate_json(free.message.content or "")


def test_a_free_answer_here_would_not_validate(client: openai.OpenAI) -> None:
    """The mechanism check for this prompt: without any grammar the model's answers are
    neither JSON nor calls, so the valid answers above come from the grammar."""
    for seed in range(5):
        text = client.chat.completions.create(model=MODEL, messages=ASK, seed=seed,
                                              temperature=1, max_tokens=60
                                              ).choices[0].message.content
        assert not parses(text), text
