"""Capture benchmark: for each real teacher on a slice of the default corpus, measure

- throughput of ``run_capture`` relative to the bare forward pass of the same model on the
  same batches (same documents, batching and length order; target >= 0.9),
- bytes per token of the finished cache (16-bit log-probs as captured, and the same records
  re-encoded with 8-bit log-probs),
- KL(stored || exact) between the stored (dequantised) and the exact top-k distributions,
- peak RSS while capturing versus RSS right after loading (target: < loaded + 1.5 GB).

Writes bench/results/capture.json and capture.md. Usage:
    .venv/bin/python bench/capture/run.py [--docs 40] [--teachers smollm2-135m gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from avokit.cache import CacheReader, CacheSpec, ShardWriter
from avokit.capture import plan_shards, run_capture, stored_vs_exact_kl
from avokit.corpus import build_corpus, load_split
from avokit.recipe import Recipe, load_recipe
from avokit.records import TeacherRecords
from avokit.teachers import HFTeacher, Teacher, TeacherInfo, load_teacher

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
    def token_bytes(self):  # type: ignore[no-untyped-def]
        return self.inner.token_bytes

    def tokenize(self, texts: list[str]):  # type: ignore[no-untyped-def]
        return self.inner.tokenize(texts)

    def score(self, texts: list[str], doc_ids: list[str], top_k: int) -> list[TeacherRecords]:
        recs = self.inner.score(texts, doc_ids, top_k)
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

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def bare_forward_seconds(teacher: HFTeacher, recipe: Recipe) -> tuple[float, int]:
    """Time ``model(input_ids).logits`` over exactly the batches capture runs (tokenized and
    padded beforehand, so only the forward pass is timed). Returns (seconds, positions)."""
    splits = {s: load_split(recipe, s) for s in ("train", "heldout")}
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    positions = 0
    for plan in plan_shards(splits, recipe.capture.docs_per_shard):
        docs = sorted(plan.docs, key=lambda d: len(d.text))
        for j in range(0, len(docs), recipe.capture.batch_size):
            toks = teacher.tokenize([d.text for d in docs[j : j + recipe.capture.batch_size]])
            seqs = [[teacher.start_token_id] + t.ids.tolist()[: teacher.max_length - 1] for t in toks]
            width = max(len(s) for s in seqs)
            ids = torch.zeros(len(seqs), width, dtype=torch.long)
            mask = torch.zeros(len(seqs), width, dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
                positions += len(s) - 1
            batches.append((ids, mask))
    device = next(teacher.model.parameters()).device
    started = time.perf_counter()
    with torch.no_grad():
        for ids, mask in batches:
            teacher.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.sum().item()
    return time.perf_counter() - started, positions


def reencoded_bytes_per_token(reader: CacheReader, bits: int, folder: Path) -> float:
    """Bytes per token of the same records written with ``bits``-bit log-probs."""
    spec = CacheSpec.model_validate({**reader.spec.model_dump(), "logprob_bits": bits})
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder / "all.arrow", spec, "all")
    for rec in reader.iter_records():
        writer.add(rec)
    info = writer.close()
    return info.n_bytes / info.n_tokens


def bench_teacher(recipe: Recipe, name: str, scratch: Path) -> dict:
    config = recipe.teacher(name)
    proc = psutil.Process()
    rss_start = proc.memory_info().rss
    t0 = time.perf_counter()
    inner = load_teacher(config, recipe.base_dir, recipe.capture)
    load_s = time.perf_counter() - t0
    assert isinstance(inner, HFTeacher)
    rss_loaded = proc.memory_info().rss
    rec_teacher = Recording(inner)
    bare_before, positions = bare_forward_seconds(inner, recipe)
    cache = recipe.run_dir / "cache" / name
    shutil.rmtree(cache, ignore_errors=True)
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        run_capture(recipe, teacher=name, teacher_loader=lambda c, b: rec_teacher)
        capture_s = time.perf_counter() - t0
    bare_after, _ = bare_forward_seconds(inner, recipe)
    bare_s = (bare_before + bare_after) / 2
    reader = CacheReader(cache, expect_teacher_fingerprint=inner.info.fingerprint)
    m = reader.manifest
    kls, errs = [], []
    for doc_id in reader:
        stored, exact = reader[doc_id], rec_teacher.exact[doc_id]
        assert np.array_equal(stored.topk_ids, exact.topk_ids)
        kls.append(stored_vs_exact_kl(stored.topk_logprobs, exact.topk_logprobs))
        errs.append(float(np.abs(stored.topk_logprobs - exact.topk_logprobs).max()))
    bpt16 = reencoded_bytes_per_token(reader, 16, scratch / f"{name}-16bit")
    inner.close()
    return {
        "teacher": name,
        "vocab_size": m.vocab_size,
        "id_bytes": m.id_bytes,
        "docs": m.n_docs,
        "tokens": m.n_tokens,
        "load_seconds": round(load_s, 1),
        "capture_seconds": round(capture_s, 2),
        "bare_forward_seconds": round(bare_s, 2),
        "bare_forward_seconds_before_after": [round(bare_before, 2), round(bare_after, 2)],
        "capture_tokens_per_second": round(m.n_tokens / capture_s, 1),
        "bare_tokens_per_second": round(positions / bare_s, 1),
        "throughput_ratio": round((m.n_tokens / capture_s) / (positions / bare_s), 3),
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
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def write_md(result: dict, path: Path) -> None:
    lines = [
        "# Capture benchmark", "",
        f"Machine: {result['machine']['nproc']} cores, {result['machine']['cpu']}, "
        f"{result['machine']['ram_gb']} GiB RAM, torch {result['machine']['torch']} "
        f"({result['machine']['device']}), {result['machine']['torch_threads']} threads; "
        "shared with other jobs, so timings are noisy.", "",
        f"Corpus: {result['docs']} documents of the default corpus (avocado-mini's "
        f"`lambada-passages`), top_k={result['top_k']}, batch_size={result['batch_size']}, float32.", "",
        "| teacher | tokens | capture tok/s | bare forward tok/s | ratio | B/token (as captured) | B/token 16-bit re-encode "
        "| KL(stored‖exact) mean / max | max |Δlogp| | RSS loaded → peak (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["teachers"]:
        lines.append(
            f"| {r['teacher']} | {r['tokens']} | {r['capture_tokens_per_second']} | "
            f"{r['bare_tokens_per_second']} | {r['throughput_ratio']} | {r['bytes_per_token']} ({r['logprob_bits']}-bit) | "
            f"{r['bytes_per_token_reencoded_16bit_one_shard']} | {r['kl_stored_vs_exact_mean']:.2e} / {r['kl_stored_vs_exact_max']:.2e} | "
            f"{r['max_abs_logprob_error']:.1e} | {r['rss_loaded_mb']} → {r['rss_peak_capture_mb']} "
            f"(+{r['rss_peak_over_loaded_mb']}) |"
        )
    lines += ["", "Bare forward = `model(input_ids).logits` on the same padded batches, timed "
              "before and after the capture (mean used). Uncompressed float32/int32 storage "
              f"would be {result['teachers'][0]['raw_float32_int32_bytes_per_token']} B/token at this k.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--teachers", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = load_recipe("avocado-mini")
    scratch = Path(tempfile.mkdtemp(prefix="avokit-bench-capture-"))
    corpus = base.corpus.model_copy(update={"sources": [
        s.model_copy(update={"max_docs": args.docs}) for s in base.corpus.sources]})
    recipe = base.model_copy(update={"runs_dir": scratch / "runs", "corpus": corpus})
    build_corpus(recipe)
    result = {"machine": machine(), "docs": args.docs, "top_k": recipe.capture.top_k,
              "batch_size": recipe.capture.batch_size, "teachers": []}
    try:
        for name in args.teachers:
            r = bench_teacher(recipe, name, scratch)
            print(json.dumps(r, indent=1), flush=True)
            result["teachers"].append(r)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "capture.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_md(result, args.out / "capture.md")


if __name__ == "__main__":
    main()
