"""Student training throughput (tokens/s): KD from two cached teachers vs CE-only, same data.

Builds a synthetic-English corpus, caches two tiny random teachers whose tokenizers are the real
SmolLM2 (byte-level BPE, 49k) and Gemma 3 (SentencePiece, 262k) ones, then trains the same
student twice (baseline = CE only; student = CE + KD + chunk terms from both teachers) and
reads the logged throughput. Writes bench/results/train.{json,md}.

Run: .venv/bin/python -m bench.train.run [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.provenance import Provenance
from bench.results_io import write_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))


def machine() -> dict:
    """nproc, CPU model, RAM."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
               if ln.startswith("MemTotal"))
    import torch

    # os.cpu_count, not `nproc`: nproc reports OMP_NUM_THREADS when it is set
    return {"nproc": os.cpu_count(), "cpu": cpu,
            "ram_gib": round(mem / 2**20, 1), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_avg_at_start": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--docs", type=int, default=400)
    args = parser.parse_args()

    from test_train import make_recipe, write_cache, write_corpus

    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train import run_training
    from avokit.train.data import read_split

    tmp = Path(tempfile.mkdtemp(prefix="avokit-bench-train-"))
    try:
        recipe = make_recipe(tmp, steps=args.steps, log_every=args.steps, eval_every=10**6,
                             checkpoint_every=10**6, warmup_steps=3)
        # the avocado-mini student shape and batch (seq 256), so per-step fixed costs weigh as in real runs
        recipe.student.hidden_size, recipe.student.intermediate_size = 192, 512
        recipe.student.num_heads, recipe.student.num_kv_heads = 4, 2
        recipe.train.seq_len = 256
        run_dir = recipe.run_dir
        write_corpus(run_dir, n_train=args.docs, n_heldout=20)
        train = read_split(run_dir, "train")
        train_student_tokenizer([d.text for d in train], 512, run_dir / "tokenizer")
        write_cache(run_dir / "cache" / "smol", "smol", registry_tokenizer("smollm2-135m"), train, k=32)
        write_cache(run_dir / "cache" / "gemma", "gemma", registry_tokenizer("gemma3-270m"), train, k=32)
        results = {}
        for name, baseline in (("ce_only", True), ("kd_two_teachers", False)):
            t0 = time.perf_counter()
            out = run_training(recipe, baseline=baseline, progress=False)
            wall = time.perf_counter() - t0
            log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
            results[name] = {"steps": args.steps, "tokens": log[-1]["tokens"],
                             "loop_tokens_per_s": round(log[-1]["tokens_per_s"], 1),
                             "wall_s_including_setup": round(wall, 1), "final_loss": round(log[-1]["loss"], 4),
                             "final_kd": float(f"{log[-1]['kd']:.4g}"), "final_chunk": float(f"{log[-1]['chunk']:.4g}")}
        ratio = results["kd_two_teachers"]["loop_tokens_per_s"] / results["ce_only"]["loop_tokens_per_s"]
        report = {"benchmark": "train", "machine": machine(),
                  "setup": {"student_params": "~1.9M (hidden 192, 4 layers, vocab <=512)", "batch": 8,
                            "seq_len": 256, "top_k": 32, "teachers": ["smollm2-135m tokenizer",
                                                                     "gemma3-270m tokenizer"]},
                  "results": results, "kd_over_ce_throughput": round(ratio, 3), "target": 0.8,
                  "load_avg_at_end": os.getloadavg()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    # the corpus is synthetic (tests' write_corpus, fixed seed): the commit determines it
    write_json(out_dir / "train.json", report, Provenance.collect(dtype="float32"))
    m = report["machine"]
    lines = ["# Student training throughput: KD (two cached teachers) vs CE-only", "",
             (f"Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM, torch {m['torch']}, "
             f"CUDA: {m['cuda']}; load average at start {m['load_avg_at_start']} (shared machine)."), "",
             "| run | steps | tokens | tokens/s (loop) | wall s (incl. setup) | final loss | kd | chunk |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['steps']} | {r['tokens']} | {r['loop_tokens_per_s']} | "
                     f"{r['wall_s_including_setup']} | {r['final_loss']} | {r['final_kd']} | {r['final_chunk']} |")
    lines += ["", f"KD / CE-only throughput: **{report['kd_over_ce_throughput']}** (target >= 0.8).", ""]
    (out_dir / "train.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
