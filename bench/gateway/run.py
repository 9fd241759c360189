"""Gateway overhead benchmark: avokit vs LiteLLM proxy in front of the same instant upstream.

Starts (all on 127.0.0.1, same machine, same run): the mock upstream
(bench/gateway/mock_upstream.py), avokit (`avokit serve --no-access-log`, engine vllm in front
of the mock, SQLite, a real key with metering) and LiteLLM's proxy (from a separate venv,
master key only, LITELLM_LOG=ERROR) pointing at the same upstream, plus a second avokit with
its own database and its rate limits shared through a local redis-server (`--redis`, one Lua
round trip per request). Then, in ROUNDS rounds, for each target including the upstream itself:
  * latency: LAT_N sequential chat completions (concurrency 1), the targets taking turns in
    blocks of LAT_BLOCK requests so that every target samples the same stretch of time (drifts
    in the load from other work on the machine, and the hypervisor's steal, reach every target
    alike) -> p50 / p99 over all rounds, and the p99 of each round;
  * throughput: TPUT_N chat completions at concurrency CONC, the targets taking turns in
    bursts of TPUT_BLOCK (as the latency phase does; until 2026-12-07 one target ran all its
    TPUT_N after another's, so a burst of outside load could land on one target alone) ->
    requests/s over all rounds (each target's requests over the sum of its bursts' walls), and
    of each round (a skewed round shows).
Added latency = proxy percentile - direct-upstream percentile. One client for every target
(aiohttp, keep-alive connections expiring before uvicorn's 5 s server timeout, so a request is
never sent on a connection the server is closing). The client shares the machine's cores with
the proxies, so it must cost little: httpx's pool at concurrency 32 cost 3.5-5 ms of CPU per
request here (as much as the proxy under test; it capped the direct row near 370 req/s),
aiohttp 0.25-0.3 ms (3,000 requests to the mock upstream, 2026-12-02). Both proxies run one
uvicorn worker, as `avokit serve` and `litellm` do by default.

Recorded with the results: the 1-minute load average and the time of a fixed Python loop
(probe_ms: the speed of a core, which drifts on a shared VM) at the start and the end, and the
share of CPU time the hypervisor stole over the rounds. Writes bench/results/gateway.json and
.md (this run) and appends the run to bench/results/gateway_runs.json (every run, with the
commit it measured), so a result is never reported without the runs beside it.

Usage: python -m bench.gateway.run [--litellm /tmp/litellm-venv/bin/litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.provenance import Provenance
from bench.results_io import write_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from gateway_support import (  # noqa: E402
    SECRET,
    RedisServer,
    Server,
    build_registry,
    free_port,
    redis_server_binary,
)

# sized so that LiteLLM (the slowest target, ~40-110 req/s here) finishes a run in minutes
# on a shared 2-core machine; 1,000 sequential requests per round and 4 rounds put the p99
# on the 40th slowest of 4,000 (with 2 rounds, the 20th of 2,000: a burst of load from
# outside the benchmark moved the p99 ratio by up to 0.3 between runs on a slow machine)
LAT_N, TPUT_N, CONC, WARMUP, ROUNDS = 1000, 400, 32, 30, 4
# sequential requests per turn of a target in the latency phase (see `_schedule`)
LAT_BLOCK = 50
# requests per turn of a target in the throughput phase, sent at concurrency CONC: several
# times CONC, so the ramp-up and drain at a burst's ends stay a small part of it
TPUT_BLOCK = 100
# `avokit serve` as an operator runs it, without per-request access lines: LiteLLM runs at
# LITELLM_LOG=ERROR below, which writes none either (both keep their error logging)
AVOKIT_FLAGS = ["--no-access-log"]
CLIENT = "aiohttp " + aiohttp.__version__
BODY = {"model": "avo-tiny", "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 8}


def _wait(url: str, headers: dict[str, str] | None = None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _schedule(names: list[str], n: int, block: int) -> list[tuple[str, int]]:
    """The latency phase of a round: (target, requests) blocks, the targets taking turns.

    Each target's ``n`` sequential requests are cut into blocks of ``block``; the targets take
    turns block by block, so every target samples the same stretch of time. (One target after
    another put avokit's ~5 s of requests and LiteLLM's ~25 s at different moments, and a burst
    of hypervisor steal in one of them moved that target's p99 alone.) A block rather than
    single requests: work a proxy leaves for after its response (LiteLLM's logging callbacks)
    then lands on its own next request, as in plain sequential traffic, and not on another
    target's.
    """
    if n <= 0 or block <= 0:
        raise ValueError(f"n and block must be positive, got n={n}, block={block}")
    out: list[tuple[str, int]] = []
    for start in range(0, n, block):
        out += [(name, min(block, n - start)) for name in names]
    return out


async def _round(targets: dict[str, tuple[str, str]], lat_n: int | None = None
                 ) -> dict[str, dict[str, Any]]:
    """One round: every target's ``lat_n`` (default ``LAT_N``) latency samples, then its
    throughput at concurrency CONC, the targets taking turns in both (see `_schedule`);
    {target: {"lat": sorted seconds, "wall": seconds its TPUT_N throughput requests took}}."""
    lat_n = LAT_N if lat_n is None else lat_n  # read at call time, as TPUT_N is
    async with contextlib.AsyncExitStack() as stack:
        sessions = {name: await stack.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONC, keepalive_timeout=4.0),
            timeout=aiohttp.ClientTimeout(total=60))) for name in targets}

        async def one(name: str) -> float:
            base, key = targets[name]
            t0 = time.perf_counter()
            async with sessions[name].post(base + "/v1/chat/completions", json=BODY,
                                           headers={"Authorization": f"Bearer {key}"}) as r:
                r.raise_for_status()
                assert (await r.json())["usage"]["completion_tokens"] == 8
            return time.perf_counter() - t0

        for name, (base, key) in targets.items():
            # the first request may load a tokenizer (avokit imports transformers lazily):
            # on a busy machine that can take longer than the per-request timeout above
            async with sessions[name].post(base + "/v1/chat/completions", json=BODY,
                                           headers={"Authorization": f"Bearer {key}"},
                                           timeout=aiohttp.ClientTimeout(total=600)) as r:
                r.raise_for_status()
            for _ in range(WARMUP):
                await one(name)
        lat: dict[str, list[float]] = {name: [] for name in targets}
        for name, count in _schedule(list(targets), lat_n, LAT_BLOCK):
            lat[name] += [await one(name) for _ in range(count)]

        async def burst(name: str, count: int) -> float:
            sem = asyncio.Semaphore(CONC)

            async def limited() -> float:
                async with sem:
                    return await one(name)

            t0 = time.perf_counter()
            await asyncio.gather(*(limited() for _ in range(count)))
            return time.perf_counter() - t0

        wall = dict.fromkeys(targets, 0.0)
        for name, count in _schedule(list(targets), TPUT_N, TPUT_BLOCK):
            wall[name] += await burst(name, count)
        return {name: {"lat": sorted(lat[name]), "wall": wall[name]} for name in targets}


def _p99(lat: list[float]) -> float:
    """The 99th percentile of sorted latencies, in ms."""
    return 1000 * lat[int(0.99 * (len(lat) - 1))]


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    lat = sorted(x for r in rounds for x in r["lat"])
    walls = [r["wall"] for r in rounds]
    # per round too: one burst of load from outside shows as one round's p99 alone
    return {"p50_ms": 1000 * statistics.median(lat), "p99_ms": _p99(lat),
            "p99_ms_per_round": [round(_p99(r["lat"]), 2) for r in rounds],
            "rps": TPUT_N * len(walls) / sum(walls),
            "rps_per_round": [round(TPUT_N / w, 1) for w in walls]}


def _cpu_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq, steal


def _steal_pct(start: tuple[int, int], end: tuple[int, int]) -> float:
    """The share of CPU time (busy + stolen) the hypervisor took between two `_cpu_ticks`."""
    busy, steal = (b - a for a, b in zip(start, end))
    return round(100 * steal / max(busy + steal, 1), 1)


def _probe_ms() -> float:
    """Wall time of a fixed pure-Python loop: on a shared VM the speed of a core drifts, and a
    slow phase shows here before it shows in the tails."""
    t0 = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return round(1000 * (time.perf_counter() - t0), 1)


def _load1() -> float:
    return os.getloadavg()[0]


def _machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor())
    mem = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem / 2**20, 1),
            "python": platform.python_version()}


def _database(path: Path, registry: Path, upstream: str) -> tuple[str, dict[str, str]]:
    """A migrated SQLite database at ``path`` with one metered key; (key, gateway env)."""
    from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
    from avokit.gateway.services import keys

    url = f"sqlite:///{path}"
    run_migrations(url)
    with session_factory(make_db_engine(url)).begin() as s:
        key, _ = keys.create_key(
            s, SECRET, name="bench", rpm=10**8, tpm=10**12, credit_micros=10**15,
            prices={"*": {"input": 100_000, "output": 300_000}})
    return key, {"AVOKIT_REGISTRY": str(registry), "AVOKIT_DB_URL": url, "AVOKIT_SECRET": SECRET,
                 "AVOKIT_ENGINE": "vllm", "AVOKIT_UPSTREAM": upstream}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="avokit-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    avos: list[Server] = []
    redis: RedisServer | None = None
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "bench/gateway/mock_upstream.py"), str(up_port)],
            env={**os.environ, "MOCK_TOKENS": "8", "MOCK_DELAY_S": "0"}))
        _wait(upstream + "/v1/models")

        build_registry(tmp / "registry")
        # each gateway its own database, as two separate deployments: on one shared SQLite
        # file, one target's WAL (and the other process's checkpoints of it) would land in
        # the next target's measurement
        avo_key, avo_env = _database(tmp / "gw.db", tmp / "registry", upstream)
        avo = Server(avo_env, tmp / "avokit.log", cli=AVOKIT_FLAGS).start()
        avos.append(avo)
        binary = redis_server_binary()
        if binary is None:
            raise SystemExit("no redis-server: run scripts/setup.sh --dev")
        redis = RedisServer(binary, tmp / "redis").start()
        redis_key, redis_env = _database(tmp / "gw-redis.db", tmp / "registry", upstream)
        avo_redis = Server({**redis_env, "AVOKIT_REDIS_URL": redis.url},
                           tmp / "avokit-redis.log", cli=AVOKIT_FLAGS).start()
        avos.append(avo_redis)

        lite_port = free_port()
        master = "sk-litellm-bench-0123456789"
        (tmp / "litellm.yaml").write_text(json.dumps({
            "model_list": [{"model_name": "avo-tiny", "litellm_params": {
                "model": "openai/avo-tiny", "api_base": upstream + "/v1", "api_key": "none"}}],
            "general_settings": {"master_key": master},
            "litellm_settings": {"telemetry": False}}))
        lite_log = open(tmp / "litellm.log", "wb")
        procs.append(subprocess.Popen(
            [args.litellm, "--config", str(tmp / "litellm.yaml"), "--host", "127.0.0.1",
             "--port", str(lite_port), "--num_workers", "1"],
            stdout=lite_log, stderr=lite_log, env={**os.environ, "LITELLM_LOG": "ERROR"}))
        lite = f"http://127.0.0.1:{lite_port}"
        _wait(lite + "/health/liveliness", timeout=180)

        targets = {"direct": (upstream, "none"), "avokit": (avo.url, avo_key),
                   "avokit-redis": (avo_redis.url, redis_key), "litellm": (lite, master)}
        load_start, probe_start, ticks_start = _load1(), _probe_ms(), _cpu_ticks()
        raw: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        round_ticks = [ticks_start]
        for _ in range(ROUNDS):
            for name, measured in asyncio.run(_round(targets)).items():
                raw[name].append(measured)
            round_ticks.append(_cpu_ticks())
        load_end, probe_end, ticks_end = _load1(), _probe_ms(), _cpu_ticks()
        results = {name: _summary(rounds) for name, rounds in raw.items()}
    finally:
        for server in avos:
            server.stop()
        if redis is not None:
            redis.stop()
        for p in procs:
            p.terminate()
            p.wait(20)

    d = results["direct"]
    for name in ("avokit", "avokit-redis", "litellm"):
        r = results[name]
        r["added_p50_ms"] = r["p50_ms"] - d["p50_ms"]
        r["added_p99_ms"] = r["p99_ms"] - d["p99_ms"]
    lite_row = results["litellm"]
    verdicts = {}
    for name in ("avokit", "avokit-redis"):
        a = results[name]
        v = {"added_p50_ratio": a["added_p50_ms"] / lite_row["added_p50_ms"],
             "added_p99_ratio": a["added_p99_ms"] / lite_row["added_p99_ms"],
             "rps_ratio": a["rps"] / lite_row["rps"]}
        v["target_met"] = (v["added_p50_ratio"] <= 1 / 3 and v["added_p99_ratio"] <= 1 / 3
                           and v["rps_ratio"] >= 3)
        verdicts[name] = v
    verdict = {**verdicts["avokit"], "redis": verdicts["avokit-redis"]}
    steal_per_round = [_steal_pct(a, b) for a, b in zip(round_ticks, round_ticks[1:])]
    machine = {**_machine(), "load1_start": round(load_start, 2), "load1_end": round(load_end, 2),
               "probe_ms_start": probe_start, "probe_ms_end": probe_end,
               "steal_pct": _steal_pct(ticks_start, ticks_end),
               "steal_pct_per_round": steal_per_round}
    out = {"machine": machine, "config": {
           "client": CLIENT, "rounds": ROUNDS, "latency_requests": LAT_N,
           "latency_block": LAT_BLOCK, "throughput_block": TPUT_BLOCK,
           "throughput_requests": TPUT_N, "concurrency": CONC, "warmup": WARMUP, "body": BODY,
           "avokit": "`avokit serve --no-access-log`, engine=vllm, 1 worker, SQLite WAL, "
                     "real key: auth + rate limit + reserve + settle in the database per "
                     "request (each avokit target its own database)",
           "avokit-redis": "the same, rate limits in a local redis-server (--redis): one "
                           "atomic Lua script per request",
           "litellm": "litellm[proxy] " + _litellm_version(args.litellm)
           + ", 1 worker, LITELLM_LOG=ERROR (no access lines), master key only (no "
             "database: no per-request key lookup, budget or spend tracking)"},
           "results": results, "verdict": verdict}
    res_dir = ROOT / "bench/results"
    res_dir.mkdir(parents=True, exist_ok=True)
    # no model runs and no corpus is read: dtype and corpus are None
    write_json(res_dir / "gateway.json", out, Provenance.collect(dtype=None))
    history = _append_run(res_dir / "gateway_runs.json", out)
    text = _markdown(out, history)
    (res_dir / "gateway.md").write_text(text)
    print(text)


def _markdown(out: dict[str, Any], history: dict[str, Any]) -> str:
    """gateway.md: this run's table and verdicts, then every run with the same configuration."""
    config = out["config"]
    verdicts = {"avokit": out["verdict"], "avokit-redis": out["verdict"]["redis"]}
    lines = ["# Gateway overhead: avokit vs LiteLLM proxy (same mock upstream, same machine)", "",
             f"Machine: {out['machine']}", "",
             f"Chat completions, 8 tokens each, client {config['client']}; "
             f"{config['rounds']} rounds, each {config['warmup']} warm-up + "
             f"{config['latency_requests']} sequential requests per target (latency"
             + (f", the targets taking turns in blocks of {config['latency_block']}"
                if "latency_block" in config else "") + ") + "
             f"{config['throughput_requests']} requests at concurrency {config['concurrency']} "
             "(throughput" + (f", the targets taking turns in bursts of {config['throughput_block']}"
                              if "throughput_block" in config else "") + ").", "",
             "| target | p50 ms | p99 ms | p99 ms per round | added p50 ms | added p99 ms "
             "| requests/s | requests/s per round |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for name, r in out["results"].items():
        per_round = ", ".join(f"{x:.1f}" for x in r.get("p99_ms_per_round", []))
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {per_round} | "
                     f"{r.get('added_p50_ms', 0):.2f} | {r.get('added_p99_ms', 0):.2f} | "
                     f"{r['rps']:.0f} | {', '.join(f'{x:.0f}' for x in r['rps_per_round'])} |")
    lines.append("")
    for name, v in verdicts.items():
        lines.append(f"{name}/LiteLLM added p50: {v['added_p50_ratio']:.2f}, added p99: "
                     f"{v['added_p99_ratio']:.2f}, requests/s: {v['rps_ratio']:.2f}x. "
                     f"Target (<= 1/3 latency, >= 3x rps) met: {v['target_met']}.")
    lines += [f"Config: {config['avokit']}; avokit-redis: {config['avokit-redis']}; "
              f"LiteLLM: {config['litellm']}."]
    lines += _runs_table([r for r in history["runs"] if r.get("config") == config])
    return "\n".join(lines) + "\n"


def _runs_table(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: the ratios of every run with this configuration, this one last."""
    lines = ["", f"## Every run with this configuration ({len(runs)}, from gateway_runs.json)",
             "", "Ratios to LiteLLM's added p50 / added p99 / requests/s; steal: CPU time the "
             "hypervisor took during the rounds.", "",
             "| run | at (UTC) | commit | steal % | avokit | avokit-redis | both met |",
             "| ---: | --- | --- | ---: | --- | --- | --- |"]
    for r in runs:
        v = r["verdict"]
        cells = [f"{x['added_p50_ratio']:.2f} / {x['added_p99_ratio']:.2f} / "
                 f"{x['rps_ratio']:.2f}x" for x in (v, v["redis"])]
        lines.append(f"| {r['run']} | {r['at']} | {r['commit']}{' (dirty)' if r['dirty'] else ''}"
                     f" | {r['machine'].get('steal_pct', '')} | {cells[0]} | {cells[1]} | "
                     f"{v['target_met'] and v['redis']['target_met']} |")
    return lines


def _append_run(path: Path, out: dict[str, Any]) -> dict[str, Any]:
    """Add this run to the history of runs (created on first use); the history."""
    history: dict[str, Any] = {"what": "every run of bench/gateway/run.py, appended by it: "
                               "when, the commit measured (dirty: uncommitted changes), "
                               "machine and load, config, every row, verdict", "runs": []}
    if path.exists():
        history = json.loads(path.read_text())
    history["runs"].append({"run": len(history["runs"]) + 1,
                            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            **_commit(), **out})
    history.pop("provenance", None)  # the block of the latest run (each run also has its commit)
    write_json(path, history, Provenance.collect(dtype=None))
    return history


def _commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    try:
        return {"commit": git("rev-parse", "--short", "HEAD"),
                # the results this script writes do not make the measured code dirty
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                                  ":(exclude)bench/results"))}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": "unknown", "dirty": None}


def _litellm_version(exe: str) -> str:
    py = Path(exe).parent / "python"
    try:
        return subprocess.run([str(py), "-c", "import importlib.metadata as m;"
                               "print(m.version('litellm'))"], capture_output=True, text=True,
                              timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


if __name__ == "__main__":
    main()
