"""The price of crossing tokenizers (issue 31, item 3a): the same teacher distilled into one
small student that shares its tokenizer, and into the same student with its own BPE.

Teacher: SmolLM2-135M (the registry's float32 copy), captured by avokit's normal capture
(top-k 32) over the transfer study's corpus (transfer.yaml, rebuilt here: same sources, same
split by source text; crossing_data.py). Student: ``STUDENT``, one small from-scratch Llama,
in two tokenizer variants: ``shared`` reads SmolLM2-135M's own tokenizer (``tokenizer.kind:
path``), so avokit's trainer gives the teacher the identity map and its token term is the exact
top-k + tail divergence of avokit/losses/same_vocab.py (every student position is a common
boundary; each run checks this before it trains, ``vocabulary_path``); ``own`` trains its own
byte-level BPE on the training split (``tokenizer.kind: train``), so KD goes through the byte
alignment with the transfer study's settings (dense byte-conditional targets, debiased chunk
term). Both KD arms keep the chunk term (weight 0.5, debiased); only the alignment differs.

Arms (one seed: identical initial weights for a tokenizer, data order per seed, equal steps):
``ce_shared``, ``kd_shared``, ``ce_own``, ``kd_own``. Every run trains in segments of
``--segment-steps`` at a constant learning rate after warmup and is scored after each
(bits per byte from its own log-probs, per domain and domain-balanced) on validation and test
(held-out); the checkpoint is chosen on validation and reported on test.

Pre-registered (committed before seeds 1-3 ran; seed 0 is the pilot, trained first with the
same settings to check that the learning rate and steps let the validation curves turn, and
never counted): settings 150 steps x 2 x 256 tokens, lr 3e-3, warmup 10, scored every 25
steps (windows of 256 tokens, the trained length). With ``gap_X = BPB(kd_X) - BPB(ce_X)``
on test at the chosen checkpoints, paired by seed,

    crossing price = gap_own - gap_shared    (bits per byte; > 0: crossing loses KD gain)

Hypothesis: the byte alignment loses part of what the same teacher gives a student that shares
its tokenizer, most on Chinese (3-byte characters, several SmolLM2 tokens each). Decision rule,
over seeds 1, 2, 3 (95% Student t interval of the per-seed differences, domain-balanced): the
interval above zero -> the alignment has a measured price (reported with the share of the
same-vocabulary gain it keeps, ``gap_own / gap_shared``); containing zero -> no price
detectable at this resolution (its width reported); below zero -> crossing does better than
the same-vocabulary path. Per domain the same reading, reported, not part of the rule. If
``gap_shared`` is not below zero (the same-vocabulary KD does not beat CE) the kept share is
undefined and the study says so.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.crossing.crossing prepare \\
        --transfer-data /work/main/runs/bench-transfer/data    # corpus + SmolLM2 capture
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.crossing.crossing train --steps 150 \\
        --seeds 0 1 2 3                                          # resumable per segment
    .venv/bin/python -m bench.quality.crossing.crossing report --seeds 1 2 3

Layout under ``--runs`` (default runs/bench-crossing): ``data/`` (corpus, cache, data.json),
``settings.json``, ``<arm>/s<seed>/`` (``segments.json``, ``run.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from avokit.recipe import Recipe
from bench.provenance import Provenance
from bench.quality.crossing.crossing_data import (
    TEACHER,
    TRANSFER_DATA,
    crossing_recipe,
    prepare,
    teacher_dir,
)
from bench.quality.crossing.crossing_render import render
from bench.quality.crossing.crossing_stats import ARMS, crossing_price
from bench.quality.fusion_proof.proof import _drop_unscored_checkpoints, _link
from bench.quality.fusion_proof.proof_stats import chosen, chosen_test_bpb
from bench.quality.study.data import _write_json
from bench.quality.study.runner import scored_training, split_scores
from bench.quality.study.study import lock_settings, provenance
from bench.quality.transfer.transfer_stats import curves
from bench.results_io import write_results

ROOT = Path(__file__).resolve().parents[3]
# avokit's default student's shape, narrower (~0.2M parameters besides the embeddings): on the
# shared variant the 49,152-row head is most of the compute, and 3 seeds x 4 arms had to fit
# about 40 minutes of one core on this shared machine
STUDENT = {"arch": "llama", "hidden_size": 64, "intermediate_size": 256, "num_layers": 4, "num_heads": 4,
           "num_kv_heads": 2, "max_position_embeddings": 512, "tie_embeddings": True}
OWN_VOCAB = 4096  # avokit's default student BPE size
# the KD term of each tokenizer variant: the shared one's every position is a common boundary,
# so boundary targets through the identity map are the exact same-vocabulary objective; the
# own one crosses with the transfer study's alignment (transfer.AVOKIT)
LOSS = {"shared": {"targets": "boundary", "chunk_debias": True},
        "own": {"targets": "dense", "chunk_debias": True}}


def student_tokenizer(variant: str, shared_dir: Path | None = None) -> dict[str, Any]:
    """The recipe's ``student.tokenizer`` of a variant (``shared_dir``: SmolLM2's folder)."""
    if variant == "shared":
        return {"kind": "path", "path": str(shared_dir or teacher_dir())}
    return {"kind": "train", "vocab_size": OWN_VOCAB}


def arm_recipe(runs: Path, arm: str, seed: int, settings: dict[str, Any], shared_dir: Path | None = None) -> Recipe:
    """The recipe of one (arm, seed) run, its corpus and cache linked to ``runs/data``."""
    kind, variant = arm.split("_")
    train: dict[str, Any] = {
        "seed": seed, "steps": settings["steps"], "batch_size": settings["batch_size"],
        "seq_len": settings["seq_len"], "lr": settings["lr"], "warmup_steps": settings["warmup"],
        "min_lr_ratio": 1.0, "mixed_precision": settings["mixed_precision"],
        "checkpoint_every": settings["segment_steps"], "eval_every": 10**9, "log_every": 10}
    if kind == "kd":
        train["loss"] = LOSS[variant]
    data = crossing_recipe(runs)
    rec = Recipe.model_validate({
        "name": f"s{seed}", "runs_dir": str((runs / arm).resolve()), "base_dir": ROOT,
        "corpus": data.corpus.model_dump(mode="json"),
        "teachers": [t.model_dump(mode="json") for t in data.teachers],  # CE names it, never reads it
        "student": {**STUDENT, "tokenizer": student_tokenizer(variant, shared_dir)}, "train": train})
    _link(runs / "data" / "corpus", rec.run_dir / "corpus")
    if kind == "kd":
        _link(runs / "data" / "cache" / TEACHER, rec.run_dir / "cache" / TEACHER)
    return rec


def vocabulary_path(rec: Recipe, tokenizer: Any) -> dict[str, Any]:
    """How avokit's trainer maps the teacher into this student (its own ``teacher_sources``):
    ``shares_vocabulary``, ``identity_map`` (teacher id = student id for every id) and
    ``dense`` (byte-conditional targets, the crossing path)."""
    import numpy as np

    from avokit.cache import load_cache_tokenizer
    from avokit.losses.same_vocab import shares_vocabulary
    from avokit.train.run import teacher_sources

    source = teacher_sources(rec, tokenizer)[0]
    t_tok = load_cache_tokenizer(rec.run_dir / "cache" / TEACHER)
    t2s = source.teacher_to_student
    return {"shares_vocabulary": shares_vocabulary(t_tok.get_vocab(), tokenizer.get_vocab()),
            "identity_map": bool(np.array_equal(t2s, np.arange(t2s.shape[0]))) and t2s.shape[0] == len(tokenizer),
            "dense": source.dense is not None, "teacher_vocab": len(t_tok), "student_vocab": len(tokenizer)}


def check_path(arm: str, path: dict[str, Any]) -> None:
    """Refuse a run whose alignment is not the one its arm names."""
    shared = arm.endswith("_shared")
    want = {"shares_vocabulary": shared, "identity_map": shared, "dense": not shared}
    wrong = {k: path[k] for k, v in want.items() if path[k] != v}
    if wrong:
        raise SystemExit(f"{arm}: the trainer would not take the {'same-vocabulary' if shared else 'crossing'} "
                         f"path ({wrong}, wanted {want})")


def _record(runs: Path, rec: Recipe, arm: str, seed: int, settings: dict[str, Any], extra: dict[str, Any]) -> None:
    """Append this process's provenance to the run's ``run.json``."""
    from avokit.checksums import file_sha256

    path = rec.run_dir / "run.json"
    old = json.loads(path.read_text()) if path.is_file() else {"processes": []}
    tok = rec.run_dir / "tokenizer" / "tokenizer.json"
    _write_json(path, {**old, "arm": arm, "seed": seed, "what": ARMS[arm], "student": STUDENT,
                       "tokenizer": rec.student.tokenizer.model_dump(mode="json"),
                       "tokenizer_sha256": file_sha256(tok) if tok.is_file() else None,
                       "train": rec.train.model_dump(mode="json"), **extra,
                       "processes": [*old["processes"], provenance(runs, settings)]})


def train_arm(runs: Path, arm: str, seed: int, settings: dict[str, Any]) -> None:
    """Train one (arm, seed), scoring the student after every segment; resumable per segment."""
    from avokit.train.run import ensure_student_tokenizer

    rec = arm_recipe(runs, arm, seed, settings)
    baseline = arm.startswith("ce_")
    ckpt = rec.run_dir / ("baseline" if baseline else "student") / "checkpoints"
    log_path = rec.run_dir / "segments.json"
    segments: list[dict[str, Any]] = json.loads(log_path.read_text()) if log_path.is_file() else []
    wanted = settings["steps"] // settings["segment_steps"]
    if len(segments) >= wanted:
        return
    tokenizer = ensure_student_tokenizer(rec)  # the one run_training reads back
    extra: dict[str, Any] = {}
    if not baseline:
        path = vocabulary_path(rec, tokenizer)
        check_path(arm, path)
        extra["vocabulary_path"] = path
    _record(runs, rec, arm, seed, settings, extra)
    _drop_unscored_checkpoints(ckpt, segments[-1]["step"] if segments else 0)
    scored_training(rec, baseline, segments, wanted, lambda model: {
        "params": sum(p.numel() for p in model.parameters()),
        **split_scores(model, tokenizer, runs, settings["score_max_length"])}, f"[crossing] {arm} seed {seed}")
    shutil.rmtree(ckpt, ignore_errors=True)  # the scores are in segments.json


def collect(runs: Path, settings: dict[str, Any]) -> tuple[dict[str, dict[int, Any]], list[str]]:
    """Every finished run (arm -> seed -> {segments, run}) and the unfinished ones' names."""
    results: dict[str, dict[int, Any]] = {}
    unfinished: list[str] = []
    wanted = settings["steps"] // settings["segment_steps"]
    for arm in ARMS:
        for seg_file in sorted((runs / arm).glob("s*/segments.json"), key=lambda p: int(p.parent.name[1:])):
            segments = [s for s in json.loads(seg_file.read_text()) if s["step"] <= settings["steps"]]
            if len(segments) < wanted:
                unfinished.append(f"{arm}/{seg_file.parent.name} ({len(segments)} of {wanted} segments)")
                continue
            run_file = seg_file.with_name("run.json")
            results.setdefault(arm, {})[int(seg_file.parent.name[1:])] = {
                "segments": segments, "run": json.loads(run_file.read_text()) if run_file.is_file() else None}
    return results, unfinished


def report(runs: Path, out: Path, seeds: list[int] | None) -> dict[str, Any]:
    """Choose checkpoints on validation, pair the arms by seed, write JSON + Markdown."""
    settings = json.loads((runs / "settings.json").read_text())
    data = json.loads((runs / "data" / "data.json").read_text())
    results, unfinished = collect(runs, settings)
    test = chosen_test_bpb(results)
    procs = [p for by in results.values() for r in by.values() if r["run"] for p in r["run"]["processes"]]
    result: dict[str, Any] = {
        "settings": settings, "seeds_counted": seeds, "student": STUDENT, "own_vocab_size": OWN_VOCAB,
        "loss": LOSS, "arms": ARMS, "teacher": TEACHER, "teacher_test_bpb": data["teacher_test_bpb"],
        "chosen_test": test,
        "chosen_step": {a: {s: chosen(r["segments"])["step"] for s, r in by.items()} for a, by in results.items()},
        "curves": curves(results),
        # seconds per run: training (the first segment's includes setup) plus scoring
        "wall_s": {a: {s: round(sum(g["train_wall_s"] + g["score_wall_s"] for g in r["segments"]), 1)
                       for s, r in by.items()} for a, by in results.items()},
        "vocabulary_path": {a: {s: (r["run"] or {}).get("vocabulary_path") for s, r in by.items()}
                            for a, by in results.items() if a.startswith("kd_")},
        "records": {k: sorted({str(p.get(k)) for p in procs})
                    for k in ("commit", "dtype", "cpu", "corpus_manifest_sha256", "torch_threads")},
        "load": [p.get("load") for p in procs],
        "data": {k: data[k] for k in ("corpus_manifest_sha256", "same_split_as_transfer", "teacher_tokens",
                                      "teacher_cache", "created")},
        "runs": results, "unfinished": unfinished,
    }
    result["crossing_price"] = crossing_price(result)
    training = {f"{a}/seed{s}": [str(p.get("commit")) for p in r["run"]["processes"]]
                for a, by in results.items() for s, r in by.items() if r["run"]}
    write_results(out, result, render(result), Provenance.collect(
        dtype="float32", corpus=runs / "data" / "corpus" / "manifest.json", training=training))
    return result


def main() -> None:
    """prepare | train | report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["prepare", "train", "report"])
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-crossing"))
    ap.add_argument("--transfer-data", type=Path, default=TRANSFER_DATA,
                    help="prepare: the transfer study's data folder, whose split files ours must equal")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="train: these seeds (default 0 1 2 3; seed 0 is the pilot); report: count only these (default: all finished)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--steps", type=int, default=None, help="train: total steps per run (default: as recorded)")
    ap.add_argument("--segment-steps", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--score-max-length", type=int, default=256,
                    help="scoring window in tokens: the trained length (a from-scratch student never saw more)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/transfer_crossing"))
    args = ap.parse_args()
    if args.command == "prepare":
        print(json.dumps(prepare(args.runs, args.transfer_data), indent=1, default=str)[:4000])
    elif args.command == "train":
        if not (args.runs / "data" / "data.json").is_file():
            raise SystemExit(f"{args.runs}/data/data.json missing: run `crossing.py prepare` first")
        settings = lock_settings(args.runs, args)
        for seed in args.seeds if args.seeds is not None else [0, 1, 2, 3]:  # seed-major: pairs accumulate
            for arm in args.arms:
                train_arm(args.runs, arm, seed, settings)
    else:
        print(json.dumps(report(args.runs, args.out, args.seeds)["crossing_price"], indent=1))


if __name__ == "__main__":
    main()
