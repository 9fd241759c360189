"""Spend alerts: written to the outbox with the charge that crossed the threshold, posted to a
real local receiver with Standard Webhooks signatures (verified with the `standardwebhooks`
library), retried while the receiver is down, shared safely by several workers, and not lost
to a `kill -9` between the spend and the delivery."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

sys.path.insert(0, str(Path(__file__).parent))
from alert_receiver import Receiver
from gateway_support import (
    SECRET,
    InProcess,
    Server,
    auth,
    free_port,
    fresh_db,
)

from avokit.gateway.db.models import AlertOutbox
from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
from avokit.gateway.errors import ConfigError
from avokit.gateway.services import alerts, keys, metering, webhooks
from avokit.gateway.settings import load_settings

# one micro-unit per token: a request's charge is its token count, the mock answers 8 tokens
PRICE = {"*": {"input": 1_000_000, "output": 1_000_000}}
CHAT = {"model": "avo-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
FAST = {"alert_poll_s": 0.1, "alert_retry_base_s": 0.3, "alert_retry_max_s": 1.0}


def outbox(sessions: Any) -> list[AlertOutbox]:
    with sessions() as s:
        return list(s.scalars(select(AlertOutbox).order_by(AlertOutbox.created_at)))


def wait_for(check: Any, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while not check():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def verified(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every accepted POST's payload, each checked by the Standard Webhooks library."""
    out = []
    for r in receiver.accepted():
        payload = Webhook(secret).verify(r.body, r.headers)
        assert r.headers["webhook-id"] == r.headers["idempotency-key"] == payload["id"]
        out.append(payload)
    return out


def test_alert_settings_are_checked(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/a.db"
    run_migrations(db)
    sessions = session_factory(make_db_engine(db))
    with sessions.begin() as s:
        _, info = keys.create_key(s, SECRET, name="x", prices=PRICE)
    for url in ("http://example.com/hook", "ftp://localhost/x", "https://u:p@example.com/",
                "not a url"):
        with sessions.begin() as s, pytest.raises(ConfigError, match="alert_url"):
            alerts.configure(s, info.account_id, url=url)
    with sessions.begin() as s, pytest.raises(ConfigError, match="low_credit_micros"):
        alerts.configure(s, info.account_id, url="https://example.com/h", low_credit_micros=-1)
    with sessions.begin() as s, pytest.raises(ConfigError, match="account"):
        alerts.configure(s, 999, url="https://example.com/h")
    for text in ("", "0", "101", "80,x", ",".join(["5"] * 11)):
        with pytest.raises(ConfigError, match="cap_percents"):
            alerts.parse_percents(text)
    assert alerts.parse_percents("100, 80,80") == [80, 100]
    with sessions.begin() as s:  # https anywhere, plain http to localhost only
        alerts.configure(s, info.account_id, url="https://example.com/h")
        alerts.configure(s, info.account_id, url="http://localhost:9/h")
    with pytest.raises(ConfigError, match="AVOKIT_ALERT_MAX_ATTEMPTS"):
        load_settings(secret=SECRET, alert_max_attempts=0)


def test_thresholds_fire_once_per_crossing_and_are_delivered(registry: Path, upstream: str,
                                                             tmp_path: Path) -> None:
    """Scripted traffic crosses low credit, 50% and 100% of a monthly cap: one alert each,
    not one per request; a top-up re-arms low credit, and the next crossing fires again."""
    receiver = Receiver(free_port()).start()

    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/g.db",
                                 secret=SECRET, engine="vllm", upstream=upstream, **FAST)
        async with InProcess(settings) as gw:
            key, info = gw.key(credit_micros=10**6, prices=PRICE, rpm=10**6, tpm=10**9)
            assert (await gw.http.post("/v1/chat/completions", json=CHAT,
                                       headers=auth(key))).status_code == 200
            credit, _, _ = gw.account(info.account_id)
            cost = 10**6 - credit  # one request's charge
            low = credit - 3 * cost - cost // 2  # crossed by the 4th request from here
            with gw.sessions.begin() as s:
                alerts.configure(s, info.account_id, url=receiver.url, low_credit_micros=low,
                                 cap_percents=[50, 100])
                keys.set_spend_cap(s, info.id, 10 * cost, "month")  # the probe counts: 1 of 10
            codes = [(await gw.http.post("/v1/chat/completions", json=CHAT,
                                         headers=auth(key))).status_code for _ in range(12)]
            assert codes == [200] * 9 + [402] * 3
            kinds = [(r.kind, json.loads(r.payload)["data"].get("threshold_percent"))
                     for r in outbox(gw.sessions)]
            assert sorted(kinds, key=str) == sorted(
                [("credit.low", None), ("spend_cap.threshold", 50),
                 ("spend_cap.threshold", 100)], key=str)
            # re-arm: a top-up to just above the threshold, no cap; two requests cross again
            credit, _, _ = gw.account(info.account_id)
            with gw.sessions.begin() as s:
                metering.topup(s, info.id, low + cost + cost // 2 - credit)
                keys.set_spend_cap(s, info.id, None, None)
            for _ in range(3):
                assert (await gw.http.post("/v1/chat/completions", json=CHAT,
                                           headers=auth(key))).status_code == 200
            rows = outbox(gw.sessions)
            assert [r.kind for r in rows].count("credit.low") == 2 and len(rows) == 4
            await asyncio.to_thread(wait_for, lambda: all(
                r.status == "delivered" for r in outbox(gw.sessions)))
            secret = webhooks.signing_secret(SECRET, info.account_id, 0)
            payloads = verified(receiver, secret)
            assert sorted(p["id"] for p in payloads) == sorted(r.id for r in rows)
            by_id = {r.id: r for r in rows}
            charges = {c.request_id for c in gw.charges(info.account_id)}
            for p in payloads:
                assert json.loads(by_id[p["id"]].payload) == p
                assert p["data"]["account_id"] == info.account_id
                assert p["data"]["request_id"] in charges  # the request that crossed it
            cap100 = next(p for p in payloads if p["data"].get("threshold_percent") == 100)
            assert cap100["data"]["spent_micros"] == cap100["data"]["cap_micros"] == 10 * cost

    try:
        asyncio.run(run())
    finally:
        receiver.stop()


def _crossing(db: str, url: str, n: int = 1) -> tuple[Any, list[str]]:
    """An account with alerts to ``url`` and ``n`` settled charges that each cross its low
    credit threshold (re-armed by a top-up between them); returns its sessions and the ids."""
    run_migrations(db)
    engine = make_db_engine(db)
    sessions = session_factory(engine)
    with sessions.begin() as s:
        _, info = keys.create_key(s, SECRET, name="a", prices=PRICE, credit_micros=1000)
        alerts.configure(s, info.account_id, url=url, low_credit_micros=950)
    for _ in range(n):
        hold = metering.reserve(engine, account_id=info.account_id, key_id=info.id,
                                model="m", prompt_tokens=60, max_tokens=0, price_in=10**6,
                                price_out=0)
        assert metering.settle_hold(engine, hold, 0) == 60
        with sessions.begin() as s:
            metering.topup(s, info.id, 60)
    return sessions, [r.id for r in outbox(sessions)]


def test_receiver_down_then_up_is_retried_with_a_stable_idempotency_key(tmp_path: Path
                                                                        ) -> None:
    port = free_port()
    receiver = Receiver(port, fail_first=1)
    db = f"sqlite:///{tmp_path}/d.db"
    sessions, ids = _crossing(db, receiver.url)
    assert len(ids) == 1
    engine = make_db_engine(db)
    policy = webhooks.DeliveryPolicy(base_s=0.3, max_backoff_s=1.0, max_attempts=10)
    worker = webhooks.AlertDelivery(engine, SECRET, "w1", policy)

    async def run() -> None:
        assert await worker.run_once() == {"pending": 1}  # nobody listens: refused
        (row,) = outbox(sessions)
        assert row.attempts == 1 and "ConnectError" in (row.last_error or "")
        assert await worker.run_once() == {}  # not due again before its backoff
        receiver.start()
        await asyncio.sleep(0.6)
        assert await worker.run_once() == {"pending": 1}  # up, but answers 500 once
        await asyncio.sleep(1.0)
        assert await worker.run_once() == {"delivered": 1}
        assert await worker.run_once() == {}

    try:
        asyncio.run(run())
    finally:
        receiver.stop()
        engine.dispose()
    (row,) = outbox(sessions)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
    first, second = receiver.received
    assert (first.status, second.status) == (500, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == ids[0]
    assert first.body == second.body == row.payload.encode()
    secret = webhooks.signing_secret(SECRET, row.account_id, 0)
    assert Webhook(secret).verify(second.body, second.headers)["type"] == "credit.low"


def test_gives_up_after_max_attempts(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/f.db"
    sessions, _ = _crossing(db, f"http://127.0.0.1:{free_port()}/never")
    engine = make_db_engine(db)
    worker = webhooks.AlertDelivery(engine, SECRET, "w", webhooks.DeliveryPolicy(
        base_s=0.01, max_backoff_s=0.01, max_attempts=2))

    async def run() -> list[dict[str, int]]:
        first = await worker.run_once()
        await asyncio.sleep(0.05)
        return [first, await worker.run_once(), await worker.run_once()]

    assert asyncio.run(run()) == [{"pending": 1}, {"failed": 1}, {}]
    (row,) = outbox(sessions)
    assert (row.status, row.attempts) == ("failed", 2)
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_several_workers_post_each_row_once(kind: str, tmp_path: Path) -> None:
    """Four workers (each its own database engine, as replicas have) drain 30 rows at once."""
    receiver = Receiver(free_port()).start()
    db = fresh_db(kind, tmp_path)
    sessions, ids = _crossing(db, receiver.url, n=30)
    assert len(ids) == 30
    engines = [make_db_engine(db) for _ in range(4)]
    workers = [webhooks.AlertDelivery(e, SECRET, f"w{i}", webhooks.DeliveryPolicy(batch=4))
               for i, e in enumerate(engines)]

    async def drain() -> None:
        while any(r.status == "pending" for r in await asyncio.to_thread(outbox, sessions)):
            await asyncio.gather(*(w.run_once() for w in workers))

    try:
        asyncio.run(drain())
    finally:
        receiver.stop()
        for e in engines:
            e.dispose()
    posted = [r.headers["webhook-id"] for r in receiver.received]
    assert sorted(posted) == sorted(ids)  # every row once, none twice
    assert {r.status for r in outbox(sessions)} == {"delivered"}


def test_alert_survives_kill_9_between_spend_and_delivery(registry: Path, upstream: str,
                                                          tmp_path: Path) -> None:
    """The first server's delivery worker never gets to run (hour-long poll): the alert is in
    the outbox when the process is SIGKILLed, and the restarted server delivers it."""
    receiver = Receiver(free_port()).start()
    db = f"sqlite:///{tmp_path}/k.db"
    run_migrations(db)
    sessions = session_factory(make_db_engine(db))
    with sessions.begin() as s:
        key, info = keys.create_key(s, SECRET, name="k", prices=PRICE, credit_micros=10**6,
                                    rpm=10**6, tpm=10**9)
        alerts.configure(s, info.account_id, url=receiver.url, low_credit_micros=10**6 - 1)
    env = {"AVOKIT_REGISTRY": str(registry), "AVOKIT_DB_URL": db, "AVOKIT_SECRET": SECRET,
           "AVOKIT_ENGINE": "vllm", "AVOKIT_UPSTREAM": upstream,
           "AVOKIT_ALERT_POLL_S": "3600"}
    # generous bounds: on a loaded machine (these run at nice 19) starting takes minutes
    first = Server(env, tmp_path / "first.log", start_timeout_s=600).start()
    try:
        r = httpx.post(first.url + "/v1/chat/completions", json=CHAT, headers=auth(key),
                       timeout=60)
        assert r.status_code == 200, r.text
        (row,) = outbox(sessions)
        assert (row.kind, row.status, row.attempts) == ("credit.low", "pending", 0)
        assert row.request_id == r.headers["x-request-id"]
    finally:
        first.kill9()
    assert first.proc is not None and first.proc.returncode == -9
    assert receiver.received == []
    second = Server({**env, "AVOKIT_ALERT_POLL_S": "0.1", "AVOKIT_ALERT_TIMEOUT_S": "60"},
                    tmp_path / "second.log", start_timeout_s=600).start()
    try:
        wait_for(lambda: outbox(sessions)[0].status == "delivered", timeout_s=300)
    finally:
        second.stop()
        receiver.stop()
    (payload,) = verified(receiver, webhooks.signing_secret(SECRET, info.account_id, 0))
    assert payload["id"] == row.id and payload["data"]["request_id"] == row.request_id


def test_cli_sets_alerts_lists_and_delivers_the_outbox(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    from typer.testing import CliRunner

    from avokit.cli import gateway_alerts as cli
    from avokit.cli.main import main

    monkeypatch.setenv("AVOKIT_SECRET", SECRET)
    db = f"sqlite:///{tmp_path}/cli.db"
    run_migrations(db)
    engine = make_db_engine(db)
    with session_factory(engine).begin() as s:
        _, info = keys.create_key(s, SECRET, name="c", prices=PRICE, credit_micros=1000)
    options: dict[str, Any] = {"off": False, "low_credit": 950, "cap_percents": None,
                               "rotate_secret": False, "db": db}
    with pytest.raises(ConfigError, match="--url"):
        cli.accounts_alerts(info.account_id, url=None, **options)
    with pytest.raises(ConfigError, match="cap_percents"):
        cli.accounts_alerts(info.account_id, url="https://example.com/h",
                            **{**options, "cap_percents": "80,x"})
    with pytest.raises(SystemExit) as stopped:  # the CLI's one-line error naming the field
        main(["accounts", "alerts", str(info.account_id), "--url", "http://example.com/h",
              "--db", db])
    assert stopped.value.code == 2 and "alert_url" in capsys.readouterr().err
    receiver = Receiver(free_port())  # not listening yet
    cli.accounts_alerts(info.account_id, url=receiver.url, **options)
    assert capsys.readouterr().out.strip() == webhooks.signing_secret(SECRET, info.account_id, 0)
    hold = metering.reserve(engine, account_id=info.account_id, key_id=info.id, model="m",
                            prompt_tokens=60, max_tokens=0, price_in=10**6, price_out=0)
    metering.settle_hold(engine, hold, 0)
    runner = CliRunner()
    from avokit.cli.main import build_app

    out = runner.invoke(build_app(), ["alerts", "deliver", "--once", "--db", db])
    assert out.exit_code == 0 and "1 pending" in out.output, out.output
    out = runner.invoke(build_app(), ["alerts", "list", "--status", "pending", "--db", db],
                        env={"COLUMNS": "300"})  # one table row per line
    assert out.exit_code == 0 and "credit.low" in out.output and "ConnectError" in out.output
    out = runner.invoke(build_app(), ["alerts", "list", "--status", "lost", "--db", db])
    assert out.exit_code != 0 and "--status" in str(out.exception)
    engine.dispose()
