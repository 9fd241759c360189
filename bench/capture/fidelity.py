"""bf16 fidelity of each real teacher's capture records against float32 (issue 39, item 2).

Per teacher and corpus: the same documents scored through the teacher's own scoring code
(``HFTeacher.score``, exactly what capture stores) with the model in float32, then cast in
place to bf16 and scored again; :func:`avokit.teachers.fidelity.compare_records` gives top-1
agreement, top-k overlap, float32's top-1 inside bf16's top-5, mean |Δ| of the gold and kept
log-probs, KL over the kept ids and each teacher's BPB in both. The full-vocabulary
KL(float32 || bf16) is measured on the first ``--kl-docs`` documents' first ``--kl-tokens``
positions (dense logits; a [tokens, 262k] float32 tensor is ~0.27 GB for Gemma).

Corpora: the main job's (built-in recipe avocado-mini, every document) and a domain-balanced
slice of the complementarity corpus (bench/quality/complementarity/complementarity.yaml, ``--comp-docs`` per
domain). Writes bench/results/bf16_fidelity.{json,md}; one process per teacher with
``--teachers NAME --out-json PATH``, then ``--merge`` the parts.

    .venv/bin/python -m bench.capture.fidelity --teachers smollm2-135m --out-json /tmp/f-smol.json
    .venv/bin/python -m bench.capture.fidelity --merge /tmp/f-*.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avokit.corpus import Document, build_corpus, load_split
from avokit.evaluate.run import balanced_subset, cpu_model
from avokit.precision import cpu_bf16_report
from avokit.recipe import Recipe, load_recipe
from avokit.teachers import HFTeacher, load_teacher
from avokit.teachers.fidelity import (
    MAX_BPB_REL_DIFF,
    MAX_MEAN_KL,
    MIN_TOP1_IN_TOP5,
    compare_records,
    full_kl,
)
from bench.provenance import Provenance
from bench.results_io import write_json

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def corpora(scratch: Path, comp_docs: int) -> dict[str, tuple[Recipe, list[Document]]]:
    """The two corpora, each with the recipe whose teachers score it."""
    main = load_recipe("avocado-mini").model_copy(update={"runs_dir": scratch / "main"})
    build_corpus(main)
    main_docs = load_split(main, "train") + load_split(main, "heldout")
    comp = load_recipe(ROOT / "bench" / "quality" / "complementarity.yaml")
    comp = comp.model_copy(update={"runs_dir": scratch / "comp"})
    build_corpus(comp)
    every = load_split(comp, "train") + load_split(comp, "heldout")
    n_domains = len({d.domain for d in every})
    return {"avocado-mini": (main, main_docs),
            "complementarity": (comp, balanced_subset(every, comp_docs * n_domains))}


@torch.inference_mode()
def dense_logits(teacher: HFTeacher, docs: list[Document], tokens: int) -> list[np.ndarray]:
    """float32 logits ``[n, V]`` of each document's first ``tokens`` positions, from the start
    token, as the model computes them in its current dtype."""
    out = []
    for toks in teacher.tokenize([d.text for d in docs]):
        ids = torch.tensor([[teacher.start_token_id, *toks.ids[: tokens - 1]]])
        out.append(teacher.model(input_ids=ids, use_cache=False).logits[0].float().numpy())
    return out


def bench_teacher(name: str, sets: dict[str, tuple[Recipe, list[Document]]], kl_docs: int,
                  kl_tokens: int) -> list[dict]:
    """One row per corpus for teacher ``name``."""
    rows = []
    for corpus, (recipe, docs) in sets.items():
        config = recipe.teacher(name).model_copy(update={"dtype": "float32"})
        teacher = load_teacher(config, recipe.base_dir, recipe.capture)
        assert isinstance(teacher, HFTeacher)
        texts, ids = [d.text for d in docs], [d.doc_id for d in docs]
        t0 = time.perf_counter()
        ref = teacher.score(texts, ids, recipe.capture.top_k)
        s32 = time.perf_counter() - t0
        ref_logits = dense_logits(teacher, docs[:kl_docs], kl_tokens)
        teacher.to_dtype("bfloat16")
        t0 = time.perf_counter()
        test = teacher.score(texts, ids, recipe.capture.top_k)
        s16 = time.perf_counter() - t0
        kl = np.concatenate([full_kl(a, b) for a, b in zip(ref_logits, dense_logits(teacher, docs[:kl_docs], kl_tokens))])
        teacher.close()
        fid = compare_records(ref, test, [len(t.encode("utf-8")) for t in texts])
        domains = sorted({d.domain for d in docs})
        per_domain = {}
        for dom in domains:
            pick = [i for i, d in enumerate(docs) if d.domain == dom]
            per_domain[dom] = compare_records([ref[i] for i in pick], [test[i] for i in pick],
                                              [len(texts[i].encode("utf-8")) for i in pick]).model_dump()
        rows.append({"teacher": name, "corpus": corpus, **fid.model_dump(), "failures": fid.failures(),
                     "passes": not fid.failures(), "full_kl_positions": int(kl.size),
                     "full_kl_mean": float(kl.mean()), "full_kl_max": float(kl.max()),
                     "float32_seconds": round(s32, 1), "bfloat16_seconds": round(s16, 1),
                     "per_domain": per_domain, "load_average_end": [round(x, 2) for x in os.getloadavg()]})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_domain"}), flush=True)
    return rows


def machine() -> dict:
    """CPU model, its bf16 support, torch and load."""
    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), **cpu_bf16_report(),
            "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def write_md(result: dict, path: Path) -> None:
    """The Markdown table of ``result``."""
    m = result["machine"]
    lines = [
        "# bf16 fidelity of the teachers' capture records", "",
        f"Machine: {m['cpu']}, {m['nproc']} cores, torch {m['torch']} ({m['torch_threads']} threads "
        f"per process), torch CPU capability {m['torch_cpu_capability']}, native bf16: "
        f"{m['native_bf16']} ({m['bf16_reason']}); commit {m['commit'][:10]}; load average at start "
        f"{m['load_average_start']}.", "",
        "Same documents, the teacher's own scoring code (what capture stores), float32 against the "
        "same model cast to bf16. Limits (issue 39): |ΔBPB| <= "
        f"{MAX_BPB_REL_DIFF:.1%}, mean KL <= {MAX_MEAN_KL} nats per position, float32's top-1 in "
        f"bf16's top-5 at >= {MIN_TOP1_IN_TOP5:.1%} of positions. KL kept: over the ids both top-32 "
        "keep plus one rest outcome (what the cache holds; never above the full KL); full KL: over "
        "the whole vocabulary on the first positions of the first documents (count in the table).", "",
        "| teacher | corpus | docs / positions | top-1 agree | top-32 overlap | f32 top-1 in bf16 top-5 "
        "| mean abs Δ gold / kept (nats) | KL kept mean | full KL mean / max (positions) | BPB f32 → bf16 (Δ) "
        "| passes | s f32 / bf16 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['teacher']} | {r['corpus']} | {r['docs']} / {r['positions']} | {r['top1_agreement']:.4f} | "
            f"{r['topk_overlap']:.4f} | {r['ref_top1_in_test_top5']:.4f} | {r['gold_mean_abs_diff']:.4f} / "
            f"{r['kept_mean_abs_diff']:.4f} | {r['kl_kept_mean']:.5f} | {r['full_kl_mean']:.5f} / "
            f"{r['full_kl_max']:.4f} ({r['full_kl_positions']}) | {r['bpb_ref']:.4f} → {r['bpb_test']:.4f} "
            f"({r['bpb_rel_diff']:+.3%}) | {'yes' if r['passes'] else 'NO: ' + '; '.join(r['failures'])} | "
            f"{r['float32_seconds']} / {r['bfloat16_seconds']} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    """Measure (``--teachers``) or merge (``--merge``) and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--comp-docs", type=int, default=8, help="complementarity documents per domain")
    parser.add_argument("--kl-docs", type=int, default=2)
    parser.add_argument("--kl-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out-json", type=Path, default=None, help="write this part here (no Markdown)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None)
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(p.read_text(encoding="utf-8")) for p in args.merge]
        result = {"machine": parts[0]["machine"], "settings": parts[0]["settings"],
                  "rows": [r for p in parts for r in p["rows"]], "parts": [p["machine"] for p in parts]}
        result["all_pass"] = all(r["passes"] for r in result["rows"])
        write_json(RESULTS / "bf16_fidelity.json", result, Provenance.collect(dtype="float32,bfloat16"))
        write_md(result, RESULTS / "bf16_fidelity.md")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"machine": machine(), "settings": {"comp_docs_per_domain": args.comp_docs, "kl_docs": args.kl_docs,
                                                 "kl_tokens": args.kl_tokens}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="avokit-fidelity-") as scratch:
        sets = corpora(Path(scratch), args.comp_docs)
        for name in args.teachers:
            result["rows"] += bench_teacher(name, sets, args.kl_docs, args.kl_tokens)
    out = args.out_json or RESULTS / "bf16_fidelity.json"
    write_json(out, result, Provenance.collect(dtype="float32,bfloat16"))
    if args.out_json is None:
        write_md(result, RESULTS / "bf16_fidelity.md")


if __name__ == "__main__":
    main()
