"""Shared by the structured-output test modules: the schemas and pydantic validators, the
tools, and the fixtures of a real `avokit serve` with a tiny random model (one per module)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import openai
import pytest
from gateway_support import SECRET, Server, build_registry
from pydantic import BaseModel, ConfigDict, Field

from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
from avokit.gateway.services import keys

MODEL = "avo-tiny"
N = 50  # requests per "every answer validates" check (the bar)
T = TypeVar("T")


def each_seed(check: Callable[[int], T]) -> list[T]:
    """``check(seed)`` for seeds 0..N-1, eight at a time: the server batches them, so the
    constrained rows are checked inside shared batches too."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(check, range(N)))


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    city: str = Field(max_length=6)
    zip: int = Field(ge=0, le=99999)


class Person(BaseModel):
    """Nested object, array, enum, bounded fields; every field required (strict)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=8)
    role: Literal["admin", "user", "guest"]
    address: Address
    tags: list[Literal["a", "b", "c"]] = Field(max_length=3)
    active: bool


class WeatherArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    city: str = Field(max_length=6)
    unit: Literal["c", "f"]


def _strict(model: type[BaseModel]) -> dict[str, Any]:
    from openai.lib._pydantic import to_strict_json_schema

    return to_strict_json_schema(model)


PERSON = {"type": "json_schema",
          "json_schema": {"name": "person", "schema": _strict(Person), "strict": True}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                           "parameters": _strict(WeatherArgs), "strict": True}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
             "type": "object", "properties": {"tz": {"enum": ["utc", "cet"]}},
             "required": ["tz"], "additionalProperties": False}}}]
ARGS = {"get_weather": WeatherArgs}
MESSAGES = [{"role": "user", "content": "Tell me about someone."}]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    build_registry(root, MODEL, context_length=1024)  # room for the tool listing
    return root


def make_key(url: str) -> str:
    run_migrations(url)
    with session_factory(make_db_engine(url)).begin() as s:
        key, _ = keys.create_key(s, SECRET, name="t", credit_micros=10**9, rpm=100_000,
                                 tpm=10**8, prices={"*": {"input": 1000, "output": 3000}})
    return key


@pytest.fixture(scope="module")
def served(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("structured")
    url = f"sqlite:///{tmp}/gateway.db"
    key = make_key(url)
    srv = Server({"AVOKIT_REGISTRY": str(registry), "AVOKIT_DB_URL": url,
                  "AVOKIT_SECRET": SECRET, "AVOKIT_BATCH_WAIT_MS": "2"}, tmp / "server.log").start()
    yield srv, key
    srv.stop()


@pytest.fixture(scope="module")
def client(served: tuple[Server, str]) -> openai.OpenAI:
    srv, key = served
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)


def parses(text: str | None) -> bool:
    try:
        json.loads(text or "")
        return True
    except ValueError:
        return False


def calls_validate(message: Any, single: bool) -> list[str]:
    assert message.content is None and message.tool_calls
    if single:
        assert len(message.tool_calls) == 1
    for call in message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        args = json.loads(call.function.arguments)
        if call.function.name in ARGS:
            ARGS[call.function.name].model_validate(args)
        else:
            assert call.function.name == "get_time" and args["tz"] in ("utc", "cet")
    return [c.function.name for c in message.tool_calls]
