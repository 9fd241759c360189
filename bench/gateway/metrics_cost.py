"""What the metrics cost: the gateway benchmark's rounds (bench/gateway/run.py) with metrics
on, against the same gateway with metrics off and before they existed, in one run on one machine.

Targets, each with its own SQLite database, in front of the same mock upstream:
  * direct: the upstream itself;
  * avokit-base: the commit this branch started from (``--base``, extracted with
    ``git archive`` and imported through PYTHONPATH): no metrics, no request ids;
  * avokit-off: this version with metrics turned off (``AVOKIT_METRICS_ENABLED=0``: nothing
    kept, no middleware), the same code otherwise;
  * avokit-metrics: this version as an operator runs it with metrics, ``avokit serve
    --metrics-bind`` (one worker: values kept in the process, the admin listener serving
    them from a thread of it; multiprocess files are for several workers), the admin
    listener scraped once a second during the rounds, as Prometheus would.
Target (issue 35): metrics on cost <= 2% of the requests/s: avokit-metrics >= 98% of avokit-off,
the same commit with metrics off. Also reported: avokit-metrics / avokit-base, which adds everything
else that changed since the base (request ids, spend caps, alerts, ...). Writes
bench/results/gateway_metrics.json and .md with the CPU model, load and steal.

The rounds interleave the arms: every round measures each target (latency in turns, then
throughput one target after another), and the order is reversed every other round, so load
from outside (this machine is shared) falls on every arm alike. The verdict is the median of
the per-round ratios avokit-metrics / avokit-off, each round's pair measured back to back (the
mean and its standard error are reported beside it);
the 1-minute load average before each round is recorded beside it.

Beside requests/s, each round reads every gateway's own CPU time (user + system, the server
process and its children, from /proc through psutil) before and after the round, divided by
the requests it served in the round: CPU milliseconds per request. On this shared 2-core
machine the requests/s of one round moves by +-15% with whatever else runs, while a server's
CPU per request does not depend on how the cores are shared, so the same per-round ratio
(metrics on / off) in CPU resolves a 2% cost where requests/s cannot. When the gateway is the
bottleneck, requests/s at saturation is the inverse of its CPU per request: a CPU ratio
<= 1.02 is the same target.

Usage: python -m bench.gateway.metrics_cost [--base COMMIT] [--rounds N] [--latency-requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.gateway.run import (
    AVOKIT_FLAGS,
    CONC,
    LAT_N,
    ROOT,
    SECRET,
    TPUT_N,
    WARMUP,
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
    parser.add_argument("--rounds", type=int, default=8, help="A/B rounds (order alternates)")
    parser.add_argument("--latency-requests", type=int, default=LAT_N,
                        help="sequential requests per target and round (the verdict is "
                        "requests/s; fewer make a round shorter on a busy machine)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds: at least 2 (the order alternates between rounds)")
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
        # the base's own code: PYTHONSAFEPATH keeps `python -m avokit` from importing this
        # checkout from the working directory ahead of PYTHONPATH (before this, avokit-base
        # ran the current code), and its database is made by its own migrations
        base_env = {"PYTHONPATH": str(base_src), "PYTHONSAFEPATH": "1"}
        # metrics off and on next to each other: each round measures the verdict's pair
        # back to back
        for name, extra, flags in [
                ("avokit-base", base_env, []),
                ("avokit-off", {"AVOKIT_METRICS_ENABLED": "0"}, []),
                ("avokit-metrics", {}, ["--metrics-bind", f"127.0.0.1:{admin}"])]:
            if name == "avokit-base":
                key, env = _base_database(tmp / f"{name}.db", tmp / "registry", upstream,
                                          base_env)
            else:
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
        named = dict(zip(["avokit-base", "avokit-off", "avokit-metrics"], servers, strict=True))
        cpu_ms: dict[str, list[float]] = {name: [] for name in named}
        orders: list[list[str]] = []
        round_load: list[float] = []
        for i in range(args.rounds):
            order = list(targets) if i % 2 == 0 else list(reversed(targets))
            orders.append(order)
            round_load.append(round(_load1(), 2))
            cpu_before = {srv_name: _cpu_seconds(srv) for srv_name, srv in named.items()}
            measured_round = asyncio.run(_round({n: targets[n] for n in order},
                                                args.latency_requests))
            served_in_round = 1 + WARMUP + args.latency_requests + TPUT_N
            for srv_name, srv in named.items():
                cpu_ms[srv_name].append(round(1000 * (_cpu_seconds(srv) - cpu_before[srv_name])
                                              / served_in_round, 4))
            for name, measured in measured_round.items():
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
    def ratios(a: str, b: str) -> list[float]:
        return [round(x / y, 4) for x, y in zip(results[a]["rps_per_round"], results[b]["rps_per_round"])]

    per_round = ratios("avokit-metrics", "avokit-off")
    vs_base = ratios("avokit-metrics", "avokit-base")
    ratio = statistics.median(per_round)
    sem = statistics.stdev(per_round) / len(per_round) ** 0.5
    cpu_ratio = [round(on / off, 4) for on, off in zip(cpu_ms["avokit-metrics"], cpu_ms["avokit-off"])]
    cpu_mean, cpu_ci = _mean_ci95(cpu_ratio)
    served = sum(float(line.rsplit(" ", 1)[1]) for line in final.splitlines()
                 if line.startswith("avokit_requests_total{") and 'status="200"' in line)
    out = {"machine": {**_machine(), "nice": os.nice(0), "load1_start": load_start,
                       "load1_end": load_end,
                       "probe_ms_start": probe_start, "probe_ms_end": probe_end,
                       "steal_pct": _steal_pct(ticks_start, ticks_end)},
           "commit": _commit(), "base": args.base, "rounds": args.rounds,
           "round_orders": orders, "round_load1": round_load,
           "latency_requests": args.latency_requests,
           "throughput_requests": TPUT_N, "concurrency": CONC, "scrapes": scrapes,
           "avokit_metrics_requests_counted": served,
           "results": {n: {k: v for k, v in r.items() if k != "lat"} for n, r in results.items()},
           "rps_ratio_per_round": per_round,
           "rps_ratio_metrics_vs_off": round(ratio, 4),
           "rps_ratio_metrics_vs_off_mean": round(statistics.fmean(per_round), 4),
           "rps_ratio_metrics_vs_off_sem": round(sem, 4),
           "rps_ratio_per_round_vs_base": vs_base,
           "rps_ratio_metrics_vs_base": round(statistics.median(vs_base), 4),
           "server_cpu_ms_per_request_per_round": cpu_ms,
           "server_cpu_ratio_per_round": cpu_ratio,
           "server_cpu_ratio_metrics_vs_off": {"mean": round(cpu_mean, 4),
                                               "ci95": [round(x, 4) for x in cpu_ci]},
           "target_met": ratio >= 0.98,
           # the same target in the gateway's own CPU: metrics cost <= 2% of it, the whole interval
           "target_met_cpu": cpu_ci[1] <= 1.02}
    write_json(ROOT / "bench/results/gateway_metrics.json", out, Provenance.collect(dtype=None))
    (ROOT / "bench/results/gateway_metrics.md").write_text(_markdown(out))
    print(_markdown(out))


def _cpu_seconds(server: Server) -> float:
    """User + system CPU seconds of a running gateway process and all its children."""
    assert server.proc is not None
    root = psutil.Process(server.proc.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:  # a child that exited between listing and reading
            continue
        total += times.user + times.system
    return total


def _mean_ci95(values: list[float]) -> tuple[float, tuple[float, float]]:
    """Mean and Student t 95% interval of per-round values (rounds are independent pairs)."""
    from scipy import stats

    mean = statistics.fmean(values)
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / len(values) ** 0.5
    return mean, (mean - half, mean + half)


def _base_database(path: Path, registry: Path, upstream: str, base_env: dict[str, str]
                   ) -> tuple[str, dict[str, str]]:
    """:func:`run._database` run by the base commit's code (its own migrations), in a
    subprocess whose ``base_env`` imports only that code."""
    # the repository root goes last: `bench` (run.py's results writer) resolves there, while
    # `avokit` still resolves to the base commit's checkout first on base_env's PYTHONPATH
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); sys.path.append({str(ROOT)!r}); "
            f"from pathlib import Path; from run import _database; "
            f"print(_database(Path({str(path)!r}), Path({str(registry)!r}), {upstream!r})[0])")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env={**os.environ, **base_env})
    key = done.stdout.strip().splitlines()[-1]
    return key, {"AVOKIT_REGISTRY": str(registry), "AVOKIT_DB_URL": f"sqlite:///{path}",
                 "AVOKIT_SECRET": SECRET, "AVOKIT_ENGINE": "vllm", "AVOKIT_UPSTREAM": upstream}


def _markdown(out: dict[str, Any]) -> str:
    lines = ["# Gateway with metrics on (bench/gateway/metrics_cost.py)", "",
             f"Machine: {out['machine']}", "",
             f"Commit {out['commit']}, base {out['base']}; {out['rounds']} rounds, each "
             f"{out['latency_requests']} sequential requests per target (turns) + "
             f"{out['throughput_requests']} at concurrency {out['concurrency']}, the target "
             "order reversed every other round; the admin "
             f"listener scraped {out['scrapes']} times during the rounds.", "",
             "| round | order | load1 before | metrics on / off requests/s | metrics / base | "
             "on / off server CPU per request |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for i, (order, load, r, rb, c) in enumerate(zip(out["round_orders"], out["round_load1"],
                                                    out["rps_ratio_per_round"],
                                                    out["rps_ratio_per_round_vs_base"],
                                                    out["server_cpu_ratio_per_round"])):
        lines.append(f"| {i + 1} | {' → '.join(order)} | {load:.1f} | {r:.3f} | {rb:.3f} | {c:.3f} |")
    lines += ["",
             "| target | p50 ms | p99 ms | requests/s | requests/s per round |",
             "| --- | ---: | ---: | ---: | --- |"]
    for name, r in out["results"].items():
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | "
                     f"{', '.join(f'{x:.0f}' for x in r['rps_per_round'])} |")
    lines += ["", f"Metrics on / off (avokit-metrics / avokit-off, the same commit), median of the "
              f"per-round ratios: {out['rps_ratio_metrics_vs_off']:.3f} (mean "
              f"{out['rps_ratio_metrics_vs_off_mean']:.3f} ± {out['rps_ratio_metrics_vs_off_sem']:.3f} "
              f"standard error; target >= 0.98): {'met' if out['target_met'] else 'NOT met'}. "
              f"Against the base commit (everything since, metrics included): "
              f"{out['rps_ratio_metrics_vs_base']:.3f}. Requests counted by "
              f"avokit_requests_total (200) on the metrics target: "
              f"{out['avokit_metrics_requests_counted']:.0f}.", "",
              _cpu_line(out), ""]
    return "\n".join(lines)


def _cpu_line(out: dict[str, Any]) -> str:
    """The verdict in the gateways' own CPU time (see the module docstring)."""
    cpu = out["server_cpu_ratio_metrics_vs_off"]
    per = {k: statistics.median(v) for k, v in out["server_cpu_ms_per_request_per_round"].items()}
    return ("Server CPU per request (median over rounds): "
            + ", ".join(f"{k} {v:.3f} ms" for k, v in per.items())
            + f". Metrics on / off in server CPU per request, mean of the per-round ratios "
            f"{cpu['mean']:.4f}, 95% t interval [{cpu['ci95'][0]:.4f}, {cpu['ci95'][1]:.4f}] "
            f"(target: the whole interval <= 1.02): {'met' if out['target_met_cpu'] else 'NOT met'}.")


if __name__ == "__main__":
    main()
