"""How many student positions get a token-level target, and how much teacher mass lands on
the student's actual next token, with boundary targets vs byte-conditional dense targets.

For every training document of a run whose captures exist, each teacher's records are aligned
to the student's tokens exactly as the trainer does (``avokit.train.kd_data.doc_kd``) under
``train.loss.targets: boundary`` (common token boundaries, exact vocabulary map) and
``dense`` (every covered student position, candidates mapped to their longest student
prefix, see ``avokit.align.conditional``). Reported per teacher and domain:

* ``coverage``: share of student tokens with a token-level target;
* ``p_gold``: mean teacher mass on the student's real next token over the targeted positions
  (0 where the target gives it none; in boundary mode, OTHER never counts);
* ``p_gold_boundaries``: the same over common boundaries only, to separate the better mapping
  at boundaries (prefix buckets) from the added positions inside words.

    .venv/bin/python -m bench.quality.fusion_proof.target_coverage avokit/recipes/avocado-mini.yaml
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from avokit.recipe import load_recipe
from avokit.train.data import read_split
from avokit.train.run import ensure_student_tokenizer, teacher_sources
from bench.provenance import Provenance
from bench.results_io import write_json

RESULTS = Path(__file__).resolve().parents[2] / "results"


def _gold_mass(ids: np.ndarray, lps: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Teacher probability on each row's gold student id: float64 [m]."""
    probs = np.exp(lps.astype(np.float64))
    return np.where(ids == gold[:, None], probs, 0.0).sum(axis=1)


def coverage(recipe_path: str) -> dict[str, dict[str, dict[str, float]]]:
    """Per teacher, per domain (and ``all``): coverage and gold mass in both modes."""
    recipe = load_recipe(recipe_path)
    tokenizer = ensure_student_tokenizer(recipe)
    from avokit.align import byteify, tokenize_batch_with_offsets

    docs = read_split(recipe.run_dir, "train")
    s_docs = tokenize_batch_with_offsets(tokenizer, [d.text for d in docs], byteify(tokenizer))
    boundary = teacher_sources(recipe, tokenizer)
    dense = teacher_sources(recipe.model_copy(update={"train": recipe.train.model_copy(
        update={"loss": recipe.train.loss.model_copy(update={"targets": "dense"})})}), tokenizer)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for b_src, d_src in zip(boundary, dense):
        acc: dict[str, dict[str, float]] = {}
        for doc, s_doc in zip(docs, s_docs):
            b_kd, d_kd = b_src.doc(doc.doc_id, s_doc.byte_ends), d_src.doc(doc.doc_id, s_doc.byte_ends)
            if b_kd is None or d_kd is None or d_kd.dense is None:
                continue
            gold_ids = s_doc.ids.astype(np.int64)
            b_mass = _gold_mass(b_kd.topk_student_ids, b_kd.topk_logprobs, gold_ids[b_kd.first])
            d_mass = _gold_mass(d_kd.dense.ids, d_kd.dense.logprobs, gold_ids[d_kd.dense.pos])
            at_boundary = np.isin(d_kd.dense.pos, b_kd.first)
            for key in (doc.domain, "all"):
                a = acc.setdefault(key, dict.fromkeys(("tokens", "b_rows", "d_rows", "b_gold", "d_gold", "d_gold_at_b"), 0.0))
                a["tokens"] += s_doc.ids.size
                a["b_rows"] += b_kd.first.size
                a["d_rows"] += d_kd.dense.pos.size
                a["b_gold"] += b_mass.sum()
                a["d_gold"] += d_mass.sum()
                a["d_gold_at_b"] += d_mass[at_boundary].sum()
        out[b_src.name] = {dom: {
            "student_tokens": int(a["tokens"]),
            "coverage_boundary": a["b_rows"] / a["tokens"],
            "coverage_dense": a["d_rows"] / a["tokens"],
            "p_gold_boundary": a["b_gold"] / max(a["b_rows"], 1),
            "p_gold_dense": a["d_gold"] / max(a["d_rows"], 1),
            "p_gold_dense_at_boundaries": a["d_gold_at_b"] / max(a["b_rows"], 1),
        } for dom, a in acc.items()}
    return out


def to_markdown(res: dict, meta: dict) -> str:
    """Tables per teacher: rows = domains."""
    lines = ["# Token-level target coverage: boundary vs dense (byte-conditional) targets", "",
             f"Run `{meta['recipe']}`, training split, {meta['when']}, {meta['machine']}. "
             "coverage = share of student tokens with a token-level target; p_gold = mean teacher "
             "mass on the student's real next token over the targeted positions.", ""]
    for teacher, per in res.items():
        lines += [f"## {teacher}", "",
                  "| domain | student tokens | coverage boundary | coverage dense | p_gold boundary | "
                  "p_gold dense (at boundaries) | p_gold dense (all positions) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for dom, v in sorted(per.items(), key=lambda kv: (kv[0] == "all", kv[0])):
            lines.append(f"| {dom} | {v['student_tokens']} | {v['coverage_boundary']:.3f} | "
                         f"{v['coverage_dense']:.3f} | {v['p_gold_boundary']:.3f} | "
                         f"{v['p_gold_dense_at_boundaries']:.3f} | {v['p_gold_dense']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Measure and write bench/results/target_coverage.{json,md}."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    args = ap.parse_args()
    start = time.perf_counter()
    res = coverage(args.recipe)
    meta = {"recipe": args.recipe, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.processor() or platform.machine()}, load {Path('/proc/loadavg').read_text().split()[:3]}",
            "seconds": round(time.perf_counter() - start, 1)}
    RESULTS.mkdir(exist_ok=True)
    corpus = load_recipe(args.recipe).run_dir / "corpus" / "manifest.json"
    write_json(RESULTS / "target_coverage.json", {"meta": meta, "teachers": res},
               Provenance.collect(dtype="float32", corpus=corpus))
    (RESULTS / "target_coverage.md").write_text(to_markdown(res, meta))
    print(to_markdown(res, meta))


if __name__ == "__main__":
    main()
