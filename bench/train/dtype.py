"""Student training in float32 against bf16 on this machine (issue 39, item 3).

Two students: the avocado-mini from-scratch student (~4M parameters, its own 4,096-token BPE)
and SmolLM2-135M from its own pretrained weights and tokenizer (the registry's float32 copy);
two objectives: CE only, and CE + KD + chunk from two cached teachers (tiny random teachers
with the real SmolLM2 and Gemma 3 tokenizers, as bench/train/run.py); two precisions:
``mixed_precision: no`` (float32) and ``bf16`` (Accelerate's autocast on CPU: float32 master
weights and optimizer state, bf16 matmuls, the loss math in float32). Same seed, data order
and steps within each pair; tokens/s of the training loop and held-out BPB after the last
step. Writes bench/results/train_dtype.{json,md}.

    .venv/bin/python -m bench.train.dtype [--steps 6] [--sizes 4m 135m]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.provenance import Provenance
from bench.results_io import write_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "bench" / "results"


def machine() -> dict:
    """CPU, its bf16 support, torch, load."""
    import torch

    from avokit.evaluate.run import cpu_model
    from avokit.precision import cpu_bf16_report, resolve_mixed_precision

    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), **cpu_bf16_report(),
            "mixed_precision_auto": resolve_mixed_precision("auto", "cpu"),
            "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def prepare(tmp: Path, size: str, steps: int, batch: int, seq_len: int):
    """A recipe, corpus and two teacher caches for one student size."""
    from test_train import make_recipe, write_cache, write_corpus

    from avokit.recipe import load_recipe
    from avokit.student import train_student_tokenizer
    from avokit.teachers.materialize import float32_dir
    from avokit.teachers.registry import locate_teacher, registry_tokenizer
    from avokit.train.data import read_split

    recipe = make_recipe(tmp / size, steps=steps, log_every=steps, eval_every=steps,
                         checkpoint_every=10**6, warmup_steps=1, batch_size=batch, seq_len=seq_len,
                         eval_max_rows=8)
    run_dir = recipe.run_dir
    write_corpus(run_dir, n_train=200, n_heldout=20)
    train = read_split(run_dir, "train")
    if size == "4m":
        mini = load_recipe("avocado-mini").student
        recipe.student = mini.model_copy()
        recipe.train.lr = 3e-3
        train_student_tokenizer([d.text for d in train], mini.tokenizer.vocab_size, run_dir / "tokenizer")
    else:
        folder, _ = float32_dir("smollm2-135m", locate_teacher("smollm2-135m"),
                                lambda: registry_tokenizer("smollm2-135m"))
        recipe.student = recipe.student.model_validate(
            {"pretrained": str(folder), "tokenizer": {"kind": "path", "path": str(folder)}})
        recipe.train.lr = 1e-4
    write_cache(run_dir / "cache" / "smol", "smol", registry_tokenizer("smollm2-135m"), train, k=32)
    write_cache(run_dir / "cache" / "gemma", "gemma", registry_tokenizer("gemma3-270m"), train, k=32)
    return recipe


def run_one(recipe, objective: str, precision: str) -> dict:
    """Train from scratch of the run's student directory; tokens/s and final held-out BPB."""
    from accelerate.state import AcceleratorState

    from avokit.train import run_training

    # Accelerate keeps one state per process, mixed precision included: reset it between runs
    AcceleratorState._reset_state(reset_partial_state=True)
    for d in ("student", "baseline"):
        shutil.rmtree(recipe.run_dir / d, ignore_errors=True)
    recipe.train.mixed_precision = precision
    t0 = time.perf_counter()
    out = run_training(recipe, baseline=objective == "ce", progress=False)
    wall = time.perf_counter() - t0
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    last = log[-1]
    return {"objective": objective, "mixed_precision": precision, "steps": last["step"],
            "tokens": last["tokens"], "tokens_per_s": round(last["tokens_per_s"], 1),
            "wall_s": round(wall, 1), "final_loss": round(last["loss"], 4),
            "heldout_bpb": round(last["heldout_bpb"], 4),
            "load_average_end": [round(x, 2) for x in os.getloadavg()]}


def write_md(result: dict, path: Path) -> None:
    """The Markdown table of ``result``."""
    m = result["machine"]
    lines = ["# Student training: float32 against bf16 autocast", "",
             f"Machine: {m['cpu']}, {m['nproc']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
             f"native bf16: {m['native_bf16']} ({m['bf16_reason']}); `mixed_precision: auto` resolves to "
             f"`{m['mixed_precision_auto']}` here; commit {m['commit'][:10]}; load average at start "
             f"{m['load_average_start']}.", "",
             f"Batch {result['batch']} x {result['seq_len']} tokens, {result['steps']} steps per run, same "
             "seed and data order for both precisions; held-out BPB after the last step.", "",
             "| student | objective | precision | tokens/s | wall s | final loss | held-out BPB | "
             "bf16 / float32 tokens/s | BPB change |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        ratio, change = r.get("bf16_speedup"), r.get("bpb_rel_change")
        lines.append(f"| {r['student']} | {r['objective']} | {r['mixed_precision']} | {r['tokens_per_s']} | "
                     f"{r['wall_s']} | {r['final_loss']} | {r['heldout_bpb']} | "
                     f"{'' if ratio is None else f'**{ratio}x**'} | "
                     f"{'' if change is None else f'{change:+.2%}'} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    """Every size x objective x precision; JSON and Markdown under bench/results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--sizes", nargs="+", default=["4m", "135m"], choices=["4m", "135m"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"machine": machine(), "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len, "rows": []}
    tmp = Path(tempfile.mkdtemp(prefix="avokit-bench-dtype-"))
    try:
        for size in args.sizes:
            recipe = prepare(tmp, size, args.steps, args.batch, args.seq_len)
            for objective in ("ce", "kd"):
                pair = {p: run_one(recipe, objective, p) for p in ("no", "bf16")}
                pair["bf16"]["bf16_speedup"] = round(pair["bf16"]["tokens_per_s"] / pair["no"]["tokens_per_s"], 3)
                pair["bf16"]["bpb_rel_change"] = pair["bf16"]["heldout_bpb"] / pair["no"]["heldout_bpb"] - 1
                for row in pair.values():
                    result["rows"].append({"student": size, **row})
                    print(json.dumps(result["rows"][-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    # the corpus is synthetic (tests' write_corpus, fixed seed): the commit determines it
    write_json(RESULTS / "train_dtype.json", result, Provenance.collect(dtype="float32,bf16"))
    write_md(result, RESULTS / "train_dtype.md")


if __name__ == "__main__":
    main()
