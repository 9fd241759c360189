"""Gateway overhead benchmark: avokit vs LiteLLM proxy in front of the same instant upstream.

Starts (all on 127.0.0.1, same machine, same run): the mock upstream
(bench/gateway/mock_upstream.py), avokit (`--engine vllm --upstream MOCK`, SQLite, a real
key with metering) and LiteLLM's proxy (from a separate venv, master key only) pointing at
the same upstream. Then, for each target including the upstream itself:
  * latency: LAT_N sequential chat completions (concurrency 1) -> p50 / p99;
  * throughput: TPUT_N chat completions at concurrency CONC -> requests/s.
Added latency = proxy percentile - direct-upstream percentile.
Writes bench/results/gateway.json and .md.

Usage: python bench/gateway/run.py [--litellm /tmp/litellm-venv/bin/litellm]
"""

from __future__ import annotations

import argparse
import asyncio
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

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from gateway_support import SECRET, Server, build_registry, free_port  # noqa: E402

LAT_N, TPUT_N, CONC, WARMUP = 300, 1000, 32, 50
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


async def _measure(base: str, key: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {key}"}
    url = base + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=CONC)) as c:
        async def one() -> float:
            t0 = time.perf_counter()
            r = await c.post(url, json=BODY, headers=headers)
            r.raise_for_status()
            assert r.json()["usage"]["completion_tokens"] == 8
            return time.perf_counter() - t0

        for _ in range(WARMUP):
            await one()
        lat = sorted([await one() for _ in range(LAT_N)])
        sem = asyncio.Semaphore(CONC)

        async def limited() -> float:
            async with sem:
                return await one()

        t0 = time.perf_counter()
        await asyncio.gather(*(limited() for _ in range(TPUT_N)))
        wall = time.perf_counter() - t0
    return {"p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "rps": TPUT_N / wall}


def _machine() -> dict[str, Any]:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem / 2**20, 1),
            "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="avokit-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "bench/gateway/mock_upstream.py"), str(up_port)],
            env={**os.environ, "MOCK_TOKENS": "8", "MOCK_DELAY_S": "0"}))
        _wait(upstream + "/v1/models")

        build_registry(tmp / "registry")
        db = f"sqlite:///{tmp}/gw.db"
        from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
        from avokit.gateway.services import keys

        run_migrations(db)
        with session_factory(make_db_engine(db)).begin() as s:
            avo_key, _ = keys.create_key(
                s, SECRET, name="bench", rpm=10**8, tpm=10**12, credit_micros=10**15,
                prices={"*": {"input": 100_000, "output": 300_000}})
        avo = Server({"AVOKIT_REGISTRY": str(tmp / "registry"), "AVOKIT_DB_URL": db,
                      "AVOKIT_SECRET": SECRET, "AVOKIT_ENGINE": "vllm",
                      "AVOKIT_UPSTREAM": upstream}, tmp / "avokit.log").start()

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

        results = {"direct": asyncio.run(_measure(upstream, "none")),
                   "avokit": asyncio.run(_measure(avo.url, avo_key)),
                   "litellm": asyncio.run(_measure(lite, master))}
        avo.stop()
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)

    d = results["direct"]
    for name in ("avokit", "litellm"):
        r = results[name]
        r["added_p50_ms"] = r["p50_ms"] - d["p50_ms"]
        r["added_p99_ms"] = r["p99_ms"] - d["p99_ms"]
    a, l = results["avokit"], results["litellm"]
    verdict = {
        "added_p50_ratio": a["added_p50_ms"] / l["added_p50_ms"],
        "added_p99_ratio": a["added_p99_ms"] / l["added_p99_ms"],
        "rps_ratio": a["rps"] / l["rps"],
    }
    verdict["target_met"] = (verdict["added_p50_ratio"] <= 1 / 3
                             and verdict["added_p99_ratio"] <= 1 / 3
                             and verdict["rps_ratio"] >= 3)
    out = {"machine": _machine(), "config": {"latency_requests": LAT_N,
           "throughput_requests": TPUT_N, "concurrency": CONC, "body": BODY,
           "avokit": "engine=vllm, SQLite WAL, real key: auth + rate limit + reserve + settle",
           "litellm": "litellm[proxy] " + _litellm_version(args.litellm)
           + ", master key only (no DB)"}, "results": results, "verdict": verdict}
    res_dir = ROOT / "bench/results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "gateway.json").write_text(json.dumps(out, indent=2))
    lines = ["# Gateway overhead: avokit vs LiteLLM proxy (same mock upstream, same machine)", "",
             f"Machine: {out['machine']}", "",
             f"Chat completions, 8 tokens each; latency from {LAT_N} sequential requests, "
             f"throughput from {TPUT_N} requests at concurrency {CONC}.", "",
             "| target | p50 ms | p99 ms | added p50 ms | added p99 ms | requests/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r.get('added_p50_ms', 0):.2f} | {r.get('added_p99_ms', 0):.2f} | "
                     f"{r['rps']:.0f} |")
    lines += ["", f"avokit/LiteLLM added p50: {verdict['added_p50_ratio']:.2f}, added p99: "
              f"{verdict['added_p99_ratio']:.2f}, requests/s: {verdict['rps_ratio']:.2f}x. "
              f"Target (<= 1/3 latency, >= 3x rps) met: {verdict['target_met']}.",
              f"Config: {out['config']['avokit']}; LiteLLM: {out['config']['litellm']}."]
    (res_dir / "gateway.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


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
