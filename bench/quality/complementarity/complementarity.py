"""Complementarity benchmark: how much better than the best single teacher can a mix of three be?

Three real teachers with three tokenizer families (Gemma 3 270M, SmolLM2-135M,
Qwen2.5-Coder-0.5B) score the same documents of three domains (English LAMBADA passages,
Python source, Chinese reviews), captured by ``bench/quality/complementarity_capture.sh``
into ``runs/bench-complementarity/cache``. Each document is cut at the byte offsets where all
three tokenizations end a token; each teacher's log-prob of every span is the sum of its
gold-token log-probs inside it (``complementarity_math``). Rows:

* each teacher alone, and the best single teacher (chosen per column);
* ``oracle_document`` / ``oracle_span``: the best teacher per document / per span — upper
  bounds that look at the answer, not predictors;
* ``uniform_span``: equal weights in every span;
* ``bayes_document``: the Bayes mixture, weights = posterior from the spans already seen
  (uniform prior) — a proper sequential predictor;
* ``fixed_share_fitted``: the same with fixed share (can switch teacher mid-document), its
  rate chosen per domain on the data;
* ``fusion_bpb_softmax``: the trainer's per-document fusion weights
  ``softmax(-BPB_doc / T)`` (``avokit.losses.fusion``, T the trainer's default), from the
  document's own BPB as the trainer computes them on training documents;
* ``best_fixed_weights``: the best fixed per-domain weights on a 0.05 grid, fitted on the
  same documents (optimistic); ``fixed_weights_cv``: the same fitted on the other half of
  the domain's documents (two-fold cross-fitting; honest).

Span boundaries depend on the text, so span-level rows flatter the mix slightly; the
per-document rows (Bayes, oracle per document, teachers) are exact.

    .venv/bin/python -m bench.quality.complementarity.complementarity --resamples 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.provenance import Provenance
from bench.quality.complementarity.complementarity_io import (
    load_documents,
    machine_info,
    open_caches,
)
from bench.quality.complementarity.complementarity_math import (
    DocScore,
    score_spans,
    simplex_grid,
    span_logprobs,
)
from bench.quality.complementarity.complementarity_report import readme_row, render_markdown
from bench.quality.complementarity.complementarity_stats import (
    DomainTable,
    bootstrap_gains,
    fitted_choices,
    point_estimate,
    win_shares,
)
from bench.results_io import write_json

ROOT = Path(__file__).resolve().parents[3]
RECIPE = Path(__file__).with_suffix(".yaml")
TEACHERS = ["gemma3-270m", "smollm2-135m", "qwen2.5-coder-0.5b"]
ALPHAS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
GRID_STEP = 0.05


def fusion_weights_fn(temperature: float):
    """The trainer's ``bpb_softmax`` document weights as a numpy function of BPB [N]."""
    import torch

    from avokit.losses.fusion import document_weights

    def weights(bpb: np.ndarray) -> np.ndarray:
        w = document_weights(torch.as_tensor(bpb[None, :], dtype=torch.float64), "bpb_softmax", temperature)
        return w[0].numpy()

    return weights


def score_corpus(recipe_path: Path, teachers: list[str], temperature: float
                 ) -> tuple[dict[str, list[DocScore]], dict[str, dict[str, int]], dict[str, object]]:
    """Score every document all teachers cover; per domain scores, token counts, coverage."""
    from avokit.recipe import load_recipe

    recipe = load_recipe(str(recipe_path))
    docs = load_documents(recipe)
    readers, coverage = open_caches(recipe.run_dir / "cache", teachers)
    grid = simplex_grid(len(teachers), GRID_STEP)
    fuse = fusion_weights_fn(temperature)
    scores: dict[str, list[DocScore]] = {}
    tokens: dict[str, dict[str, int]] = {}
    skipped = 0
    for doc in docs:
        if not all(doc.doc_id in r for r in readers.values()):
            skipped += 1
            continue
        recs = [readers[t][doc.doc_id] for t in teachers]
        sp = span_logprobs([r.byte_ends for r in recs], [r.gold_logprob for r in recs])
        if sp.covered == 0:
            skipped += 1
            continue
        scores.setdefault(doc.domain, []).append(score_spans(sp, grid, ALPHAS, fuse))
        counts = tokens.setdefault(doc.domain, dict.fromkeys(teachers, 0))
        for t, r in zip(teachers, recs, strict=True):
            counts[t] += r.n_positions
    coverage["documents_in_corpus"] = len(docs)
    coverage["documents_not_in_every_cache"] = skipped
    return scores, tokens, coverage


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Score, aggregate and bootstrap; returns the JSON-ready result."""
    t0 = time.perf_counter()
    teachers = args.teachers
    scores, tokens, coverage = score_corpus(args.recipe, teachers, args.temperature)
    tables = {d: DomainTable.from_scores(s) for d, s in sorted(scores.items())}
    t_score = time.perf_counter() - t0
    grid = simplex_grid(len(teachers), GRID_STEP)
    bpb = point_estimate(tables, teachers)
    boot = bootstrap_gains(tables, teachers, args.resamples, args.seed)
    counts = {d: {"documents": int(t.bytes.size), "bytes": int(t.bytes.sum()),
                  "spans": int(t.n_spans.sum()), "bytes_per_span": float(t.bytes.sum() / t.n_spans.sum()),
                  "teacher_tokens": tokens[d]} for d, t in tables.items()}
    return {
        "benchmark": "complementarity",
        "teachers": teachers,
        "recipe": str(args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe),
        "settings": {"fusion_temperature": args.temperature, "grid_step": GRID_STEP, "alphas": ALPHAS,
                     "bootstrap_resamples": args.resamples, "bootstrap_seed": args.seed,
                     "span_unit": "bytes between boundaries common to all teachers"},
        "coverage": coverage,
        "counts": counts,
        "bpb": bpb,
        "gain_over_best_single": {row: {c: bpb["best_single"][c] - v for c, v in cols.items()}
                                  for row, cols in bpb.items()},
        "gain_interval_95": boot,
        "fitted": fitted_choices(tables, teachers, grid, ALPHAS),
        "wins": win_shares(tables, teachers),
        "machine": machine_info(args.recipe),
        "analysis_wall_s": {"scoring": round(t_score, 1), "total": round(time.perf_counter() - t0, 1)},
    }


def main() -> None:
    """Write ``bench/results/complementarity.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--teachers", nargs="+", default=TEACHERS, help="teacher caches to compare")
    ap.add_argument("--temperature", type=float, default=None,
                    help="bpb_softmax fusion temperature (default: the trainer's default)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    args.recipe = args.recipe.resolve()
    if args.temperature is None:
        from avokit.recipe.train import FusionConfig

        args.temperature = FusionConfig().temperature
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args)
    result["machine"]["python"] = platform.python_version()
    args.out.mkdir(parents=True, exist_ok=True)
    from avokit.recipe import load_recipe

    corpus = load_recipe(str(args.recipe)).run_dir / "corpus" / "manifest.json"
    write_json(args.out / "complementarity.json", result, Provenance.collect(dtype="float32", corpus=corpus))
    md = render_markdown(result)
    (args.out / "complementarity.md").write_text(md, encoding="utf-8")
    print(md)
    print("README row:", readme_row(result))


if __name__ == "__main__":
    main()
