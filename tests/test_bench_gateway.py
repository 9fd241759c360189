"""The gateway benchmark's bookkeeping (bench/gateway/run.py) on hand-made runs: percentiles per
round, the history of runs and the Markdown that reports every run beside the latest; the
metrics-cost benchmark's CPU reading (bench/gateway/metrics_cost.py) on real processes, its
per-scrape cost, the CPU ratio with the scrapes subtracted and the verdicts its report states."""

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


def test_scrapes_subtracted_takes_each_rounds_scrapes_off_the_metrics_server() -> None:
    """Per round: the metrics server's CPU per request less (scrapes x CPU per scrape) / the
    requests it served, over the metrics-off server's; the mean and t interval over rounds."""
    on, off, served = [4.0, 4.2, 3.9, 4.1], [3.9, 4.0, 3.8, 4.0], [1000, 2000, 1000, 1000]
    out = metrics_cost.scrapes_subtracted(on, off, served, [20, 10, 0, 40], 5.0)
    # 20 scrapes x 5 ms = 100 ms over 1000 requests: 0.1 ms each; 10 over 2000: 0.025;
    # none; 40 over 1000: 0.2
    assert out["on_ms_per_round"] == pytest.approx([3.9, 4.175, 3.9, 3.9])
    ratios = [3.9 / 3.9, 4.175 / 4.0, 3.9 / 3.8, 3.9 / 4.0]
    assert out["ratio_per_round"] == pytest.approx(ratios)
    ref = stats.t.interval(0.95, 3, loc=sum(ratios) / 4, scale=stats.sem(ratios))
    assert out["mean"] == pytest.approx(sum(ratios) / 4)
    assert out["ci95"] == pytest.approx(ref)


def test_no_scrapes_or_a_free_scrape_gives_the_ratio_as_measured() -> None:
    on, off, served = [4.0, 4.2, 3.9], [3.9, 4.0, 3.8], [1431] * 3
    ratios = [a / b for a, b in zip(on, off)]
    mean, ci = metrics_cost._mean_ci95(ratios)
    for scrapes, cost in (([0, 0, 0], 7.5), ([19, 20, 19], 0.0)):
        out = metrics_cost.scrapes_subtracted(on, off, served, scrapes, cost)
        assert out["on_ms_per_round"] == pytest.approx(on)
        assert (out["mean"], *out["ci95"]) == pytest.approx((mean, *ci))
    with pytest.raises(ValueError, match="scrapes 2"):
        metrics_cost.scrapes_subtracted(on, off, served, [0, 0], 1.0)


def test_cpu_verdict_takes_the_interval_at_both_ends_of_the_scrape_cost() -> None:
    """The per-scrape cost is an estimate too: the judged interval runs from the lower end
    with the dearest scrape to the upper end with the cheapest; a run that meets the target
    only with the point cost is not judged met."""
    cpu_ms = {"avokit-off": [3.0, 3.0, 3.0], "avokit-metrics": [3.1, 3.103, 3.097]}
    served, scrapes = [1000] * 3, [20] * 3
    tight = metrics_cost.cpu_figures(cpu_ms, served, scrapes,
                                     {"cpu_ms_per_scrape": 5.0, "ci95": [4.9, 5.1]})
    judged = tight["server_cpu_ratio_metrics_vs_off_scrapes_subtracted"]
    assert tight["server_cpu_ratio_per_round_scrapes_subtracted"] == pytest.approx(
        [1.0, 1.001, 0.999])
    assert tight["server_cpu_ratio_per_round"] == pytest.approx([1.0333, 1.0343, 1.0323])
    dear = metrics_cost.scrapes_subtracted(cpu_ms["avokit-metrics"], cpu_ms["avokit-off"],
                                           served, scrapes, 5.1)["ci95"]
    cheap = metrics_cost.scrapes_subtracted(cpu_ms["avokit-metrics"], cpu_ms["avokit-off"],
                                            served, scrapes, 4.9)["ci95"]
    assert judged["ci95_over_scrape_cost"] == pytest.approx([dear[0], cheap[1]], abs=1e-4)
    assert judged["ci95_over_scrape_cost"][0] < judged["ci95"][0] <= judged["ci95"][1] < \
        judged["ci95_over_scrape_cost"][1]
    assert tight["target_met_cpu_scrapes_subtracted"] and not tight["target_met_cpu"]
    # a scrape that may cost as little as 1 ms leaves up to 0.08 ms per request in: 1.027
    loose = metrics_cost.cpu_figures(cpu_ms, served, scrapes,
                                     {"cpu_ms_per_scrape": 5.0, "ci95": [1.0, 9.0]})
    assert loose["server_cpu_ratio_metrics_vs_off_scrapes_subtracted"]["ci95"] == \
        judged["ci95"]
    assert not loose["target_met_cpu_scrapes_subtracted"]


def test_verdict_is_met_not_met_or_unresolved_by_the_whole_interval() -> None:
    verdict = metrics_cost.verdict
    assert verdict([0.98, 1.01], 0.98, at_least=True) == "met"
    assert verdict([0.95, 0.979], 0.98, at_least=True) == "not met"
    assert verdict([0.95, 1.01], 0.98, at_least=True) == "unresolved"
    assert verdict([0.99, 1.02], 1.02, at_least=False) == "met"
    assert verdict([1.021, 1.05], 1.02, at_least=False) == "not met"
    assert verdict([1.01, 1.03], 1.02, at_least=False) == "unresolved"


def test_results_json_and_markdown_carry_the_scrapes_and_each_verdict() -> None:
    """A hand-made run of three rounds through the results builder and the report: the
    scrapes per round, the per-scrape cost, the CPU ratio with and without the scrapes and a
    verdict for each judged figure, stated in the report."""
    walls = {"direct": 0.2, "avokit-base": 2.0, "avokit-off": 2.0}
    raw = {name: [{"lat": [0.001, 0.002], "wall": w}] * 3 for name, w in walls.items()}
    # metrics on: 400 requests in 2.0, 2.02 and 1.98 s: 200, 198 and 202 requests/s
    raw["avokit-metrics"] = [{"lat": [0.001, 0.002], "wall": run.TPUT_N / r}
                             for r in (200, 198, 202)]
    order = list(raw)
    measured = {"raw": raw, "orders": [order, order[::-1], order], "round_load": [1.0, 1.5, 2.0],
                "cpu_ms": {"avokit-base": [2.9] * 3, "avokit-off": [3.0] * 3,
                           "avokit-metrics": [3.1, 3.103, 3.097]},
                "served": [1000] * 3, "scrapes": [20, 21, 19]}
    cost = {"batch": 50, "repeats": 6, "exposition_bytes": 12345, "cpu_ms_per_scrape": 5.0,
            "ci95": [4.9, 5.1], "per_batch": [5.0] * 6, "idle_cpu_ms_per_batch": [0.0] * 6}
    meta = {"machine": {"nproc": 2}, "commit": {"commit": "abc1234"}, "base": "59871da",
            "rounds": 3, "duration_s": 100, "rounds_s": 60, "latency_requests": 1000,
            "throughput_requests": run.TPUT_N, "concurrency": run.CONC,
            "scrape_interval_s": 1.0, "scrapes": 61, "avokit_metrics_requests_counted": 4293.0}
    out = json.loads(json.dumps(metrics_cost._output(meta, measured, cost)))
    assert out["scrapes_per_round"] == [20, 21, 19] and out["scrape_cost"] == cost
    assert out["server_cpu_ms_per_request_metrics_scrapes_subtracted"] == pytest.approx(
        [3.0, 2.998, 3.002])
    assert out["rps_ratio_per_round"] == [1.0, 0.99, 1.01]
    assert out["rps_ratio_metrics_vs_off_ci95"] == pytest.approx(
        stats.t.interval(0.95, 2, loc=1.0, scale=stats.sem([1.0, 0.99, 1.01])), abs=1e-4)
    v = out["verdicts"]
    assert {k: x["verdict"] for k, x in v.items()} == {
        "rps_median": "met", "rps_mean": "unresolved", "cpu_scrapes_subtracted": "met"}
    assert v["cpu_scrapes_subtracted"]["ci95"] == \
        out["server_cpu_ratio_metrics_vs_off_scrapes_subtracted"]["ci95_over_scrape_cost"]
    assert out["target_met"] and out["target_met_cpu_scrapes_subtracted"]
    assert not out["target_met_cpu"]  # as measured, the scrapes' work in it: 1.033

    text = metrics_cost._markdown(out)
    assert "## The 2% target (issue 35) and what it is judged on" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
            if line.startswith(("| requests/s", "| server CPU"))}
    assert rows["requests/s, median of the per-round ratios"].endswith("| >= 0.98 | **met** |")
    assert rows["requests/s, mean of the per-round ratios"].endswith("**unresolved** |")
    assert rows["server CPU per request, scrapes subtracted"].endswith(
        "| <= 1.02, the whole interval | **met** |")
    assert "5.000 ms of its CPU (mean of 6 batches of 50" in text
    assert "the scrapes' work in it, 1.0333" in text
    table = [line for line in text.splitlines() if line.startswith(("| 1 |", "| 2 |", "| 3 |"))]
    assert table[1].endswith("| 21 | 1.034 | 0.999 |")  # 3.103 - 21 x 5 / 1000 = 2.998


def test_scrape_cost_reads_the_servers_cpu_per_scrape() -> None:
    """A real HTTP server whose every GET burns 20 ms of its CPU: the per-scrape cost is the
    20 ms (and the little an HTTP exchange costs), read from the process as the rounds read it."""
    port = run.free_port()
    code = f"""
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        t = time.process_time()
        while time.process_time() - t < 0.02:
            pass
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", {port}), H).serve_forever()
"""
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        run._wait(f"http://127.0.0.1:{port}/", timeout=60)
        cost = metrics_cost._scrape_cost(SimpleNamespace(proc=proc),  # type: ignore[arg-type]
                                         f"http://127.0.0.1:{port}/", batch=15, repeats=3)
    finally:
        proc.kill()
        proc.wait()
    assert cost["batch"] == 15 and cost["repeats"] == 3 and cost["exposition_bytes"] == 2
    assert len(cost["per_batch"]) == len(cost["idle_cpu_ms_per_batch"]) == 3
    assert 19 <= cost["cpu_ms_per_scrape"] <= 24, cost
    lo, hi = cost["ci95"]
    assert lo <= cost["cpu_ms_per_scrape"] <= hi


def test_scrape_cost_takes_the_idle_waits_cpu_off_each_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch's CPU less that of the idle wait after it (the server's background work),
    per scrape; the mean and t interval over batches. The server's CPU readings are scripted:
    (before, after the batch, after the wait) per batch."""
    readings = iter([0.0, 0.30, 0.32,  # 300 ms for 10 scrapes, 20 ms idle: 28 ms each
                     1.0, 1.26, 1.26,  # 260 ms, nothing idle: 26 ms
                     2.0, 2.35, 2.40])  # 350 ms, 50 idle: 30 ms
    monkeypatch.setattr(metrics_cost, "_cpu_seconds", lambda server: next(readings))
    monkeypatch.setattr(metrics_cost.time, "sleep", lambda s: None)
    scrapes: list[str] = []

    def get(url: str, timeout: float) -> SimpleNamespace:
        scrapes.append(url)
        return SimpleNamespace(raise_for_status=lambda: None, content=b"x" * 7)

    monkeypatch.setattr(metrics_cost.httpx, "get", get)
    cost = metrics_cost._scrape_cost(SimpleNamespace(), "http://admin/metrics",  # type: ignore[arg-type]
                                     batch=10, repeats=3)
    assert len(scrapes) == 30 and cost["exposition_bytes"] == 7
    assert cost["per_batch"] == pytest.approx([28.0, 26.0, 30.0])
    assert cost["idle_cpu_ms_per_batch"] == pytest.approx([20.0, 0.0, 50.0])
    assert cost["cpu_ms_per_scrape"] == pytest.approx(28.0)
    assert cost["ci95"] == pytest.approx(stats.t.interval(0.95, 2, loc=28.0,
                                                          scale=stats.sem([28, 26, 30])),
                                         abs=1e-4)
