"""What the metrics cost: the gateway benchmark's rounds (bench/gateway/run.py) with metrics
on, against the same gateway before they existed, in one run on one machine.

Targets, each with its own SQLite database, in front of the same mock upstream:
  * direct: the upstream itself;
  * avokit-base: the commit this branch started from (``--base``, extracted with
    ``git archive`` and imported through PYTHONPATH): no metrics, no request ids;
  * avokit: this version, one worker (metrics kept in the process: /metrics behind its token);
  * avokit-metrics: this version with ``--metrics-bind`` (multiprocess mode: every value
    written to a memory-mapped file, as with several workers), the admin listener scraped
    once a second during the rounds, as Prometheus would.
Target: avokit-metrics >= 98% of avokit-base's requests/s. Writes
bench/results/gateway_metrics.json and .md with the CPU model, load and steal.

Usage: python -m bench.gateway.metrics_cost [--base COMMIT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx

from bench.gateway.run import (
    AVOKIT_FLAGS,
    CONC,
    LAT_N,
    ROOT,
    ROUNDS,
    TPUT_N,
    Server,
    _commit,
    _cpu_ticks,
    _database,
    _load1,
    _machine,
    _probe_ms,
    _round,
    _steal_pct,
    _summary,
    _wait,
    build_registry,
    free_port,
)
from bench.provenance import Provenance
from bench.results_io import write_json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="59871da", help="commit measured as avokit-base")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="avokit-bench-metrics-"))
    base_src = tmp / "base"
    base_src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "avokit"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base_src)], input=archive, check=True)
    servers: list[Server] = []
    stop = threading.Event()
    scrapes = 0
    up = None
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        up = subprocess.Popen([sys.executable, str(ROOT / "bench/gateway/mock_upstream.py"),
                               str(up_port)],
                              env={**os.environ, "MOCK_TOKENS": "8", "MOCK_DELAY_S": "0"})
        _wait(upstream + "/v1/models")
        build_registry(tmp / "registry")
        admin = free_port()
        targets: dict[str, tuple[str, str]] = {"direct": (upstream, "none")}
        for name, extra, flags in [
                ("avokit-base", {"PYTHONPATH": str(base_src)}, []),
                ("avokit", {}, []),
                ("avokit-metrics", {"PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom")},
                 ["--metrics-bind", f"127.0.0.1:{admin}"])]:
            key, env = _database(tmp / f"{name}.db", tmp / "registry", upstream)
            srv = Server({**env, **extra}, tmp / f"{name}.log", cli=[*AVOKIT_FLAGS, *flags],
                         start_timeout_s=300).start()
            servers.append(srv)
            targets[name] = (srv.url, key)

        def scrape() -> None:
            nonlocal scrapes
            while not stop.wait(1.0):
                httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).raise_for_status()
                scrapes += 1

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        load_start, probe_start, ticks_start = _load1(), _probe_ms(), _cpu_ticks()
        raw: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for _ in range(ROUNDS):
            for name, measured in asyncio.run(_round(targets)).items():
                raw[name].append(measured)
        load_end, probe_end, ticks_end = _load1(), _probe_ms(), _cpu_ticks()
        stop.set()
        scraper.join(5)
        final = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    finally:
        stop.set()
        for srv in servers:
            srv.stop()
        if up is not None:
            up.terminate()
            up.wait(20)
    results = {name: _summary(rounds) for name, rounds in raw.items()}
    ratio = results["avokit-metrics"]["rps"] / results["avokit-base"]["rps"]
    served = sum(float(line.rsplit(" ", 1)[1]) for line in final.splitlines()
                 if line.startswith("avokit_requests_total{") and 'status="200"' in line)
    out = {"machine": {**_machine(), "load1_start": load_start, "load1_end": load_end,
                       "probe_ms_start": probe_start, "probe_ms_end": probe_end,
                       "steal_pct": _steal_pct(ticks_start, ticks_end)},
           "commit": _commit(), "base": args.base, "rounds": ROUNDS, "latency_requests": LAT_N,
           "throughput_requests": TPUT_N, "concurrency": CONC, "scrapes": scrapes,
           "avokit_metrics_requests_counted": served,
           "results": {n: {k: v for k, v in r.items() if k != "lat"} for n, r in results.items()},
           "rps_ratio_metrics_vs_base": round(ratio, 4), "target_met": ratio >= 0.98}
    write_json(ROOT / "bench/results/gateway_metrics.json", out, Provenance.collect(dtype=None))
    (ROOT / "bench/results/gateway_metrics.md").write_text(_markdown(out))
    print(_markdown(out))


def _markdown(out: dict[str, Any]) -> str:
    lines = ["# Gateway with metrics on (bench/gateway/metrics_cost.py)", "",
             f"Machine: {out['machine']}", "",
             f"Commit {out['commit']}, base {out['base']}; {out['rounds']} rounds, each "
             f"{out['latency_requests']} sequential requests per target (turns) + "
             f"{out['throughput_requests']} at concurrency {out['concurrency']}; the admin "
             f"listener scraped {out['scrapes']} times during the rounds.", "",
             "| target | p50 ms | p99 ms | requests/s | requests/s per round |",
             "| --- | ---: | ---: | ---: | --- |"]
    for name, r in out["results"].items():
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | "
                     f"{', '.join(f'{x:.0f}' for x in r['rps_per_round'])} |")
    lines += ["", f"avokit-metrics / avokit-base requests/s: "
              f"{out['rps_ratio_metrics_vs_base']:.3f} (target >= 0.98): "
              f"{'met' if out['target_met'] else 'NOT met'}. Requests counted by "
              f"avokit_requests_total (200) on the metrics target: "
              f"{out['avokit_metrics_requests_counted']:.0f}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
