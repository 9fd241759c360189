"""Beyond teacher forcing: offline KD vs sequence-level KD vs on-policy KD (issue 16, item 4).

From the same starting checkpoint per seed (the fusion proof's CE-only student after its 100
steps, ``runs/bench-proof/a_ce/s<seed>/baseline``) and the same number of optimizer steps of
the same batch size, three continuations with the proof's three teachers, new targets and
span-level fusion:

* ``offline``: KD on the frozen corpus (the proof's ``d_fused`` setting);
* ``seq``: the same on the corpus plus text the teachers wrote (``avokit generate`` on prompts
  that are prefixes of training documents, the same number per domain; captured by every
  teacher into a copy of the frozen caches);
* ``on``: on-policy KD mixed with offline (``train.on_policy``, ``mix`` of the micro-batches
  written by the student, reverse KL), teachers scoring live.

Each finished run (and each starting checkpoint, ``start``) is evaluated once with the three
teachers loaded: for prefixes of held-out test documents (the same number per domain) the
student writes a continuation at temperature 1 with one sampling seed for every run, and each
teacher's bits per byte of that continuation are measured (the teacher-judged NLL, and its
mean over the teachers); the domain-balanced test (and validation) BPB; distinct-2/3 of the
generations. ``report`` pairs the variants by seed and writes the ``verdict``.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.onpolicy.onpolicy prepare
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.onpolicy.onpolicy train --variants on --seeds 0 1 2
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.onpolicy.onpolicy evaluate [--wait]
    .venv/bin/python -m bench.quality.onpolicy.onpolicy report   # bench/results/onpolicy.{json,md}

Every command is resumable: a finished generation, capture, run or evaluation is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


from avokit.corpus import read_documents
from avokit.corpus.build import heldout_score
from avokit.recipe import Recipe
from bench.provenance import Provenance, git_state
from bench.quality.fusion_proof.proof import NEW, STUDENT, TEACHERS, _link, score
from bench.quality.onpolicy.onpolicy_metrics import verdict
from bench.quality.onpolicy.onpolicy_report import render
from bench.results_io import write_results

VARIANTS = {"offline": "KD on the corpus (cached targets)",
            "seq": "KD on the corpus + teacher-written text",
            "on": "on-policy KD mixed with offline (the student writes, the teachers score live)"}
DONE = "training_done.json"


def _base(runs: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    return {"name": name, "runs_dir": str(runs.resolve()), "corpus": {"sources": [{"kind": "jsonl", "path": "unused.jsonl"}]},
            "teachers": [{"name": t, "kind": "registry"} for t in TEACHERS], "student": STUDENT,
            "generate": {"prompts": [{"kind": "jsonl", "path": str((runs / "seqdata" / "prompts.jsonl").resolve())}],
                         "max_new_tokens": args.gen_tokens, "temperature": 1.0, "seed": 0, "min_chars": 32}}


def seq_recipe(runs: Path, args: argparse.Namespace) -> Recipe:
    """The recipe whose run dir holds the teacher-written text and the extended caches."""
    rec = Recipe.model_validate({**_base(runs, "seqdata", args), "base_dir": Path.cwd()})
    for part in ("corpus", "tokenizer"):
        _link(args.proof / "data" / part, rec.run_dir / part)
    return rec


def run_recipe(runs: Path, variant: str, seed: int, args: argparse.Namespace) -> Recipe:
    """The recipe of one (variant, seed) run, linked to the frozen data (``seq``: to seqdata)."""
    train = {"seed": seed, "steps": args.steps, "batch_size": args.batch_size, "seq_len": 256, "lr": args.lr,
             "warmup_steps": args.warmup, "min_lr_ratio": 1.0, "checkpoint_every": args.steps,
             "eval_every": 10**9, "log_every": 5, **NEW}
    if variant == "on":
        train["on_policy"] = {"mix": args.mix, "prompt_tokens": 32, "max_new_tokens": 64, "divergence": "reverse_kl"}
    data = _base(runs / variant, f"s{seed}", args)
    if variant != "seq":
        del data["generate"]
    start = args.proof / "a_ce" / f"s{seed}" / "baseline"
    # the start's own tokenizer is the frozen data's (linked below); a `train` tokenizer
    # beside a pretrained student is refused
    data["student"] = {**{k: v for k, v in STUDENT.items() if k != "tokenizer"}, "pretrained": str(start.resolve())}
    rec = Recipe.model_validate({**data, "train": train, "base_dir": Path.cwd()})
    source = runs / "seqdata" if variant == "seq" else args.proof / "data"
    for part in ("corpus", "tokenizer"):
        _link(args.proof / "data" / part, rec.run_dir / part)
    for t in TEACHERS:
        _link(source / "cache" / t, rec.run_dir / "cache" / t)
    if variant == "seq":
        _link(runs / "seqdata" / "generated", rec.run_dir / "generated")
    return rec


def stratified(docs: list[Any], per_domain: int, salt: int) -> list[Any]:
    """``per_domain`` documents of each domain, chosen by a seeded hash of their ids."""
    out = []
    for dom in sorted({d.domain for d in docs}):
        mine = sorted((d for d in docs if d.domain == dom), key=lambda d: heldout_score(d.doc_id, salt))
        out += mine[:per_domain]
    return out


def write_prompts(path: Path, train: list[Any], per_domain: int, prefix_chars: int) -> None:
    """The teacher-written text's prompts (written once): the first ``prefix_chars`` characters
    of ``per_domain`` training documents of each domain (:func:`stratified`, salt 11)."""
    from avokit.generate.prompts import corpus_prefix

    if path.is_file():
        return
    rows = [{"id": d.doc_id, "prompt": corpus_prefix(d.text, prefix_chars), "domain": d.domain}
            for d in stratified(train, per_domain, 11)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def extend_caches(frozen_root: Path, out_root: Path, teachers: Sequence[str], generated: list[Any],
                  load: Callable[[str], Any]) -> dict[str, float]:
    """Each teacher's cache in ``out_root/<teacher>``: the shards of ``frozen_root/<teacher>``
    (linked) plus its live records of the ``generated`` documents (``load(name)`` loads it);
    a finished one is skipped. Returns each capture's wall seconds (0 when skipped)."""
    from avokit.cache import CacheReader, ShardWriter, write_manifest
    from avokit.train.on_policy import live_records

    walls = {}
    for t in teachers:
        folder = out_root / t
        if (folder / "manifest.json").is_file():
            walls[t] = 0.0
            continue
        t0 = time.perf_counter()
        frozen = CacheReader(frozen_root / t)
        spec = frozen.spec
        folder.mkdir(parents=True, exist_ok=True)
        for shard in frozen.manifest.shards:
            if not (folder / shard.file).exists():
                (folder / shard.file).symlink_to((frozen.path / shard.file).resolve())
        if not (folder / "tokenizer").exists():
            (folder / "tokenizer").symlink_to((frozen.path / "tokenizer").resolve(), target_is_directory=True)
        teacher = load(t)
        try:
            records = live_records(teacher, [d.text for d in generated], [d.doc_id for d in generated], spec.top_k,
                                   inside_top_k=spec.inside_top_k)
        finally:
            teacher.close()
        writer = ShardWriter(folder / "train-generated.arrow", spec, "train")
        for d in generated:
            if d.doc_id in records:  # one this teacher cannot spell back guides with weight 0
                writer.add(records[d.doc_id])
        info = writer.close()
        write_manifest(folder, spec, frozen.manifest.plan_hash, [*frozen.manifest.shards, info])
        walls[t] = round(time.perf_counter() - t0, 1)
        print(f"[onpolicy] {t}: {info.n_docs} of {len(generated)} generated documents captured", flush=True)
    return walls


def prepare(runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Teacher-written text from prefixes of training documents, captured by every teacher."""
    from avokit.generate import run_generate
    from avokit.teachers.load import load_teacher

    rec = seq_recipe(runs, args)
    write_prompts(rec.run_dir / "prompts.jsonl", read_documents(args.proof / "data" / "corpus" / "train.parquet"),
                  args.gen_prompts, 200)
    out = run_generate(rec, build=False)
    generated = read_documents(out / "documents.parquet")
    extend_caches(args.proof / "data" / "cache", rec.run_dir / "cache", TEACHERS, generated,
                  lambda t: load_teacher(rec.teacher(t), rec.base_dir, rec.capture))
    manifest = json.loads((out / "manifest.json").read_text())
    return {"generated_documents": len(generated), "manifest": manifest}


def train(runs: Path, variant: str, seed: int, args: argparse.Namespace) -> None:
    """Continue the seed's starting checkpoint for ``--steps`` steps as ``variant``; resumable."""
    from avokit.train import run_training

    rec = run_recipe(runs, variant, seed, args)
    if (rec.run_dir / "student" / DONE).is_file():
        return
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    commit = git_state()[0]
    run_training(rec, progress=False)
    (rec.run_dir / "train_wall.json").write_text(json.dumps({
        "wall_s": round(time.perf_counter() - t0, 1), "load_start": load0, "load_end": os.getloadavg()[0],
        "commit": commit}) + "\n")
    print(f"[onpolicy] {variant} seed {seed}: trained in {time.perf_counter() - t0:.0f} s", flush=True)


def _model_dirs(runs: Path, args: argparse.Namespace) -> list[tuple[str, int, Path, Path]]:
    """(variant, seed, model dir, eval file) of every finished run and starting checkpoint."""
    out = []
    for seed in args.seeds:
        start = args.proof / "a_ce" / f"s{seed}" / "baseline"
        if (start / DONE).is_file():
            out.append(("start", seed, start, runs / "start" / f"s{seed}" / "eval.json"))
        for variant in VARIANTS:
            run = runs / variant / f"s{seed}"
            if (run / "student" / DONE).is_file():
                out.append((variant, seed, run / "student", run / "eval.json"))
    return out


def evaluate(runs: Path, args: argparse.Namespace) -> int:
    """Evaluate every finished run not yet evaluated (teachers loaded once); returns how many."""
    from transformers import AutoModelForCausalLM

    from avokit.student import load_student_tokenizer
    from avokit.teachers.load import load_teacher
    from bench.quality.onpolicy.onpolicy_eval import eval_prompts, evaluate_model

    todo = [m for m in _model_dirs(runs, args) if not m[3].is_file()]
    if not todo and not args.wait:
        return 0
    rec = seq_recipe(runs, args)
    tok = load_student_tokenizer(args.proof / "data" / "tokenizer")
    test_docs = read_documents(args.proof / "data" / "corpus" / "heldout.parquet")
    prompts = eval_prompts(stratified(test_docs, args.eval_prompts, 23), tok, 32)
    texts = {split: ({d.doc_id: d.text for d in docs}, {d.doc_id: d.domain for d in docs})
             for split, docs in (("test", test_docs),
                                 ("validation", read_documents(args.proof / "data" / "corpus" / "validation.parquet")))}
    teachers = {t: load_teacher(rec.teacher(t), rec.base_dir, rec.capture) for t in TEACHERS}
    expected = len(args.seeds) * (len(VARIANTS) + 1)
    done = 0
    try:
        while True:  # with --wait: keep the teachers loaded and take each run as it finishes
            todo = [m for m in _model_dirs(runs, args) if not m[3].is_file()]
            if not todo:
                if not args.wait or sum(m[3].is_file() for m in _model_dirs(runs, args)) >= expected:
                    break
                time.sleep(30)
                continue
            variant, seed, model_dir, path = todo[0]
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32").eval()
            t0 = time.perf_counter()
            result = evaluate_model(model, tok, prompts, teachers, new_tokens=64, sample_seed=args.sample_seed)
            result["test_bpb"] = score(model, tok, *texts["test"])
            result["validation_bpb"] = score(model, tok, *texts["validation"])
            result["eval_wall_s"] = round(time.perf_counter() - t0, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")
            done += 1
            print(f"[onpolicy] evaluated {variant} seed {seed}: teacher NLL {result['teacher_nll']:.4f} "
                  f"test BPB {result['test_bpb']['overall']:.4f} distinct-2 {result['distinct2']:.3f}", flush=True)
    finally:
        for t in teachers.values():
            t.close()
    return done


def report(runs: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Pair the evaluations by seed; write ``out``.json / .md with the ``verdict``."""
    evals: dict[str, dict[int, Any]] = {}
    for variant, seed, _, path in _model_dirs(runs, args):
        if path.is_file():
            evals.setdefault(variant, {})[seed] = json.loads(path.read_text())
    flat = {v: {s: {"teacher_nll": e["teacher_nll"], "bpb": e["test_bpb"]["overall"], "distinct2": e["distinct2"]}
                for s, e in runs_.items()} for v, runs_ in evals.items()}
    walls = {v: {s: json.loads((runs / v / f"s{s}" / "train_wall.json").read_text())
                 for s in evals.get(v, {}) if (runs / v / f"s{s}" / "train_wall.json").is_file()} for v in VARIANTS}
    seqdata = runs / "seqdata" / "generated" / "manifest.json"
    result = {"verdict": verdict(flat), "variants": VARIANTS, "evals": evals, "train_wall": walls,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "command"},
              "generated": json.loads(seqdata.read_text()) if seqdata.is_file() else None,
              "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    # one process trains a run to the end: its commit is in train_wall.json (none before 12-07)
    training = {f"{v}/seed{s}": [w.get("commit", "unrecorded")] for v, by in walls.items() for s, w in by.items()}
    write_results(out, result, render(result), Provenance.collect(
        dtype="float32", corpus=args.proof / "data" / "corpus" / "manifest.json", training=training))
    return result


def main() -> None:
    """prepare | train | evaluate | report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["prepare", "train", "evaluate", "report"])
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-onpolicy"))
    ap.add_argument("--proof", type=Path, default=Path("runs/bench-proof"), help="the fusion proof's runs (data, starts)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mix", type=float, default=0.5)
    ap.add_argument("--gen-prompts", type=int, default=8, help="teacher-written prompts per domain")
    ap.add_argument("--gen-tokens", type=int, default=96)
    ap.add_argument("--eval-prompts", type=int, default=8, help="held-out prompts per domain")
    ap.add_argument("--wait", action="store_true", help="evaluate: wait for every run of --seeds to finish")
    ap.add_argument("--sample-seed", type=int, default=1234)
    ap.add_argument("--out", type=Path, default=Path("bench/results/onpolicy"))
    args = ap.parse_args()
    if args.command == "prepare":
        print(json.dumps(prepare(args.runs, args)["manifest"], indent=1))
    elif args.command == "train":
        for seed in args.seeds:
            for variant in args.variants:
                train(args.runs, variant, seed, args)
    elif args.command == "evaluate":
        print(f"[onpolicy] evaluated {evaluate(args.runs, args)} models")
    else:
        print(json.dumps(report(args.runs, args.out, args)["verdict"], indent=1))


if __name__ == "__main__":
    main()
