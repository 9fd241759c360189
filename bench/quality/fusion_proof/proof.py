"""The fusion proof: do three teachers with different strengths make a better student than the
best one alone? (issue 15; statistics in proof_stats.py)

Data: the complementarity benchmark's three-domain corpus and its three teacher captures
(``bench/quality/complementarity/complementarity.yaml``; run its capture first, it is resumable). Only the
documents every teacher has captured are used, frozen once in ``RUNS/data`` so that every
variant and seed sees the same documents even while the capture goes on. The corpus's
held-out split is the test set; a hash-chosen share of its training documents (per domain) is
the validation set; the rest is the training set.

Variants (identical student, tokenizer, initial weights, data order and steps per seed):
``a_ce`` CE only; ``b_<teacher>`` KD from one teacher; ``d_fused`` the three teachers with
the new targets (byte-conditional dense targets with prefix buckets, debiased chunk term) and
span-level fusion; ablations take one new target away (``d_boundary``, ``d_prefix``,
``d_raw_chunk``) or change the fusion mode (``d_bpb`` per document, ``d_uniform`` equal);
``d_routed`` routes each domain to the teacher whose single-teacher student is best there on
validation (chosen by ``route`` after the ``b_*`` runs). Every run trains in
segments of ``--segment-steps`` at a constant learning rate after warmup, and after each
segment its student is scored on validation and test (BPB per domain, domain-balanced
overall); the checkpoint is chosen on validation and reported on test. One training run per
(variant, seed), scored in memory at each checkpoint.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.fusion_proof.proof prepare
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.fusion_proof.proof train --seeds 0 1 2 3 4 \\
        --variants a_ce b_gemma3-270m        # one process per variant list; resumable
    .venv/bin/python -m bench.quality.fusion_proof.proof route    # d_routed's routing, from validation only
    .venv/bin/python -m bench.quality.fusion_proof.proof weights  # how each fusion mode weighs the teachers
    .venv/bin/python -m bench.quality.fusion_proof.proof report   # writes --out .json / .md

The confirmation on fresh seeds (PREREGISTERED.md) trains into ``--runs runs/bench-proof-confirm``
and reports with ``--fused d_uniform --preregistered bench/quality/PREREGISTERED.md
--out bench/results/quality_confirm``.

Runs go to ``runs/bench-proof/<variant>/s<seed>/`` (each segment's scores in
``segments.json``), so several processes may train different variants at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from avokit.cache import CacheReader
from avokit.corpus import Document, load_split, read_documents, write_documents
from avokit.corpus.build import heldout_score
from avokit.evaluate.bpb import bpb_from_records, domain_bpb, score_bpb
from avokit.recipe import Recipe, load_recipe
from bench.provenance import Provenance, git_state
from bench.quality.complementarity.complementarity_io import snapshot_cache
from bench.quality.fusion_proof.proof_render import attach, render
from bench.quality.fusion_proof.proof_stats import (
    OVERALL,
    build_proof,
    chosen,
    chosen_test_bpb,
    paired_differences,
)
from bench.results_io import write_results

SOURCE = Path(__file__).parents[1] / "complementarity" / "complementarity.yaml"
TEACHERS = ["gemma3-270m", "smollm2-135m", "qwen2.5-coder-0.5b"]
# the new targets: byte-conditional dense targets (prefix buckets included) + debiased chunks
TARGETS = {"targets": "dense", "chunk_debias": True}
NEW = {"loss": TARGETS, "fusion": {"mode": "span_softmax"}}
# name -> (teachers, changes to the recipe's train section, what it tests)
VARIANTS: dict[str, tuple[list[str], dict[str, Any], str]] = {
    "a_ce": ([], {}, "CE only (the plain baseline)"),
    **{f"b_{t}": ([t], {"loss": TARGETS}, f"KD from {t} alone, new targets") for t in TEACHERS},
    "d_fused": (TEACHERS, NEW, "three teachers, new targets, span-level fusion"),
    # each new target taken away in turn (fusion stays span-level)
    "d_boundary": (TEACHERS, {"loss": {"chunk_debias": True}, "fusion": {"mode": "span_softmax"}},
                   "ablation: boundary targets, exact vocabulary map (no byte-conditional, no prefix buckets)"),
    "d_prefix": (TEACHERS, {"loss": {"chunk_debias": True, "vocab_map": "first_token"},
                            "fusion": {"mode": "span_softmax"}},
                 "ablation: boundary targets with prefix buckets (no byte-conditional targets)"),
    "d_raw_chunk": (TEACHERS, {"loss": {"targets": "dense"}, "fusion": {"mode": "span_softmax"}},
                    "ablation: chunk term not debiased"),
    # each fusion mode in place of span-level weights
    "d_bpb": (TEACHERS, {"loss": TARGETS}, "ablation: per-document fusion (bpb_softmax)"),
    "d_uniform": (TEACHERS, {"loss": TARGETS, "fusion": {"mode": "fixed"}}, "ablation: equal fixed teacher weights"),
    # each domain's documents to the teacher whose single-teacher student is best on that domain's
    # *validation* BPB (``route``; fusion.domain_weights), then span fusion among those named
    "d_routed": (TEACHERS, NEW, "three teachers, new targets, each domain routed to the teacher whose "
                 "single-teacher student is best there on validation"),
}
ROUTING = "routing.json"
SINGLES = [f"b_{t}" for t in TEACHERS]
STUDENT: dict[str, Any] = {"arch": "llama", "hidden_size": 256, "intermediate_size": 768, "num_layers": 4, "num_heads": 4,
           "num_kv_heads": 2, "tokenizer": {"kind": "train", "vocab_size": 4096}}


def _domains(docs: list[Document]) -> dict[str, int]:
    return {dom: sum(d.domain == dom for d in docs) for dom in sorted({d.domain for d in docs})}


def prepare(source: Recipe, data: Path, val_fraction: float) -> dict[str, Any]:
    """Freeze the documents every teacher has captured into ``data`` (corpus, cache snapshots,
    the student tokenizer). Refuses to overwrite: delete ``data`` (and every run trained on it)
    to take a larger snapshot."""
    if (data / "data.json").is_file():
        raise SystemExit(f"{data} exists: delete it and every run under {data.parent} to re-snapshot")
    shutil.rmtree(data, ignore_errors=True)
    coverage = {t: snapshot_cache(source.run_dir / "cache" / t, data / "cache" / t) for t in TEACHERS}
    covered = set.intersection(*(set(CacheReader(data / "cache" / t).doc_ids()) for t in TEACHERS))
    test = [d for d in load_split(source, "heldout") if d.doc_id in covered]
    pool = [d for d in load_split(source, "train") if d.doc_id in covered]
    val = [d for d in pool if heldout_score(d.doc_id, 1729) < val_fraction]
    val_ids = {d.doc_id for d in val}
    train = [d for d in pool if d.doc_id not in val_ids]
    for split, docs in (("train", train), ("validation", val), ("heldout", test)):
        if not docs:
            raise SystemExit(f"no {split} documents are captured by every teacher yet; capture more first")
        (data / "corpus").mkdir(parents=True, exist_ok=True)
        write_documents(docs, data / "corpus" / f"{split}.parquet")
    from avokit.student import train_student_tokenizer

    tok = train_student_tokenizer([d.text for d in train], STUDENT["tokenizer"]["vocab_size"], data / "tokenizer")
    tokens = {s: int(sum(len(tok(d.text)["input_ids"]) for d in docs))
              for s, docs in (("train", train), ("validation", val), ("test", test))}
    from avokit.recipe.student import StudentConfig
    from avokit.student import build_student

    params = sum(p.numel() for p in build_student(StudentConfig.model_validate(STUDENT), tok).parameters())
    info = {"source": str(source.run_dir), "coverage": coverage, "student_params": params, "docs": {"train": _domains(train),
            "validation": _domains(val), "test": _domains(test)}, "student_tokens": tokens,
            "val_fraction": val_fraction, "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (data / "data.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(target.resolve(), target_is_directory=True)


def variant_recipe(runs: Path, variant: str, seed: int, args: argparse.Namespace) -> Recipe:
    """The recipe of one (variant, seed) run, its run dir linked to the frozen data."""
    teachers, train_changes, _ = VARIANTS[variant]
    train = {"seed": seed, "steps": args.segment_steps, "batch_size": args.batch_size, "seq_len": 256,
             "lr": args.lr, "warmup_steps": args.warmup, "min_lr_ratio": 1.0,
             "checkpoint_every": args.segment_steps, "eval_every": 10**9, "log_every": 10}
    for key, val in train_changes.items():
        train[key] = {**train.get(key, {}), **val} if isinstance(val, dict) else val
    if variant == "d_routed":
        train["fusion"] = {**train["fusion"], "domain_weights": read_routing(runs)["domain_weights"]}
    data = {"name": f"s{seed}", "runs_dir": str((runs / variant).resolve()),
            "corpus": {"sources": [{"kind": "jsonl", "path": "unused.jsonl"}]},
            "teachers": [{"name": t, "kind": "registry"} for t in (teachers or TEACHERS[:1])],
            "student": STUDENT, "train": train}
    rec = Recipe.model_validate({**data, "base_dir": Path.cwd()})
    for part in ("corpus", "tokenizer"):
        _link(runs / "data" / part, rec.run_dir / part)
    for t in teachers:
        _link(runs / "data" / "cache" / t, rec.run_dir / "cache" / t)
    return rec


def route(runs: Path) -> dict[str, Any]:
    """Per domain, the single-teacher variant with the lowest mean *validation* BPB at its chosen
    checkpoint over the seeds every single finished (the test split plays no part); written
    to ``RUNS/routing.json`` once, so every d_routed seed trains with the same routing."""
    path = runs / ROUTING
    if path.is_file():
        return json.loads(path.read_text())
    settings = json.loads((runs / "settings.json").read_text())
    val: dict[str, dict[int, dict[str, float]]] = {}
    for variant in SINGLES:
        for seg_file in sorted((runs / variant).glob("s*/segments.json")):
            segments = json.loads(seg_file.read_text())
            if len(segments) >= settings["segments"]:
                val.setdefault(variant, {})[int(seg_file.parent.name[1:])] = dict(chosen(segments)["validation"])
    seeds = sorted(set.intersection(*(set(val.get(v, {})) for v in SINGLES)))
    if len(seeds) < 2:
        raise SystemExit("route: train the single-teacher variants (b_*) on at least 2 seeds first")
    domains = sorted(k for k in val[SINGLES[0]][seeds[0]] if k != OVERALL)
    means = {v: {dom: float(np.mean([val[v][s][dom] for s in seeds])) for dom in domains} for v in SINGLES}
    best = {dom: min(SINGLES, key=lambda v: means[v][dom]) for dom in domains}
    out = {"seeds": seeds, "validation_bpb": means, "best_single": best,
           "domain_weights": {dom: {best[dom][2:]: 1.0} for dom in domains}}
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def read_routing(runs: Path) -> dict[str, Any]:
    """The routing ``route`` chose; a clear error when it has not run."""
    path = runs / ROUTING
    if not path.is_file():
        raise SystemExit(f"{path} missing: run `proof.py route` (after the b_* variants) before d_routed")
    return json.loads(path.read_text())


def _split_texts(runs: Path, split: str) -> tuple[dict[str, str], dict[str, str]]:
    docs = read_documents(runs / "data" / "corpus" / f"{split}.parquet")
    return {d.doc_id: d.text for d in docs}, {d.doc_id: d.domain for d in docs}


def student_bpb(model: Any, tokenizer: Any, texts: dict[str, str], max_length: int = 256) -> Any:
    """A student in memory scored on ``texts`` (an avokit ``BpbResult``: per-document NLL;
    documents longer than ``max_length`` tokens in windows of it, as the backend scores them)."""
    from avokit.teachers.hf import HFTeacher
    from avokit.teachers.scoring import resolve_start_token_id

    scorer = HFTeacher(model, tokenizer, name="student", fingerprint="in-training",
                       start_token_id=resolve_start_token_id(tokenizer), max_length=max_length)
    return score_bpb(scorer, texts, batch_size=8, name="student")


def domain_scores(result: Any, texts: dict[str, str], domains: dict[str, str]) -> dict[str, float]:
    """BPB per domain of a ``BpbResult`` and their mean (``overall``: domain-balanced)."""
    out = {dom: v["bpb"] for dom, v in domain_bpb(result, texts, domains).items()}
    return {OVERALL: float(np.mean(list(out.values()))), **out}


def score(model: Any, tokenizer: Any, texts: dict[str, str], domains: dict[str, str],
          max_length: int = 256) -> dict[str, float]:
    """Test or validation BPB of a student in memory: per domain and domain-balanced overall."""
    return domain_scores(student_bpb(model, tokenizer, texts, max_length), texts, domains)


def _drop_unscored_checkpoints(ckpt_root: Path, last_scored: int) -> None:
    """A run killed between saving a checkpoint and scoring it resumes from the last scored
    one (training is deterministic, so the step is redone identically and then scored)."""
    for path in ckpt_root.glob("step-*"):
        if int(path.name.split("-")[1].split(".")[0]) > last_scored:
            shutil.rmtree(path, ignore_errors=True)


def train_variant(runs: Path, variant: str, seed: int, args: argparse.Namespace) -> None:
    """Train one (variant, seed), scoring the checkpoint after every segment; resumable."""
    from avokit.student import load_student_tokenizer
    from avokit.train import run_training

    rec = variant_recipe(runs, variant, seed, args)
    rec = rec.model_copy(update={"train": rec.train.model_copy(update={"steps": args.segments * args.segment_steps})})
    log_path = rec.run_dir / "segments.json"
    segments = json.loads(log_path.read_text()) if log_path.is_file() else []
    if len(segments) >= args.segments:
        return
    _drop_unscored_checkpoints(rec.run_dir / ("baseline" if variant == "a_ce" else "student") / "checkpoints",
                               segments[-1]["step"] if segments else 0)
    val, test = _split_texts(runs, "validation"), _split_texts(runs, "heldout")
    tokenizer = load_student_tokenizer(runs / "data" / "tokenizer")
    clock = [time.perf_counter()]
    commit = git_state()[0]  # per segment: a resumed run may continue on another commit

    def on_checkpoint(step: int, model: Any) -> None:
        wall = time.perf_counter() - clock[0]  # the first segment's includes the run's setup
        segments.append({"step": step, "train_wall_s": round(wall, 1), "validation": score(model, tokenizer, *val),
                         "test": score(model, tokenizer, *test), "load": os.getloadavg()[0], "commit": commit})
        log_path.write_text(json.dumps(segments, indent=1) + "\n")
        print(f"[proof] {variant} seed {seed} step {step}: val {segments[-1]['validation'][OVERALL]:.4f} "
              f"({wall:.0f} s)", flush=True)
        clock[0] = time.perf_counter()

    run_training(rec, baseline=variant == "a_ce", progress=False, on_checkpoint=on_checkpoint)


def teacher_test_bpb(runs: Path, teachers: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Each teacher's test BPB (per domain and domain-balanced) from its capture in
    ``runs/data/cache`` (``teachers``: these, default this study's three)."""
    texts, domains = _split_texts(runs, "heldout")
    out = {}
    for t in TEACHERS if teachers is None else teachers:
        reader = CacheReader(runs / "data" / "cache" / t)
        per = domain_bpb(bpb_from_records(t, [reader[d] for d in texts], texts, source="cache"), texts, domains)
        vals = {dom: v["bpb"] for dom, v in per.items()}
        out[t] = {OVERALL: float(np.mean(list(vals.values()))), **vals}
    return out


def fusion_diagnostics(runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """How each fusion mode weighs the teachers on the training split, per domain: the mean
    weight per student token, and the share of tokens where one teacher has >= 0.9 of it."""
    from avokit.corpus import load_split as corpus_split
    from avokit.student import load_student_tokenizer
    from avokit.teachers.scoring import resolve_start_token_id
    from avokit.train.data import pack_documents
    from avokit.train.run import fusion_weights, span_fusion_weights, teacher_sources

    rec = variant_recipe(runs, "d_fused", 0, args)
    tok = load_student_tokenizer(runs / "data" / "tokenizer")
    docs = corpus_split(rec, "train")
    packed = pack_documents(docs, tok, 256, tok.eos_token_id, start_id=resolve_start_token_id(tok))
    sources = teacher_sources(rec, tok)
    doc_w = fusion_weights(rec, packed, sources)
    span_w = span_fusion_weights(rec, packed, sources, doc_w)
    out: dict[str, Any] = {}
    for mode, per_doc in (("bpb_softmax", [np.repeat(doc_w[d][None], int(n), 0) for d, n in enumerate(packed.doc_len)]),
                          ("span_softmax", span_w)):
        for dom in sorted({d.domain for d in docs}):
            w = np.concatenate([per_doc[i] for i, d in enumerate(docs) if d.domain == dom])
            out.setdefault(mode, {})[dom] = {"mean": {s.name: float(w[:, t].mean()) for t, s in enumerate(sources)},
                                             "one_teacher_share": float((w.max(axis=1) >= 0.9).mean())}
    (runs / "fusion_weights.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def lock_settings(runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The training settings every run of ``runs`` shares (paired runs differ only by variant):
    recorded by the first ``train``; a later one with other settings is refused."""
    mine = {"segment_steps": args.segment_steps, "segments": args.segments, "batch_size": args.batch_size,
            "lr": args.lr, "warmup": args.warmup, "seq_len": 256}
    path = runs / "settings.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if diff:
            raise SystemExit(f"{path}: these runs were trained with other settings (saved, given): {diff}")
        return saved
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine, indent=1) + "\n")
    return mine


def report(runs: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Collect every finished segment, choose checkpoints on validation, write JSON + Markdown."""
    settings = json.loads((runs / "settings.json").read_text())
    results: dict[str, dict[int, Any]] = {}
    unfinished: list[str] = []  # a run still training would be chosen among fewer checkpoints
    for variant in VARIANTS:
        for seg_file in sorted((runs / variant).glob("s*/segments.json")):
            segments = json.loads(seg_file.read_text())
            if len(segments) < settings["segments"]:
                unfinished.append(f"{variant}/{seg_file.parent.name}")
                continue
            results.setdefault(variant, {})[int(seg_file.parent.name[1:])] = {"segments": segments}
    test = chosen_test_bpb(results)
    teachers = teacher_test_bpb(runs)
    result: dict[str, Any] = {
        "data": json.loads((runs / "data" / "data.json").read_text()),
        "student": STUDENT, "variants": {v: {"teachers": t, "train": c, "what": w} for v, (t, c, w) in VARIANTS.items()},
        "settings": settings, "teachers": teachers, "runs": results, "unfinished": unfinished,
        "fusion_weights": json.loads((runs / "fusion_weights.json").read_text())
        if (runs / "fusion_weights.json").is_file() else None,
        "chosen_test": test,
        "preregistration": str(args.preregistered) if args.preregistered else None,
    }
    data = result["data"]
    trained = settings["segment_steps"] * settings["segments"] * settings["batch_size"] * settings["seq_len"]
    result["paired"] = {ref: {v: paired_differences(test, v, ref) for v in VARIANTS if v != ref}
                        for ref in dict.fromkeys((args.fused, "a_ce"))}
    result["budget"] = {"tokens_per_run": trained, "epochs": trained / data["student_tokens"]["train"],
                        "train_tokens_per_param": data["student_tokens"]["train"] / data["student_params"]}
    singles = [v for v in SINGLES if test.get(v)]  # those trained here (a later test may leave one out)
    try:
        result["proof"] = build_proof(test, singles, args.fused, "a_ce", teachers)
    except ValueError as err:  # not enough paired seeds yet: say so instead of a proof
        result["proof"], result["proof_pending"] = None, str(err)
    # the multi-teacher variant a user would pick: lowest mean *validation* BPB over the seeds every
    # candidate finished (test plays no part in the choice), then the same test on its test BPB
    result["proof_selected"] = None
    cands = [v for v in VARIANTS if v.startswith("d_") and len(results.get(v, {})) >= 5]
    shared = sorted(set.intersection(*(set(results[v]) for v in cands))) if cands else []
    if len(cands) >= 2 and len(shared) >= 5:  # one candidate is no choice (the confirmation runs)
        val = {v: float(np.mean([chosen(results[v][s]["segments"])["validation"][OVERALL] for s in shared]))
               for v in cands}
        pick = min(val, key=lambda v: val[v])
        result["proof_selected"] = {**build_proof(test, singles, pick, "a_ce", teachers), "validation_bpb": val}
    # the same test for the domain-routed student (its routing was chosen on validation)
    try:
        result["proof_routed"] = {**build_proof(test, singles, "d_routed", "a_ce", teachers),
                                  "routing": read_routing(runs)}
    except (ValueError, SystemExit):
        result["proof_routed"] = None
    # segments written before commits were recorded (seeds 0-14 of 2026-12-02) say "unrecorded"
    training = {f"{v}/seed{s}": [g.get("commit", "unrecorded") for g in r["segments"]]
                for v, by in results.items() for s, r in by.items()}
    write_results(out, result, render(result), Provenance.collect(
        dtype="float32", corpus=runs / "data" / "corpus" / "manifest.json", training=training))
    return result


def main() -> None:
    """prepare | train | route | weights | report | attach."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["prepare", "train", "route", "weights", "report", "attach"])
    ap.add_argument("--later", type=Path, nargs="*", default=[],
                    help="attach: later tests' report JSONs whose verdicts the main report records")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-proof"))
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--segment-steps", type=int, default=25)
    ap.add_argument("--segments", type=int, default=4)  # 4 x 25 x 8 x 256 tokens: < 2 epochs
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("bench/results/quality"))
    ap.add_argument("--preregistered", type=Path, default=None,
                    help="the committed plan this report tests (named at the top of the report)")
    ap.add_argument("--fused", default="d_fused", choices=[v for v in VARIANTS if v.startswith("d_")],
                    help="the pre-registered multi-teacher variant the `proof` object tests (report)")
    args = ap.parse_args()
    if args.command == "prepare":
        print(json.dumps(prepare(load_recipe(args.source), args.runs / "data", args.val_fraction), indent=1))
    elif args.command == "route":
        print(json.dumps(route(args.runs), indent=1))
    elif args.command == "attach":
        print(json.dumps(attach(args.out, args.later), indent=1))
    elif args.command == "weights":
        print(json.dumps(fusion_diagnostics(args.runs, args), indent=1))
    elif args.command == "train":
        lock_settings(args.runs, args)
        for seed in args.seeds:  # seed-major: paired results accumulate seed by seed
            for variant in args.variants:
                train_variant(args.runs, variant, seed, args)
    else:
        res = report(args.runs, args.out, args)
        print(json.dumps(res["proof"] or res["proof_pending"], indent=1))


if __name__ == "__main__":
    main()
