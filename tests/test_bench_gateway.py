"""The gateway benchmark's bookkeeping (bench/gateway/run.py) on hand-made runs: percentiles per
round, the history of runs and the Markdown that reports every run beside the latest; the
metrics-cost benchmark's CPU reading (bench/gateway/metrics_cost.py) on real processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from scipy import stats

from bench.gateway import metrics_cost, run


def _out(ratio: float, client: str = "aiohttp x") -> dict[str, Any]:
    row = {"p50_ms": 1.0, "p99_ms": 2.0, "p99_ms_per_round": [2.0], "rps": 10.0,
           "rps_per_round": [10.0], "added_p50_ms": 0.5, "added_p99_ms": 1.0}
    verdict = {"added_p50_ratio": ratio, "added_p99_ratio": ratio, "rps_ratio": 4.0,
               "target_met": ratio <= 1 / 3}
    config = {"client": client, "rounds": 1, "warmup": 0, "latency_requests": 1,
              "throughput_requests": 1, "concurrency": 1, "avokit": "a",
              "avokit-redis": "r", "litellm": "l"}
    return {"machine": {"steal_pct": 1.5}, "config": config,
            "results": {name: dict(row) for name in ("direct", "avokit", "avokit-redis",
                                                     "litellm")},
            "verdict": {**verdict, "redis": dict(verdict)}}


def test_summary_p99_overall_and_per_round() -> None:
    # 100 latencies per round: the p99 is the 99th smallest (index int(0.99 * 99) = 98)
    quiet = [i / 1000 for i in range(100)]
    burst = [i / 1000 for i in range(98)] + [1.0, 1.0]  # two stalls of 1 s in one round
    out = run._summary([{"lat": sorted(quiet), "wall": 1.0},
                        {"lat": sorted(burst), "wall": 2.0}])
    assert out["p99_ms_per_round"] == [98.0, 1000.0]
    # all 200: 0, 0, ..., 97, 97, 98, 99, 1000, 1000; index int(0.99 * 199) = 197 is 99 ms
    assert out["p99_ms"] == pytest.approx(99.0)
    assert out["rps"] == pytest.approx(2 * run.TPUT_N / 3.0)


def test_history_appends_every_run_and_the_report_lists_its_configuration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "_commit", lambda: {"commit": "abc1234", "dirty": False})
    path = tmp_path / "runs.json"
    run._append_run(path, _out(0.2))
    run._append_run(path, _out(0.9, client="httpx"))  # another configuration
    history = run._append_run(path, _out(0.3))
    assert [r["run"] for r in history["runs"]] == [1, 2, 3]
    saved = json.loads(path.read_text())
    assert saved.pop("provenance")["commit"]  # the shared writer's block (bench/provenance.py)
    assert saved == history
    text = run._markdown(_out(0.3), history)
    table = [line for line in text.splitlines() if line.startswith(("| 1 ", "| 2 ", "| 3 "))]
    assert [line.split(" | ")[0] for line in table] == ["| 1", "| 3"]  # httpx's run left out
    assert "0.20 / 0.20 / 4.00x" in table[0] and table[0].endswith("| True |")
    assert "client aiohttp x" in text and "| 1.5 |" in table[1]


def test_latency_schedule_takes_turns_in_blocks() -> None:
    sched = run._schedule(["direct", "avokit", "litellm"], 120, 50)
    assert sched == [("direct", 50), ("avokit", 50), ("litellm", 50)] * 2 + [
        ("direct", 20), ("avokit", 20), ("litellm", 20)]
    for name in ("direct", "avokit", "litellm"):
        assert sum(n for t, n in sched if t == name) == 120
    with pytest.raises(ValueError, match="block"):
        run._schedule(["direct"], 10, 0)


def test_steal_share_between_two_readings() -> None:
    assert run._steal_pct((100, 10), (190, 20)) == 10.0  # 90 busy + 10 stolen ticks
    assert run._steal_pct((5, 5), (5, 5)) == 0.0  # nothing ran: no division by zero
    busy, steal = run._cpu_ticks()
    assert busy > 0 and steal >= 0


def test_a_round_interleaves_the_throughput_phase_between_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both phases of `_round` take turns between targets: two real local HTTP servers record
    the order their requests arrive in; after the warm-up and latency requests, the throughput
    requests come in bursts of TPUT_BLOCK, alternating targets."""
    from aiohttp import web

    monkeypatch.setattr(run, "WARMUP", 1)
    monkeypatch.setattr(run, "LAT_N", 4)
    monkeypatch.setattr(run, "LAT_BLOCK", 2)
    monkeypatch.setattr(run, "TPUT_N", 8)
    monkeypatch.setattr(run, "TPUT_BLOCK", 4)
    monkeypatch.setattr(run, "CONC", 2)
    arrivals: list[str] = []

    def app(name: str) -> web.Application:
        async def chat(request: web.Request) -> web.Response:
            arrivals.append(name)
            return web.json_response({"usage": {"completion_tokens": 8}})

        a = web.Application()
        a.router.add_post("/v1/chat/completions", chat)
        return a

    async def main() -> dict[str, dict[str, object]]:
        runners, targets = [], {}
        for name in ("a", "b"):
            runner = web.AppRunner(app(name))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            runners.append(runner)
            targets[name] = (f"http://127.0.0.1:{port}", "key")
        try:
            return await run._round(targets)
        finally:
            for runner in runners:
                await runner.cleanup()

    out = asyncio.run(main())
    assert arrivals[:4] == ["a", "a", "b", "b"]  # the first request and one warm-up each
    assert arrivals[4:12] == ["a", "a", "b", "b"] * 2  # latency: blocks of 2
    assert arrivals[12:] == ["a"] * 4 + ["b"] * 4 + ["a"] * 4 + ["b"] * 4  # throughput: bursts of 4
    assert all(len(r["lat"]) == 4 and r["wall"] > 0 for r in out.values())


def test_server_cpu_reading_counts_the_process_and_its_children() -> None:
    """metrics_cost's CPU per request reads the gateway's own CPU time, workers included: a
    process whose only work is done by a child must still show that work."""
    busy = "import time; t = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])"])
    server = SimpleNamespace(proc=parent)
    try:
        before = metrics_cost._cpu_seconds(server)  # type: ignore[arg-type]
        deadline = time.time() + 120
        while metrics_cost._cpu_seconds(server) - before < 0.35 and time.time() < deadline:  # type: ignore[arg-type]
            time.sleep(0.1)
        assert metrics_cost._cpu_seconds(server) - before >= 0.35  # type: ignore[arg-type]
        assert psutil.Process(parent.pid).cpu_times().user < 0.35  # the child did the work
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()


def test_cpu_ratio_interval_is_the_student_t_interval_of_the_rounds() -> None:
    ratios = [1.01, 1.03, 0.99, 1.02, 1.00]
    mean, (lo, hi) = metrics_cost._mean_ci95(ratios)
    ref = stats.t.interval(0.95, len(ratios) - 1, loc=sum(ratios) / 5, scale=stats.sem(ratios))
    assert mean == pytest.approx(1.01)
    assert (lo, hi) == pytest.approx(ref)
