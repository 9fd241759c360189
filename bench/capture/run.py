"""Capture benchmark: for each real teacher on a slice of the default corpus, measure

- throughput of ``run_capture`` (end to end: tokenizing, forward, top-k, quantising, writing
  checksummed shards) relative to the bare forward pass of the same model over exactly the same
  model inputs (see bench/capture/baseline.py for what "bare" runs; target >= 0.9),
- bytes per token of the finished cache (as captured, and re-encoded with 16-bit log-probs),
- KL(stored || exact) between the stored (dequantised) and the exact top-k distributions,
- peak RSS while capturing versus RSS right after loading (target: < loaded + 1.5 GB).

Timing protocol (the machines are shared 2-core CPUs, so single timings are noise): one cold
capture (measures RSS, gives the cache that is verified), one warm-up batch of each forward,
then ``--rounds`` rounds that each time the bare forward, the dense Hugging Face forward and a
fresh capture, in alternating order. The ratio uses the fastest round of each side (least
disturbed by other jobs); the median-based ratio is reported next to it.

Writes bench/results/capture.json and capture.md. Usage:
    .venv/bin/python -m bench.capture.run [--docs 32] [--rounds 3] [--teachers smollm2-135m gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

from avokit.cache import CacheReader, CacheSpec, ShardWriter
from avokit.capture import run_capture, stored_vs_exact_kl
from avokit.corpus import build_corpus
from avokit.recipe import Recipe, load_recipe
from avokit.records import TeacherRecords
from avokit.teachers import HFTeacher, Teacher, TeacherInfo, load_teacher
from bench.capture.baseline import bare_forward, capture_batches, hf_dense_forward, scored_positions
from bench.provenance import Provenance
from bench.results_io import write_json

ROOT = Path(__file__).resolve().parents[2]


class Recording(Teacher):
    """Delegates to a loaded teacher, keeps the exact records it returned, never closes it."""

    def __init__(self, inner: HFTeacher) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.exact: dict[str, TeacherRecords] = {}

    @property
    def info(self) -> TeacherInfo:
        return self.inner.info

    @property
    def token_bytes(self):
        return self.inner.token_bytes

    def tokenize(self, texts: list[str]):
        return self.inner.tokenize(texts)

    def score(self, texts: list[str], doc_ids: list[str], top_k: int, *,
              inside_top_k: int = 0) -> list[TeacherRecords]:
        recs = self.inner.score(texts, doc_ids, top_k, inside_top_k=inside_top_k)
        self.exact.update((r.doc_id, r) for r in recs)
        return recs


class PeakRSS:
    """Samples this process's RSS every 10 ms in a thread; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def clear_cache(cache: Path) -> None:
    """Remove a finished capture but keep its saved tokenizer: saving the tokenizer is a
    one-off per teacher (measured separately as ``tokenizer_save_seconds``), not per token."""
    if not cache.is_dir():
        return
    for entry in cache.iterdir():
        if entry.name == "tokenizer":
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def summary(seconds: list[float], positions: int) -> dict:
    """Rounds of one side: raw seconds, fastest, median and the matching tokens/s."""
    best, med = min(seconds), statistics.median(seconds)
    return {"seconds": [round(x, 2) for x in seconds], "min_seconds": round(best, 2),
            "median_seconds": round(med, 2), "tokens_per_second_best": round(positions / best, 1),
            "tokens_per_second_median": round(positions / med, 1)}


def reencoded_bytes_per_token(reader: CacheReader, bits: int, folder: Path) -> float:
    """Bytes per token of the same records written with ``bits``-bit log-probs."""
    spec = CacheSpec.model_validate({**reader.spec.model_dump(), "logprob_bits": bits})
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder / "all.arrow", spec, "all")
    for rec in reader.iter_records():
        writer.add(rec)
    info = writer.close()
    return info.n_bytes / info.n_tokens


def bench_teacher(recipe: Recipe, name: str, scratch: Path, rounds: int, dtype: str = "float32") -> dict:
    """Everything measured for one teacher in one dtype (see the module docstring)."""
    config = recipe.teacher(name).model_copy(update={"dtype": dtype})
    proc = psutil.Process()
    load_avg_start = os.getloadavg()
    rss_start = proc.memory_info().rss
    t0 = time.perf_counter()
    inner = load_teacher(config, recipe.base_dir, recipe.capture)
    load_s = time.perf_counter() - t0
    assert isinstance(inner, HFTeacher)
    rss_loaded = proc.memory_info().rss
    rec_teacher = Recording(inner)
    cache = recipe.run_dir / "cache" / name
    shutil.rmtree(cache, ignore_errors=True)

    def capture() -> None:
        run_capture(recipe, teacher=name, teacher_loader=lambda c, b: rec_teacher)

    # Cold capture first, before any dense forward has grown the heap: its peak RSS is the
    # memory figure, and its cache is the one verified below.
    with PeakRSS() as peak:
        cold_s = timed(capture)
    tok_dir = scratch / f"{name}-tokenizer"
    tok_save_s = timed(lambda: inner.tokenizer.save_pretrained(tok_dir))
    first_manifest = (cache / "manifest.json").read_bytes()
    reader = CacheReader(cache, expect_teacher_fingerprint=inner.info.fingerprint)
    m = reader.manifest
    kls, errs = [], []
    for doc_id in reader:
        stored, exact = reader[doc_id], rec_teacher.exact[doc_id]
        assert np.array_equal(stored.topk_ids, exact.topk_ids)
        kls.append(stored_vs_exact_kl(stored.topk_logprobs, exact.topk_logprobs))
        errs.append(float(np.abs(stored.topk_logprobs - exact.topk_logprobs).max()))
    bpt16 = reencoded_bytes_per_token(reader, 16, scratch / f"{name}-16bit")
    del reader

    batches = capture_batches(inner, recipe)
    positions = scored_positions(batches)
    assert positions == m.n_tokens, (positions, m.n_tokens)
    bare_forward(inner, batches[:1])  # warm-up: first-call allocations and kernel selection
    hf_dense_forward(inner, batches[:1])
    sides: dict[str, list[float]] = {"bare": [], "hf_dense": [], "capture": []}
    def fresh_capture() -> None:
        clear_cache(cache)
        capture()

    runs: dict[str, Callable[[], None]] = {
        "bare": lambda: bare_forward(inner, batches),
        "hf_dense": lambda: hf_dense_forward(inner, batches),
        "capture": fresh_capture,
    }
    for r in range(rounds):
        # the dense reference only in the first round: it is not part of the ratio
        order = ["bare", "hf_dense", "capture"] if r == 0 else ["bare", "capture"]
        for side in order if r % 2 == 0 else order[::-1]:
            sides[side].append(timed(runs[side]))
        # every capture of the same plan must give the same bytes
        assert (cache / "manifest.json").read_bytes() == first_manifest
    inner.close()
    bare, dense, cap = (summary(sides[k], positions) for k in ("bare", "hf_dense", "capture"))
    return {
        "teacher": name,
        "dtype": m.compute_dtype,
        "vocab_size": m.vocab_size,
        "id_bytes": m.id_bytes,
        "docs": m.n_docs,
        "tokens": m.n_tokens,
        "model_batches": len(batches),
        "padded_positions": int(sum(b.ids.numel() for b in batches)),
        "load_average_start": [round(x, 2) for x in load_avg_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "load_seconds": round(load_s, 1),
        "cold_capture_seconds": round(cold_s, 2),
        "tokenizer_save_seconds": round(tok_save_s, 2),
        "rounds": rounds,
        "capture": cap,
        "bare_forward": bare,
        "hf_dense_forward": dense,
        "throughput_ratio": round(bare["min_seconds"] / cap["min_seconds"], 3),
        "throughput_ratio_median": round(bare["median_seconds"] / cap["median_seconds"], 3),
        "throughput_ratio_vs_hf_dense": round(dense["min_seconds"] / cap["min_seconds"], 3),
        "logprob_bits": m.logprob_bits,
        "bytes_per_token": m.bytes_per_token,
        "bytes_per_token_reencoded_16bit_one_shard": round(bpt16, 2),
        "raw_float32_int32_bytes_per_token": 4 * (3 + 2 * m.top_k) + 8,
        "kl_stored_vs_exact_mean": float(np.mean(kls)),
        "kl_stored_vs_exact_max": float(np.max(kls)),
        "max_abs_logprob_error": float(np.max(errs)),
        "rss_before_load_mb": round(rss_start / 2**20),
        "rss_loaded_mb": round(rss_loaded / 2**20),
        "rss_peak_capture_mb": round(peak.peak / 2**20),
        "rss_peak_over_loaded_mb": round((peak.peak - rss_loaded) / 2**20),
    }


def machine() -> dict:
    """CPU (with its bf16 support), memory, torch and device of this machine."""
    from avokit.evaluate.run import cpu_model
    from avokit.precision import cpu_bf16_report

    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu", **cpu_bf16_report()}


def bf16_speedups(rows: list[dict]) -> dict[str, float]:
    """Per teacher: float32 capture seconds / bf16 capture seconds (fastest rounds)."""
    best = {(r["teacher"], r["dtype"]): r["capture"]["min_seconds"] for r in rows}
    return {t: round(best[(t, "float32")] / best[(t, "bfloat16")], 3)
            for t, d in best if d == "float32" and (t, "bfloat16") in best}


def write_md(result: dict, path: Path) -> None:
    """The Markdown view of ``result``."""
    mach = result["machine"]
    lines = [
        "# Capture benchmark", "",
        f"Machine: {mach['nproc']} cores, {mach['cpu']}, {mach['ram_gb']} GiB RAM, torch "
        f"{mach['torch']} ({mach['device']}, CPU capability {mach.get('torch_cpu_capability', 'n/a')}), "
        f"{mach['torch_threads']} threads; native bf16: {mach.get('native_bf16', 'n/a')} "
        f"({mach.get('bf16_reason', 'not recorded')}). Shared with "
        "other jobs (load average at each teacher's start below), so single timings are noisy: "
        f"capture and bare forward ran {result['rounds']} rounds each in alternating order; the ratio "
        "uses each side's fastest round, the median-based ratio is shown next to it."
        + (f" The teachers ran as {result['merged_from_parallel_runs']} processes at the same time."
           if result.get("merged_from_parallel_runs") else ""), "",
        f"Corpus: the default corpus (avocado-mini's sources) at max_docs={result['docs']} per source, "
        f"top_k={result['top_k']}, batch_size={result['batch_size']}, "
        f"vocab_chunk={result['vocab_chunk']}.", "",
        "| teacher | dtype | docs / tokens | load avg (1 min) | capture tok/s | bare forward tok/s | ratio (best / median) "
        "| HF dense tok/s | B/token | B/token 16-bit | KL(stored‖exact) mean / max | max abs Δlogp "
        "| RSS loaded → peak (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["teachers"]:
        lines.append(
            f"| {r['teacher']} | {r.get('dtype', 'float32')} | {r['docs']} / {r['tokens']} | {r['load_average_start'][0]} | "
            f"{r['capture']['tokens_per_second_best']} | {r['bare_forward']['tokens_per_second_best']} | "
            f"**{r['throughput_ratio']}** / {r['throughput_ratio_median']} | "
            f"{r['hf_dense_forward']['tokens_per_second_best']} | {r['bytes_per_token']} ({r['logprob_bits']}-bit) | "
            f"{r['bytes_per_token_reencoded_16bit_one_shard']} | {r['kl_stored_vs_exact_mean']:.2e} / "
            f"{r['kl_stored_vs_exact_max']:.2e} | {r['max_abs_logprob_error']:.1e} | {r['rss_loaded_mb']} → "
            f"{r['rss_peak_capture_mb']} (+{r['rss_peak_over_loaded_mb']}) |"
        )
    if result.get("bf16_speedup_per_teacher"):
        lines += ["", "bf16 / float32 capture tokens/s (fastest rounds, same documents, one process): " +
                  ", ".join(f"{t} **{v}x**" for t, v in result["bf16_speedup_per_teacher"].items()) +
                  f"; `bf16_speedup` (the lowest): **{result['bf16_speedup']}**. `dtype: auto` picks "
                  f"{'bf16' if mach.get('native_bf16') else 'float32'} on this CPU."]
    lines += [
        "", "What each side runs, over exactly the same model inputs (same shard plan, document "
        "groups, rolling windows and padded batches; tokenizing and padding are done before the "
        "baselines' clock starts):", "",
        "- **capture**: `run_capture` end to end on an already loaded teacher: read the corpus "
        "split, tokenize with byte offsets, decoder body, output head in chunks of `vocab_chunk` "
        "positions, log-softmax, top-k, gold and word-start log-mass, quantise, write and fsync "
        "zstd Arrow shards, sha256, progress records, manifest. Every round starts from an empty "
        "cache (the saved tokenizer is kept: a one-off, timed separately) and must reproduce "
        "the cold capture's manifest byte for byte.",
        "- **bare forward** (the baseline of the ratio): decoder body over the padded batch, then "
        "the output head (and final soft-capping, if the model has one) over the same kept "
        "positions, `vocab_chunk` at a time, logits discarded: every full-vocabulary logit "
        "capture sees, at the least cost a plain forward can produce them.",
        "- **HF dense** (reference only, first round only): `model(input_ids, attention_mask, use_cache=False).logits`, "
        "the head over every position including padding, one dense `[batch, seq, vocab]` float32 "
        "tensor per batch. The first version of this benchmark timed this, once before and once "
        "after a single capture, without warm-up, and reported 3.22 for SmolLM2 on 8 documents; "
        "on these shared machines that comparison mostly measured other jobs.", "",
        "Peak RSS is sampled every 10 ms during the cold capture, before any dense forward ran. "
        f"Uncompressed float32/int32 storage would be {result['teachers'][0]['raw_float32_int32_bytes_per_token']} "
        "B/token at this k.", "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def merge(files: list[Path], out: Path) -> None:
    """Write one capture.json/.md from per-teacher runs that used the same settings."""
    parts = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    for part in parts:  # each part's own block; the merged file gets the merging process's
        part.pop("provenance", None)
    keys = ("docs", "rounds", "top_k", "batch_size", "vocab_chunk")
    for p, f in zip(parts[1:], files[1:]):
        if any(p[k] != parts[0][k] for k in keys) or p["machine"] != parts[0]["machine"]:
            raise SystemExit(f"{f}: other settings than {files[0]}; cannot merge")
    result = {**parts[0], "teachers": [t for p in parts for t in p["teachers"]],
              "merged_from_parallel_runs": len(parts)}
    speedups = bf16_speedups(result["teachers"])
    if speedups:
        result["bf16_speedup_per_teacher"] = speedups
        result["bf16_speedup"] = min(speedups.values())
    dtypes = sorted({str(r.get("dtype", "float32")) for r in result["teachers"]})
    write_json(out / "capture.json", result, Provenance.collect(dtype=",".join(dtypes)))
    write_md(result, out / "capture.md")


def main() -> None:
    """Run the benchmark for every ``--teachers`` entry and write JSON + Markdown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--teachers", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16"], help="each teacher is measured in each")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="only combine the teachers of these capture.json files (runs of "
                             "the same settings, e.g. one process per teacher) into --out")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = load_recipe("avocado-mini")
    scratch = Path(tempfile.mkdtemp(prefix="avokit-bench-capture-"))
    corpus = base.corpus.model_copy(update={"sources": [
        s.model_copy(update={"max_docs": args.docs}) for s in base.corpus.sources]})
    # the throughput of each forced dtype; capture's own bf16 check is measured elsewhere
    # (bench/capture/fidelity.py)
    capture = base.capture.model_copy(update={"bf16_check_docs": 0})
    recipe = base.model_copy(update={"runs_dir": scratch / "runs", "corpus": corpus, "capture": capture})
    build_corpus(recipe)
    # before the scratch folder (and the corpus in it) is removed
    prov = Provenance.collect(dtype=",".join(args.dtypes), corpus=recipe.run_dir / "corpus" / "manifest.json")
    result = {"machine": machine(), "docs": args.docs, "rounds": args.rounds,
              "top_k": recipe.capture.top_k, "batch_size": recipe.capture.batch_size,
              "vocab_chunk": recipe.capture.vocab_chunk, "teachers": []}
    try:
        for name in args.teachers:
            for dtype in args.dtypes:
                r = bench_teacher(recipe, name, scratch, args.rounds, dtype)
                print(json.dumps(r, indent=1), flush=True)
                result["teachers"].append(r)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    speedups = bf16_speedups(result["teachers"])
    if speedups:
        result["bf16_speedup_per_teacher"] = speedups
        result["bf16_speedup"] = min(speedups.values())
    write_json(args.out / "capture.json", result, prov)
    write_md(result, args.out / "capture.md")


if __name__ == "__main__":
    main()
