"""The metrics' cheap request path: bound children kept per label value (the right series, the
same objects every request), the gauge span, and where values live: one `avokit serve` worker
keeps them in the process (no multiprocess files, even with PROMETHEUS_MULTIPROC_DIR set),
its admin listener serving that process's registry. Several workers are tested in
test_gateway_ops.py (multiprocess files, summed)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import (
    SECRET,
    Server,
    auth,
    build_registry,
    free_port,
    run_mock_upstream,
    samples,
    total,
)

from avokit.gateway.metrics import OTHER_MODEL, GatewayMetrics

CHAT = {"model": "avo-tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
ROUTE = "/v1/chat/completions"


def _found(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(generate_latest(metrics.registry).decode())


def test_bound_children_are_the_right_series_and_kept() -> None:
    metrics = GatewayMetrics(["a", "b"])
    # kept: the same children on every request, and they are the labelled ones
    assert metrics.series("a") is metrics.series("a")
    assert metrics.series("a").prompt_tokens is metrics.prompt_tokens.labels("a")
    assert metrics.series("a").e2e is metrics.e2e.labels("a")
    assert metrics.series("not served") is metrics.series(OTHER_MODEL)
    for _ in range(3):
        metrics.answered(ROUTE, "a", 200, 0.004)
    metrics.answered(ROUTE, "b", 200, 0.2)
    metrics.answered(ROUTE, "a", 429, 0.001)
    metrics.answered(ROUTE, "sent by a client", 200, 0.01)
    metrics.answered("/health", None, 200, 0.0)
    metrics.answered("unmatched", None, 404, 0.0)
    assert len(metrics._answered) == 6  # one bound child per (route, model, status) seen
    metrics.billed("a", 1, prompt=10, completion=4, charge=700)
    metrics.billed("a", 2, prompt=5, completion=1, charge=300)
    metrics.billed("b", 1, prompt=7, completion=2, charge=90)
    metrics.refused("credit")
    metrics.refused("credit")
    metrics.engine_failed("b")
    found = _found(metrics)
    assert total(found, "avokit_requests_total", route=ROUTE, model="a", status="200") == 3
    assert total(found, "avokit_requests_total", route=ROUTE, model="a", status="429") == 1
    assert total(found, "avokit_requests_total", route=ROUTE, model="b") == 1
    assert total(found, "avokit_requests_total", model=OTHER_MODEL) == 1
    assert total(found, "avokit_requests_total", route="/health", model="") == 1
    assert total(found, "avokit_requests_total", route="unmatched", status="404") == 1
    # only generation requests (a model noted) are timed, each under its own model
    assert total(found, "avokit_e2e_request_latency_seconds_count", model="a") == 4
    assert total(found, "avokit_e2e_request_latency_seconds_count", model="b") == 1
    assert total(found, "avokit_e2e_request_latency_seconds_count", model=OTHER_MODEL) == 1
    assert total(found, "avokit_e2e_request_latency_seconds_count") == 6
    assert total(found, "avokit_e2e_request_latency_seconds_bucket", model="b", le="0.25") == 1
    assert total(found, "avokit_e2e_request_latency_seconds_bucket", model="b", le="0.1") == 0
    assert total(found, "avokit_prompt_tokens_total", model="a") == 15
    assert total(found, "avokit_generation_tokens_total", model="a") == 5
    assert total(found, "avokit_spend_micros_total", model="a") == 1000
    assert total(found, "avokit_spend_micros_total", model="b") == 90
    assert total(found, "avokit_refusals_total", kind="credit") == 2
    assert total(found, "avokit_refusals_total", kind="spend_cap") == 0
    assert total(found, "avokit_engine_errors_total", model="b") == 1
    assert total(found, "avokit_engine_errors_total", model="a") == 0


def test_account_labels_still_split_spend_by_account() -> None:
    metrics = GatewayMetrics(["a"], account_salt="salt")
    assert metrics.series("a").spend is None  # bound per account, not kept
    metrics.billed("a", 1, prompt=1, completion=1, charge=40)
    metrics.billed("a", 1, prompt=1, completion=1, charge=2)
    metrics.billed("a", 2, prompt=1, completion=1, charge=100)
    found = _found(metrics)
    one, two = metrics.account_label(1), metrics.account_label(2)
    assert one != two
    assert total(found, "avokit_spend_micros_total", model="a", account=one) == 42
    assert total(found, "avokit_spend_micros_total", model="a", account=two) == 100
    assert total(found, "avokit_prompt_tokens_total", model="a") == 3


def test_gauge_span_counts_while_the_block_runs() -> None:
    metrics = GatewayMetrics(["a"])
    running = metrics.running
    with metrics.in_engine:
        with metrics.in_engine:  # one span object serves every concurrent request
            assert running._value.get() == 2
        assert running._value.get() == 1
    with pytest.raises(RuntimeError), metrics.in_engine:
        raise RuntimeError("engine failed")
    assert running._value.get() == 0


def test_stream_timer_observes_into_the_models_series() -> None:
    metrics = GatewayMetrics(["a"])
    timer = metrics.stream_timer("a")
    timer.event(1)
    timer.event(3)
    timer.event(0)
    found = _found(metrics)
    assert total(found, "avokit_time_to_first_token_seconds_count", model="a") == 1
    assert total(found, "avokit_inter_token_latency_seconds_count", model="a") == 3


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from run_mock_upstream(tmp_path_factory.mktemp("up"), MOCK_TOKENS="4",
                                 MOCK_DELAY_S="0")


def test_one_worker_keeps_metrics_in_the_process(upstream: str, tmp_path: Path) -> None:
    """`avokit serve --metrics-bind` with one worker: the listener serves the process's own
    values, and no multiprocess file is written, though PROMETHEUS_MULTIPROC_DIR is set."""
    from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
    from avokit.gateway.services import keys

    registry = build_registry(tmp_path / "reg" / "registry").parent
    db = f"sqlite:///{tmp_path}/m.db"
    run_migrations(db)
    with session_factory(make_db_engine(db)).begin() as s:
        key, _ = keys.create_key(s, SECRET, name="paying", credit_micros=10**9,
                                 prices={"*": {"input": 1000, "output": 3000}})
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    admin = free_port()
    srv = Server({"AVOKIT_SECRET": SECRET, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
                 tmp_path / "serve.log",
                 cli=["--registry", str(registry), "--db", db, "--engine", "vllm",
                      "--upstream", upstream, "--metrics-bind", f"127.0.0.1:{admin}"],
                 start_timeout_s=300).start()
    try:
        codes = [httpx.post(srv.url + "/v1/chat/completions", json=CHAT, headers=auth(key),
                            timeout=60).status_code for _ in range(3)]
        assert codes == [200] * 3
        # the mechanism: the admin listener answers, with this process's numbers
        found = samples(httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text)
        assert total(found, "avokit_requests_total", route=ROUTE, model="avo-tiny",
                     status="200") == 3
        assert total(found, "avokit_e2e_request_latency_seconds_count", model="avo-tiny") == 3
        assert total(found, "avokit_generation_tokens_total", model="avo-tiny") == 3 * 4
        assert total(found, "avokit_open_reservations") == 0
        assert total(found, "avokit_requests_running") == 0
        assert list(multiproc.iterdir()) == []  # kept in the process: no file per pid
        assert "one worker: metrics kept in the process" in (tmp_path / "serve.log").read_text()
    finally:
        srv.stop()
