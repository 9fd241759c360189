"""The fusion study with a pretrained student (issue 32): do two teachers with different
strengths, fused, make SmolLM2-135M better than the best one alone?

Student: SmolLM2-135M from its own pretrained weights and tokenizer, float32 on the CPU (as the
transfer study). Teachers: Gemma 3 270M and Qwen2.5-Coder-0.5B (top-k 32 captures). Corpus:
``fusion.yaml``, the transfer study's English / Python / Chinese plus GSM8K word problems,
split by source text (fusion_data.py). The trainer, settings lock, resume, scoring and
provenance are the study ones (bench/quality/study), with this table of arms; every segment
also records each test document's NLL for the bootstrap (fusion_stats.py).

Arms (identical initial weights, data order per seed, steps and learning rate): ``start``
(untouched), ``a_ce`` (CE only), ``b_gemma`` / ``b_qwen`` (the transfer study's best
single-teacher configuration, ``kd_gemma_gated_half``: dense byte-conditional targets, debiased
chunk term, token-level term only where the teacher raises the gold token, KD weight 0.5,
chunk weight 0.25), and the fused candidates ``f_*`` (both teachers, the same loss, one
``train.fusion`` mode each); the pilot chooses one on validation (``report --design pilot``).
``f_routed`` needs ``route`` first (each domain to the single-teacher arm best there on the
pilot's validation).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.fusion_pretrained.fusion prepare \\
        --reuse runs/bench-transfer-cuts/data --inside-top-k 32   # captures only the math documents
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.fusion_pretrained.fusion train --steps 40 \\
        --segment-steps 20 --seeds 100 --arms start a_ce b_gemma b_qwen f_fixed f_bpb f_min_ce f_span f_span_gated
    .venv/bin/python -m bench.quality.fusion_pretrained.fusion route --seeds 100   # then train f_routed
    .venv/bin/python -m bench.quality.fusion_pretrained.fusion report --design pilot --seeds 100 \\
        --out bench/results/fusion_pretrained_pilot
    .venv/bin/python -m bench.quality.fusion_pretrained.fusion report --design test --fused f_span \\
        --seeds 101 102 103     # bench/results/fusion_pretrained.{json,md}

Layout under ``--runs`` (default runs/bench-fusion-pretrained): as the transfer study's
(bench/quality/study/study.py), plus ``routing.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.provenance import Provenance
from bench.quality.fusion_pretrained.fusion_data import FUSION_DATA, math_items
from bench.quality.fusion_pretrained.fusion_render import render
from bench.quality.fusion_pretrained.fusion_stats import (
    HeldoutDocs,
    best_by_validation,
    build_proof,
    chosen_field,
    seeds_needed,
)
from bench.quality.fusion_proof.proof_stats import chosen_test_bpb
from bench.quality.study.cli import run_command, study_parser
from bench.quality.study.data import _write_json, capture, student_dir
from bench.quality.study.reuse import reuse_capture
from bench.quality.study.runner import document_scores
from bench.quality.study.study import Study, collect, run_records
from bench.quality.transfer.transfer_data import GEMMA, QWEN, STUDENT
from bench.quality.transfer.transfer_stats import curves
from bench.results_io import write_results

# the transfer study's best single-teacher configuration (its arm kd_gemma_gated_half)
BEST = {"targets": "dense", "chunk_debias": True, "kd_gate": "teacher_better", "kd_weight": 0.5, "chunk_weight": 0.25}
# the same with the chunk term gated per chunk as the token term is per position: no term of
# either teacher pulls toward a text the teacher finds less likely than the student does
BOTH_GATES = {**BEST, "chunk_gate": "teacher_better"}
BOTH = [GEMMA, QWEN]
ARMS: dict[str, tuple[list[str], dict[str, Any] | None, str]] = {
    "start": ([], None, "the pretrained student, untouched (scored, not trained)"),
    "a_ce": ([], {}, "CE only: continued training on the same text"),
    "b_gemma": ([GEMMA], {"loss": BEST}, "CE + KD from Gemma alone (the transfer study's best configuration)"),
    "b_qwen": ([QWEN], {"loss": BEST}, "CE + KD from Qwen alone (the transfer study's best configuration)"),
    # f_span_gated's single-teacher twin: it separates what its chunk gate does from what fusion does
    "b_gemma_gated": ([GEMMA], {"loss": BOTH_GATES}, "CE + KD from Gemma alone, chunk term gated too"),
    "f_fixed": (BOTH, {"loss": BEST, "fusion": {"mode": "fixed"}}, "both teachers, equal weights everywhere"),
    "f_bpb": (BOTH, {"loss": BEST, "fusion": {"mode": "bpb_softmax"}},
              "both teachers, per document: softmax of -BPB/0.1 over the teachers"),
    "f_min_ce": (BOTH, {"loss": BEST, "fusion": {"mode": "min_ce"}},
                 "both teachers, per document: all weight on the teacher with the lower BPB (MinCE)"),
    "f_span": (BOTH, {"loss": BEST, "fusion": {"mode": "span_softmax"}},
               "both teachers, per span: softmax of each teacher's local BPB (window 2)"),
    "f_span_gated": (BOTH, {"loss": BOTH_GATES, "fusion": {"mode": "span_softmax"}},
                     "both teachers, per span, chunk term gated too"),
    "f_routed": (BOTH, {"loss": BEST, "fusion": {"mode": "span_softmax"}},
                 "each domain routed to the teacher whose single-teacher arm is best there on validation"),
}
FUSED_MODES = {"f_fixed": "fixed", "f_bpb": "bpb_softmax", "f_min_ce": "min_ce", "f_span": "span_softmax",
               "f_span_gated": "span_softmax, chunk_gate teacher_better",
               "f_routed": "domain_weights (routed on validation) + span_softmax"}
SINGLES = ["b_gemma", "b_qwen"]
PILOT_ARMS = ["start", "a_ce", *SINGLES, "f_fixed", "f_bpb", "f_min_ce", "f_span", "f_span_gated"]
ROUTING = "routing.json"
DESIGNS = {"pilot": "the fused arm with the lowest mean validation BPB among those trained (FUSED_MODES)",
           "test": "the fused arm pre-registered (--fused)"}


def adjust(runs: Path, arm: str, train: dict[str, Any]) -> dict[str, Any]:
    """``f_routed``: the routing ``route`` chose on validation (refused before it ran)."""
    if arm != "f_routed":
        return train
    path = runs / ROUTING
    if not path.is_file():
        raise SystemExit(f"{path} missing: run `fusion.py route --seeds <pilot seeds>` before f_routed")
    return {**train, "fusion": {**train["fusion"], "domain_weights": json.loads(path.read_text())["domain_weights"]}}


def study() -> Study:
    """The fusion study (built per call from this module's names, as the transfer study)."""
    return Study(name="fusion", arms=ARMS, designs=DESIGNS, data=FUSION_DATA, student_dir=student_dir,
                 scores=document_scores, adjust=adjust)


def route(runs: Path, seeds: list[int]) -> dict[str, Any]:
    """Per domain, the single-teacher arm with the lowest mean validation BPB at its chosen
    checkpoint over ``seeds`` (the test split plays no part), written once to ``routing.json``."""
    path = runs / ROUTING
    if path.is_file():
        return json.loads(path.read_text())
    results, _ = collect(study(), runs, json.loads((runs / "settings.json").read_text()))
    val = chosen_field(results, "validation")
    missing = [a for a in SINGLES if not set(seeds) <= set(val.get(a, {}))]
    if missing:
        raise SystemExit(f"route: {missing} have not finished seeds {seeds}")
    domains = sorted(k for k in val[SINGLES[0]][seeds[0]] if k != "overall")
    best = {d: best_by_validation(val, SINGLES, seeds, d) for d in domains}
    out = {"seeds": seeds, "best_single": {d: b for d, (b, _) in best.items()},
           "validation_bpb": {d: m for d, (_, m) in best.items()},
           "domain_weights": {d: {ARMS[b][0][0]: 1.0} for d, (b, _) in best.items()}}
    _write_json(path, out)
    return out


def _test_docs(runs: Path) -> HeldoutDocs:
    from avokit.corpus import read_documents

    docs = read_documents(runs / "data" / "corpus" / "heldout.parquet")
    return HeldoutDocs({d.doc_id: d.domain for d in docs}, {d.doc_id: len(d.text.encode("utf-8")) for d in docs})


def report(runs: Path, out: Path, seeds: list[int] | None, design: str = "test", fused: str | None = None,
           draws: int = 2000) -> dict[str, Any]:
    """Choose checkpoints on validation, the fused arm (``design`` pilot: on validation; test:
    ``fused``), build the ``proof`` and write JSON + Markdown."""
    for need in (runs / "settings.json", runs / "data" / "data.json"):
        if not need.is_file():
            raise SystemExit(f"report: {need} missing (--runs {runs}: run `fusion.py prepare` and `train` first)")
    settings = json.loads((runs / "settings.json").read_text())
    data = json.loads((runs / "data" / "data.json").read_text())
    results, unfinished = collect(study(), runs, settings)
    if seeds is not None:
        results = {a: {s: r for s, r in by.items() if s in seeds} for a, by in results.items()}
    test, val, doc_nll = chosen_test_bpb(results), chosen_field(results, "validation"), chosen_field(
        results, "test_doc_nll")
    trained = [a for a in FUSED_MODES if val.get(a)]
    choice = None
    if design == "pilot" and trained:
        shared = sorted(set.intersection(*(set(val[a]) for a in trained)))
        fused, means = best_by_validation(val, trained, shared) if shared else (None, {})
        choice = {"seeds": shared, "validation_bpb": means, "chosen": fused}
    elif design == "test" and fused is None:
        raise SystemExit("report --design test: give --fused (the pre-registered fused arm)")
    proof, why = None, "no fused arm trained"
    if fused is not None:
        try:
            proof = build_proof(test, val, doc_nll, _test_docs(runs), data["teachers_test_bpb"], SINGLES, fused,
                                FUSED_MODES[fused], seeds=seeds, student=STUDENT, draws=draws)
        except ValueError as err:
            why = str(err)
    if choice is not None and proof is not None:
        choice["planning"] = planning(test, proof)
    records, training = run_records(results)
    result: dict[str, Any] = {
        "proof": proof, "proof_missing": None if proof else why, "design": design, "fused_choice": choice,
        "settings": settings, "seeds_counted": seeds,
        "arms": {a: {"teachers": t, "train": c, "what": w} for a, (t, c, w) in ARMS.items()},
        "teachers_test_bpb": data["teachers_test_bpb"], "teacher_caches": data.get("teacher_caches"),
        "math_items": data.get("math_items"), "chosen_test": test, "chosen_validation": val,
        "curves": curves(results), "records": records, "corpus_manifest_sha256_now": data["corpus_manifest_sha256"],
        "corpus": {k: data["corpus"][k] for k in ("documents", "domains", "domain_texts", "domain_bytes")},
        "runs": {a: {s: {"segments": [{k: v for k, v in seg.items() if k != "test_doc_nll"} for seg in r["segments"]],
                         "run": r["run"]} for s, r in by.items()} for a, by in results.items()},
        "unfinished": unfinished}
    write_results(out, result, render(result), Provenance.collect(
        dtype="float32" if settings["mixed_precision"] == "no" else settings["mixed_precision"],
        corpus=runs / "data" / "corpus" / "manifest.json", training=training))
    return result


def planning(test: dict[str, dict[int, dict[str, float]]], proof: dict[str, Any]) -> dict[str, Any]:
    """For the pre-registration, from the pilot: the spread of fused minus best single over the
    pilot's seeds, the seeds that spread needs to see 0.02 BPB, and the bootstrap's half-width
    (the test set's own error, which no number of seeds reduces)."""
    import statistics

    ids, fused, best = proof["seed_ids"], proof["fused_arm"], proof["best_single"]
    diffs = [test[fused][s]["overall"] - test[best][s]["overall"] for s in ids]
    sd = statistics.stdev(diffs) if len(diffs) >= 2 else None
    lo, hi = proof["fused_minus_best_single"]["bootstrap_ci95"]
    return {"seeds": ids, "sd_of_paired_differences": sd,
            "seeds_needed_for_0.02": seeds_needed(sd) if sd is not None else None,
            "bootstrap_half_width": (hi - lo) / 2}


def _capture(args: Any) -> None:
    """One teacher: from another study's cache where it covers whole domains (``--reuse``), else in full."""
    if args.reuse is not None:
        print(json.dumps(reuse_capture(FUSION_DATA, args.runs, args.teacher, args.reuse), indent=1))
    else:
        capture(FUSION_DATA, args.runs, args.teacher)


def main() -> None:
    """prepare | capture | train | route | report."""
    ap = study_parser(study(), __doc__ or "", "runs/bench-fusion-pretrained", "bench/results/fusion_pretrained",
                      PILOT_ARMS, commands=("route",))
    ap.add_argument("--reuse", type=Path, default=None,
                    help="prepare/capture: another study's data folder whose caches hold some of these documents")
    ap.add_argument("--design", choices=list(DESIGNS), default="test", help="report: " + "; ".join(
        f"{k}: {v}" for k, v in DESIGNS.items()))
    ap.add_argument("--fused", choices=list(FUSED_MODES), default=None, help="report --design test: the fused arm")
    ap.add_argument("--draws", type=int, default=2000, help="report: bootstrap draws over the test documents")
    args = ap.parse_args()
    if args.command == "route":
        if not args.seeds:
            raise SystemExit("route: give --seeds (the pilot's)")
        print(json.dumps(route(args.runs, args.seeds), indent=1))
    elif args.command == "prepare":
        run_command(study(), args, _capture)
        if (args.runs / "data" / "data.json").is_file():  # the word problems' split, for the record
            info = json.loads((args.runs / "data" / "data.json").read_text())
            _write_json(args.runs / "data" / "data.json",
                        {**info, "math_items": math_items(FUSION_DATA.recipe(args.runs))})
    elif not run_command(study(), args, _capture):
        report_out = report(args.runs, args.out, args.seeds, args.design, args.fused, args.draws)
        print(json.dumps(report_out["proof"] or report_out["proof_missing"], indent=1))


if __name__ == "__main__":
    main()
