"""The transfer benchmark (issue 31, item 2): does KD from a stronger teacher, across
tokenizers, make a competent pretrained student better than CE alone?

Student: SmolLM2-135M from its own pretrained weights and tokenizer (the registry's float32
copy), trained in float32 on the CPU. Teachers: Gemma 3 270M and Qwen2.5-Coder-0.5B, captured
by avokit's normal capture (top-k 32). Corpus: ``transfer.yaml`` (English passages, Python
files, Chinese reviews; split by source text into train / validation / held-out = test).

Arms (``ARMS``, one line each; identical initial weights, data order per seed and steps):
``start`` the untouched student (scored, not trained), ``ce`` CE only, ``kd_gemma`` /
``kd_qwen`` CE + KD from one teacher with avokit's alignment (dense byte-conditional targets,
debiased chunk term), ``uld_gemma`` the same with ULD as the token-level term. Every run
trains in segments of ``--segment-steps`` at a constant learning rate after warmup; after
each segment the student is scored in memory (bits per byte from its own log-probs, per
domain and domain-balanced) on validation and test. The checkpoint is chosen on validation
and reported on test; ``report`` pairs the arms by seed (transfer_stats.py).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.transfer.transfer prepare
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.transfer.transfer train --steps 80 \\
        --seeds 0 1 2 --arms start ce kd_gemma    # one process per arm list; resumable
    .venv/bin/python -m bench.quality.transfer.transfer report   # bench/results/transfer.{json,md}

The trainer is the study one (bench/quality/study: :class:`~bench.quality.study.study.Study` =
this table of arms + designs + transfer.yaml's data). Layout under ``--runs`` (default runs/bench-transfer): ``data/`` (corpus, caches, data.json),
``settings.json`` (shared by every run), ``<arm>/s<seed>/`` (the run: ``segments.json`` with
each segment's scores, ``run.json`` with what each process ran on). A killed ``train``
continues from its last scored segment; ``--steps`` may be raised later (every run then
trains on; runs with fewer segments are reported as unfinished).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from avokit.recipe import Recipe
from bench.provenance import Provenance
from bench.quality.fusion_proof.proof_stats import chosen, chosen_test_bpb, paired_differences
from bench.quality.study import runner
from bench.quality.study import study as study_run
from bench.quality.study.cli import run_command, study_parser
from bench.quality.study.runner import scored_training, split_scores
from bench.quality.study.study import Study, lock_settings, provenance, run_records
from bench.quality.transfer.transfer_data import (
    GEMMA,
    QWEN,
    STUDENT,
    TEACHERS,
    TRANSFER_DATA,
    data_recipe,
    student_dir,
)
from bench.quality.transfer.transfer_render import render
from bench.quality.transfer.transfer_stats import build_verdict, curves, equal_steps
from bench.results_io import write_results

__all__ = ["ARMS", "DESIGNS", "TEACHERS", "arm_recipe", "collect", "data_recipe", "lock_settings", "main",
           "provenance", "report", "scored_training", "split_scores", "study", "train_arm"]

ROOT = Path(__file__).resolve().parents[3]
CROSSING = ROOT / "bench" / "results" / "transfer_crossing.json"  # item 3a's study (crossing.py)
# avokit's own alignment as in the pilot: byte-conditional dense targets + debiased chunk term
AVOKIT = {"targets": "dense", "chunk_debias": True}
# the second test's configuration: both gates, both teacher terms at half weight
BOTH_GATES_HALF = {**AVOKIT, "kd_gate": "teacher_better", "chunk_gate": "teacher_better", "kd_weight": 0.5,
                   "chunk_weight": 0.25}
# name -> (teachers, changes to the recipe's train section (None: not trained), what it is)
ARMS: dict[str, tuple[list[str], dict[str, Any] | None, str]] = {
    "start": ([], None, "the pretrained student, untouched (scored, not trained)"),
    "ce": ([], {}, "CE only (the baseline)"),
    "kd_gemma": ([GEMMA], {"loss": AVOKIT}, "CE + KD from Gemma alone, avokit's alignment (dense, debiased chunk)"),
    "kd_qwen": ([QWEN], {"loss": AVOKIT}, "CE + KD from Qwen alone, avokit's alignment (dense, debiased chunk)"),
    "uld_gemma": ([GEMMA], {"loss": {**AVOKIT, "token_loss": "uld"}},
                  "CE + ULD from Gemma: as kd_gemma, ULD as the token-level term"),
    # pilot arms for item 3c (the loss), seed 0 only until one is pre-registered
    "kd_gemma_nochunk": ([GEMMA], {"loss": {**AVOKIT, "chunk_weight": 0.0}},
                         "CE + KD from Gemma, dense targets, no chunk term"),
    "kd_gemma_gated": ([GEMMA], {"loss": {**AVOKIT, "kd_gate": "teacher_better"}},
                       "CE + KD from Gemma, dense targets and chunk term, KD only where it raises gold"),
    "kd_gemma_gated_nochunk": ([GEMMA], {"loss": {**AVOKIT, "kd_gate": "teacher_better", "chunk_weight": 0.0}},
                               "CE + KD from Gemma, dense targets, KD only where it raises gold, no chunk term"),
    "kd_gemma_gated_half": ([GEMMA], {"loss": {**AVOKIT, "kd_gate": "teacher_better", "kd_weight": 0.5,
                                                "chunk_weight": 0.25}},
                            "CE + KD from Gemma, gated, both teacher terms at half weight"),
    "kd_gemma_gated_both": ([GEMMA], {"loss": {**AVOKIT, "kd_gate": "teacher_better", "chunk_gate": "teacher_better"}},
                            "CE + KD from Gemma, token and chunk terms only where they raise the gold text"),
    "kd_gemma_gated_both_half": ([GEMMA], {"loss": BOTH_GATES_HALF},
                                 "CE + KD from Gemma, token and chunk terms gated, both at half weight"),
    "kd_qwen_gated_both_half": ([QWEN], {"loss": BOTH_GATES_HALF},
                                "CE + KD from Qwen, token and chunk terms gated, both at half weight"),
    "kd_qwen_gated": ([QWEN], {"loss": {**AVOKIT, "kd_gate": "teacher_better"}},
                      "CE + KD from Qwen, dense targets and chunk term, KD only where it raises gold"),
    # not trained by default: ULD in the field's own form (GOLD), at common token boundaries only
    "uld_gemma_boundary": ([GEMMA], {"loss": {"token_loss": "uld", "chunk_weight": 0.0}},
                           "CE + ULD from Gemma at common boundaries, no chunk term (the field's form)"),
}
DEFAULT_ARMS = ["start", "ce", "kd_gemma", "kd_qwen", "uld_gemma"]
# the verdict's comparisons (issue 31, item 5): each teacher's KD arm against CE; ULD against
# avokit's token term at the same positions and chunk term. "pilot": the arms of seed 0
# (2026-12-06/07); "test": pre-registered in PREREGISTERED.md (2026-12-07) for seeds 1-3, the
# gated KD arm having the lowest validation BPB of the pilot's Gemma arms
DESIGNS: dict[str, tuple[dict[str, str], tuple[str, str, str]]] = {
    "pilot": ({GEMMA: "kd_gemma", QWEN: "kd_qwen"}, ("uld_gemma", "kd_gemma", GEMMA)),
    "test": ({GEMMA: "kd_gemma_gated", QWEN: "kd_qwen_gated"}, ("uld_gemma", "kd_gemma_gated", GEMMA)),
    # the second test (prefix cuts, both gates, half weight): Gemma only; ULD stays the first test's
    "cuts": ({GEMMA: "kd_gemma_gated_both_half"}, ("uld_gemma", "kd_gemma_gated_both_half", GEMMA)),
    # the third test (60 steps, checkpoints chosen on validation): Gemma only; ULD stays the first test's
    "long": ({GEMMA: "kd_gemma_gated_half"}, ("uld_gemma", "kd_gemma_gated_half", GEMMA)),
    # the fourth test (replication of the third's arms on 5 fresh seeds, 40 steps): as "long"
    "replication": ({GEMMA: "kd_gemma_gated_half"}, ("uld_gemma", "kd_gemma_gated_half", GEMMA)),
}
VERDICT_KD, VERDICT_ULD = DESIGNS["pilot"]


def study() -> Study:
    """The transfer study. Built on each call from this module's names, so the student's folder
    and the scoring are the ones this module holds when it runs."""
    return Study(name="transfer", arms=ARMS, designs=DESIGNS, data=TRANSFER_DATA, student_dir=student_dir,
                 scores=split_scores)


def arm_recipe(runs: Path, arm: str, seed: int, settings: dict[str, Any]) -> Recipe:
    """The recipe of one (arm, seed) run, its corpus and caches linked to ``runs/data``."""
    return study_run.arm_recipe(study(), runs, arm, seed, settings)


def train_arm(runs: Path, arm: str, seed: int, settings: dict[str, Any], keep_checkpoints: bool = False) -> None:
    """Train one (arm, seed), scoring the student after every segment; resumable per segment."""
    runner.train_arm(study(), runs, arm, seed, settings, keep_checkpoints)


def collect(runs: Path, settings: dict[str, Any]) -> tuple[dict[str, dict[int, Any]], list[str]]:
    """Every finished run (arm -> seed -> {segments, run}) and the unfinished ones' names."""
    return study_run.collect(study(), runs, settings)


def report(runs: Path, out: Path, seeds: list[int] | None, design: str = "pilot",
           crossing: Path = CROSSING, uld_from: Path | None = None) -> dict[str, Any]:
    """Choose checkpoints on validation, pair the arms by seed, write JSON + Markdown; the
    verdict compares the arms of ``design`` (``DESIGNS``) and carries the crossing study's
    price from ``crossing`` (its results JSON) when that exists, and, when these runs have no
    ULD arm, the ULD comparison of the earlier results file ``uld_from`` (named in the verdict)."""
    settings = json.loads((runs / "settings.json").read_text())
    data = json.loads((runs / "data" / "data.json").read_text())
    results, unfinished = collect(runs, settings)
    test = chosen_test_bpb(results)
    if seeds is not None:
        test = {arm: {s: v for s, v in by.items() if s in seeds} for arm, by in test.items()}
    teachers = data["teachers_test_bpb"]
    kd_arms, uld = DESIGNS[design]
    verdict = build_verdict(test, teachers, kd_arms, uld, GEMMA, seeds=seeds, student=STUDENT)
    verdict["design"] = design
    if uld_from is not None and not verdict["uld_minus_avokit"]["seeds"]:
        if not uld_from.is_file():
            raise SystemExit(f"--uld-from {uld_from}: no such results file")
        carried = json.loads(uld_from.read_text())["verdict"]["uld_minus_avokit"]
        verdict["uld_minus_avokit"] = {**carried, "source": uld_from.name}
    verdict["equal_steps"] = equal_steps(results, kd_arms, settings["steps"], seeds=seeds)  # no checkpoint chosen
    if crossing.is_file():  # item 3a, its own study (crossing.py): carried into the verdict as it stands
        from bench.quality.crossing.crossing_stats import crossing_price

        verdict["crossing_price"] = crossing_price(json.loads(crossing.read_text()))
        verdict["crossing_price_note"] = verdict["crossing_price"]["reading"]
    records, training = run_records(results)
    trained = settings["steps"] * settings["batch_size"] * settings["seq_len"]
    result: dict[str, Any] = {
        "verdict": verdict, "settings": settings, "seeds_counted": seeds,
        "arms": {a: {"teachers": t, "train": c, "what": w} for a, (t, c, w) in ARMS.items()},
        "teachers_test_bpb": teachers, "teacher_caches": data.get("teacher_caches"),
        "start_test_bpb": next(iter(test.get("start", {}).values()), None),
        "chosen_test": test,
        "chosen_step": {a: {s: chosen(r["segments"])["step"] for s, r in by.items()} for a, by in results.items()},
        "paired_vs_ce": {a: paired_differences(test, a, "ce") for a in ARMS if a != "ce"},
        "curves": curves(results),
        "budget": {"tokens_per_run": trained, "train_tokens": data["student_tokens"]["train"]["total"],
                   "epochs": trained / data["student_tokens"]["train"]["total"]},
        "records": records, "corpus_manifest_sha256_now": data["corpus_manifest_sha256"],
        "data": {k: data[k] for k in ("student", "student_dir", "student_tokens", "created")},
        "corpus": {k: data["corpus"][k] for k in ("documents", "domains", "domain_texts", "domain_bytes")},
        "runs": results, "unfinished": unfinished,
    }
    write_results(out, result, render(result), Provenance.collect(
        dtype="float32" if settings["mixed_precision"] == "no" else settings["mixed_precision"],
        corpus=runs / "data" / "corpus" / "manifest.json", training=training))
    return result


def main() -> None:
    """prepare | capture | train | report."""
    ap = study_parser(study(), __doc__ or "", "runs/bench-transfer", "bench/results/transfer", DEFAULT_ARMS)
    ap.add_argument("--design", choices=list(DESIGNS), default="pilot",
                    help="report: which arms the verdict compares (test: the pre-registered ones)")
    ap.add_argument("--uld-from", type=Path, default=None,
                    help="report: an earlier results JSON whose ULD comparison the verdict carries when these runs "
                         "train no ULD arm")
    args = ap.parse_args()
    if not run_command(study(), args):
        print(json.dumps(report(args.runs, args.out, args.seeds, args.design, uld_from=args.uld_from)["verdict"],
                         indent=1))


if __name__ == "__main__":
    main()
