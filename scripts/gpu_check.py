"""The scale-out check for a GPU machine: NCCL DDP and FSDP2 of a tiny student in bf16.

    python scripts/gpu_check.py [--work DIR]

Runs in a few minutes on the GPUs present (no network, no model download: a synthetic corpus
and a ~1M-parameter student from config), then prints what it proved:

1. ``avokit train RECIPE --nproc G`` (torchrun, one process per GPU): every log line says
   world size G, MULTI_GPU, nccl, and the ranks' rows of each global batch are disjoint;
2. ``accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes G``: the run
   says FSDP, and the gathered student is one Hugging Face directory that loads;
3. both runs' losses match within bf16 tolerance (same data, seed and global batch);
4. with two GPUs or more, ``avokit train RECIPE --nproc G`` with ``train.parallel: fsdp`` (avokit's
   own FSDP2, the path CPUs take): each rank holds only its part of the parameters.

With one GPU the runs have world size 1 and the check says so (it proves bf16 and the launch
path, not the process group). Exit code 0 only when every check held.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the cat dog river stone light quiet garden café naïve 東京 ran sat under over green old".split()


def _corpus(run_dir: Path) -> None:
    """Seeded synthetic documents in the corpus contract's columns."""
    rng = np.random.default_rng(0)
    (run_dir / "corpus").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 128), ("heldout", 16)):
        texts = [" ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 60)) + "." for _ in range(n)]
        pq.write_table(pa.table({"doc_id": [f"{split}-{i}" for i in range(n)], "text": texts,
                                 "source": ["synthetic"] * n}), run_dir / "corpus" / f"{split}.parquet")


def _recipe(work: Path, name: str, world: int, parallel: str = "ddp") -> Path:
    data = {
        "name": name, "runs_dir": str(work / "runs"),
        "corpus": {"sources": [{"kind": "builtin", "name": "lambada-passages"}]},
        "teachers": [{"name": "none", "kind": "hf", "path": str(work)}],
        "student": {"hidden_size": 128, "intermediate_size": 256, "num_layers": 4, "num_heads": 4,
                    "num_kv_heads": 2, "tokenizer": {"vocab_size": 512}},
        "train": {"steps": 8, "batch_size": 4 * world, "seq_len": 128, "lr": 3e-3, "warmup_steps": 2,
                  "log_every": 1, "eval_every": 8, "checkpoint_every": 4, "eval_max_rows": 8,
                  "mixed_precision": "bf16", "parallel": parallel},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    _corpus(work / "runs" / name)
    return path


def _run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True, timeout=240)


def _log(work: Path, name: str) -> list[dict]:
    path = work / "runs" / name / "baseline" / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to check here (CPU scale-out is in the test suite)")
        return 1
    world = torch.cuda.device_count()
    work = args.work or Path(tempfile.mkdtemp(prefix="avokit-gpu-check-"))
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(("PROVED  " if ok else "FAILED  ") + what, flush=True)
        if not ok:
            failures.append(what)

    ddp = _recipe(work, "ddp", world)
    _run([sys.executable, "-m", "avokit", "train", str(ddp), "--baseline", "--no-progress", "--nproc", str(world)])
    log = _log(work, "ddp")
    kind = "MULTI_GPU" if world > 1 else "NO"
    check(all(r["world_size"] == world and r["distributed_type"] == kind for r in log),
          f"DDP: {world} process(es), {kind}, backend {log[0]['backend']}, bf16, on {torch.cuda.get_device_name(0)}")
    check(all(len({x for rows in r["rows_by_rank"] for x in rows}) == r["rows_per_rank"] * world for r in log),
          "DDP: the ranks trained on disjoint rows of every global batch")

    fsdp = _recipe(work, "fsdp", world)
    _run([str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
          str(ROOT / "configs" / "accelerate" / "fsdp.yaml"), "--num_processes", str(world), "-m", "avokit",
          "train", str(fsdp), "--baseline", "--no-progress"])
    flog = _log(work, "fsdp")
    check(all(r["world_size"] == world and r["distributed_type"] == "FSDP" for r in flog),
          f"FSDP2: {world} process(es), distributed type {flog[0]['distributed_type']}")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(work / "runs" / "fsdp" / "baseline"))
    check(sum(p.numel() for p in model.parameters()) > 0, "FSDP2: the gathered student loads as one HF directory")
    worst = max(abs(a["loss"] - b["loss"]) / max(1.0, abs(a["loss"])) for a, b in zip(log, flog))
    check(worst < 3e-2, f"DDP and FSDP2 losses agree (worst relative gap {worst:.4f}, bf16)")
    if world > 1:
        own = _recipe(work, "own_fsdp", world, parallel="fsdp")
        _run([sys.executable, "-m", "avokit", "train", str(own), "--baseline", "--no-progress", "--nproc", str(world)])
        olog = _log(work, "own_fsdp")
        held, full = olog[0]["params_by_rank"], olog[0]["params"]
        check(olog[0]["distributed_type"] == "FSDP" and sum(held) == full and max(held) < full,
              f"train.parallel: fsdp on {world} GPUs: the ranks hold {held} of {full} parameter elements")
    print(f"{len(failures)} check(s) failed" if failures else "every check held")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
