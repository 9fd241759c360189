"""Grammar-constrained decoding overhead in the in-process engine (issue 34).

For one model, a batch of BATCH requests of MAX_TOKENS tokens each, in ROUNDS interleaved rounds:
  * free: no grammar (the fast path: no mask is computed or applied);
  * constrained: every row under the same JSON Schema (bounded, so answers complete);
  * mixed: half the rows constrained, half free;
reporting decode tokens/s of the batch (completion tokens / wall seconds) and, for the mixed
batch, of its free rows alone. Also measured alone, outside the model: the per-token cost of
computing and applying one row's mask and advancing its matcher (``mask_us_per_token``).

The model: ``--model DIR`` (a Hugging Face directory), else SmolLM2-135M from avokit's teacher
cache when present (49k vocabulary: the mask's cost grows with it), else the tests' tiny random
model. Writes bench/results/structured.json and .md with the CPU model and the load average.

Usage: python -m bench.gateway.structured [--model DIR] [--rounds 3] [--batch 4] [--tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.provenance import Provenance
from bench.results_io import write_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "city": {"type": "string", "maxLength": 24},
    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 4}},
    "required": ["name", "age", "city", "tags"], "additionalProperties": False}


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _registry(tmp: Path, model: Path | None) -> tuple[Path, str]:
    from contract_fixtures import write_release_manifest
    from gateway_support import build_registry

    if model is None:
        found = sorted(Path(os.environ.get("AVOKIT_CACHE", Path.home() / ".cache/avokit"))
                       .glob("teachers/smollm2-135m-float32-*"))
        model = found[0] if found else None
    if model is None:
        build_registry(tmp, "tiny")
        return tmp, "tiny"
    out = tmp / "bench"
    out.mkdir()
    for f in model.iterdir():
        if f.is_file():
            (out / f.name).symlink_to(f.resolve())
    write_release_manifest(out, "bench", context_length=2048)
    return tmp, "bench"


async def _batch(engine: Any, name: str, ids: list[int], constraint: Any, kinds: list[bool],
                 tokens: int) -> dict[str, float]:
    from avokit.gateway.engines.base import GenParams

    async def one(seed: int, constrained: bool) -> tuple[int, float]:
        p = GenParams(ids, tokens, temperature=1.0, seed=seed,
                      constraint=constraint if constrained else None)
        _, fin = await engine.complete(name, p)
        return fin.completion_tokens, time.perf_counter()

    start = time.perf_counter()
    done = await asyncio.gather(*(one(i, c) for i, c in enumerate(kinds)))
    wall = max(t for _, t in done) - start
    free = [(n, t - start) for (n, t), c in zip(done, kinds) if not c]
    out = {"tokens_per_s": sum(n for n, _ in done) / wall}
    if free and len(free) < len(kinds):
        out["free_rows_tokens_per_s"] = sum(n for n, _ in free) / max(t for _, t in free)
    return out


def _mask_cost(constraint: Any, vocab: int, steps: int = 200) -> float:
    """µs per token of mask + apply + advance for one row, on random logits."""
    import torch

    from avokit.gateway.engines import constrained

    gen = torch.Generator().manual_seed(0)
    total, n = 0.0, 0
    while n < steps:
        matcher = constrained.start(constraint)
        while n < steps and not constrained.complete(matcher):
            logits = torch.randn(1, vocab, generator=gen)
            t0 = time.perf_counter()
            constrained.mask_rows(logits, [(0, matcher, constraint.n_vocab)])
            token = int(torch.argmax(logits[0]))
            constrained.advance(matcher, token)
            total += time.perf_counter() - t0
            n += 1
    return total / n * 1e6


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from avokit.gateway.engines.base import scan_registry
    from avokit.gateway.engines.transformers_engine import TransformersEngine
    from avokit.gateway.grammars import GrammarCompiler, response_format_spec
    from avokit.gateway.protocol import ResponseFormat

    with tempfile.TemporaryDirectory() as tmp:
        registry, name = _registry(Path(tmp), args.model)
        engine = TransformersEngine(scan_registry(registry), max_batch_size=args.batch,
                                    batch_wait_ms=50, dtype="float32")
        tok = engine.tokenizer(name)
        compiler = GrammarCompiler()
        fmt = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {
            "name": "person", "schema": SCHEMA}})
        spec = response_format_spec(fmt, "response_format", compiler.limits)
        assert spec is not None
        constraint = compiler.constraint(name, tok, spec)
        ids = list(tok("A person, as JSON:").input_ids)
        half = [i % 2 == 0 for i in range(args.batch)]
        configs = {"free": [False] * args.batch, "constrained": [True] * args.batch,
                   "mixed": half}
        load_start = os.getloadavg()[0]
        await _batch(engine, name, ids, constraint, [False, True], 8)  # load the model, warm up
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in configs}
        for _ in range(args.rounds):
            for kind, kinds in configs.items():
                runs[kind].append(await _batch(engine, name, ids, constraint, kinds, args.tokens))
        vocab = int(engine._worker(name).model.get_output_embeddings().weight.shape[0])
        await engine.aclose()
    median = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    return {"model": str(args.model or name), "vocab": vocab, "batch": args.batch,
            "max_tokens": args.tokens, "rounds": args.rounds, "cpu": _cpu(),
            "cores": os.cpu_count(), "load_avg_start": load_start,
            "load_avg_end": os.getloadavg()[0], "median": median, "runs": runs,
            "mask_us_per_token": _mask_cost(constraint, vocab),
            "constrained_vs_free": median["constrained"]["tokens_per_s"]
            / median["free"]["tokens_per_s"],
            "mixed_free_rows_vs_free": median["mixed"].get("free_rows_tokens_per_s", 0.0)
            / median["free"]["tokens_per_s"]}


def _markdown(r: dict[str, Any]) -> str:
    m = r["median"]
    return "\n".join([
        "# Grammar-constrained decoding overhead (bench/gateway/structured.py)", "",
        f"Model {r['model']} (vocabulary {r['vocab']}), batch {r['batch']} x {r['max_tokens']} "
        f"tokens, temperature 1, {r['rounds']} interleaved rounds (medians). CPU: {r['cpu']}, "
        f"{r['cores']} cores; load average {r['load_avg_start']:.2f} at the start, "
        f"{r['load_avg_end']:.2f} at the end (a shared machine).", "",
        "| batch | tokens/s | free rows' tokens/s |", "| --- | ---: | ---: |",
        f"| free | {m['free']['tokens_per_s']:.1f} | {m['free']['tokens_per_s']:.1f} |",
        f"| constrained | {m['constrained']['tokens_per_s']:.1f} | - |",
        f"| mixed (half constrained) | {m['mixed']['tokens_per_s']:.1f} | "
        f"{m['mixed'].get('free_rows_tokens_per_s', 0.0):.1f} |", "",
        f"Constrained batch / free batch: {r['constrained_vs_free']:.3f}. Mask + apply + "
        f"advance for one row, alone: {r['mask_us_per_token']:.0f} µs per token.", ""])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    result = asyncio.run(main(parser.parse_args()))
    out = ROOT / "bench/results"
    write_json(out / "structured.json", result, Provenance.collect(dtype="float32"))
    (out / "structured.md").write_text(_markdown(result))
    print(_markdown(result))
