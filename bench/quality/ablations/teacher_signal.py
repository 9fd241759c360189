"""What does each teacher's KD signal give the student? Statistics of the targets the trainer builds.

For the first ``--rows`` packed training rows of a run, each teacher's targets are built
exactly as the trainer builds them (``avokit.train.kd_data.build_teacher_batch``) and
summarised per teacher:

* ``boundaries_per_token``: share of student target positions that are common boundaries
  (where the token-level KD term applies);
* ``topk_mass`` / ``mapped_mass``: teacher probability in its cached top-k, and the part of
  it that maps to student tokens (the rest lands in the OTHER bucket);
* ``p_student_gold``: teacher mass on the student's actual next token at the boundary
  (0 when unmapped) — how often the teacher's mapped buckets point at what follows;
* ``top1_is_student_gold``: the teacher's top mapped bucket is the student's next token;
* ``bucket_entropy_bits``: entropy of the teacher's bucket distribution (mapped + OTHER),
  the information a soft target carries beyond the one-hot label;
* ``top1_prob`` vs ``top1_acc`` (teacher's own tokens): confidence against accuracy, i.e.
  calibration, from the cache records;
* ``chunk_bits_per_byte``: the teacher's chunk log-likelihoods as bits per byte.

    .venv/bin/python -m bench.quality.ablations.teacher_signal --runs runs/bench-quality --docs 3000 --rows 200
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from avokit.recipe import Recipe
from avokit.teachers.scoring import resolve_start_token_id
from avokit.train.data import pack_documents, read_split
from avokit.train.kd_data import build_teacher_batch
from avokit.train.run import ensure_student_tokenizer, teacher_sources
from bench.quality.ablations.run import base_recipe


def teacher_signal(recipe: Recipe, n_rows: int) -> dict[str, dict[str, float]]:
    """Per-teacher summary of the KD targets of the first ``n_rows`` training rows."""
    tokenizer = ensure_student_tokenizer(recipe)
    start = resolve_start_token_id(tokenizer)
    packed = pack_documents(read_split(recipe.run_dir, "train"), tokenizer, recipe.train.seq_len,
                            tokenizer.eos_token_id, start_id=start)
    rows = np.arange(min(n_rows, packed.n_rows), dtype=np.int64)
    _, targets = packed.row_tokens(rows)
    n_targets = int((~packed.is_sep[rows[:, None] * packed.seq_len + 1 + np.arange(packed.seq_len)]).sum())
    out: dict[str, dict[str, float]] = {}
    for source in teacher_sources(recipe, tokenizer):
        b = build_teacher_batch(packed, rows, source, lambda d: 1.0)
        probs = np.exp(b.topk_logprobs.astype(np.float64))
        mapped = b.topk_student_ids >= 0
        gold = targets[b.b_idx, b.s_pos][:, None]
        on_gold = (b.topk_student_ids == gold) & mapped
        mapped_mass = (probs * mapped).sum(1)
        other = np.clip(1.0 - mapped_mass, 1e-12, 1.0)
        # bucket distribution: mapped entries merged by student id, plus OTHER
        ent = []
        top1_gold = []
        for ids, p, o, g in zip(b.topk_student_ids, probs, other, gold[:, 0], strict=True):
            buckets: dict[int, float] = {}
            for i, q in zip(ids.tolist(), p.tolist(), strict=True):
                if i >= 0:
                    buckets[i] = buckets.get(i, 0.0) + q
            mass = np.array([*buckets.values(), o])
            mass = mass / mass.sum()
            ent.append(float(-(mass * np.log2(np.clip(mass, 1e-300, 1.0))).sum()))
            top1_gold.append(bool(buckets) and max(buckets, key=lambda k: buckets[k]) == int(g)
                             and max(buckets.values()) > o)
        recs = [source.records[packed.doc_ids[d]] for d in range(min(len(packed.doc_ids), 400))]
        top1_p = np.concatenate([np.exp(r.topk_logprobs[:, 0]) for r in recs])
        top1_acc = _top1_acc(recs)
        chunk_bytes = _chunk_bytes(packed, rows, source)
        out[source.name] = {
            "boundaries_per_token": b.b_idx.shape[0] / max(n_targets, 1),
            "topk_mass": float(probs.sum(1).mean()),
            "mapped_mass": float(mapped_mass.mean()),
            "p_student_gold": float((probs * on_gold).sum(1).mean()),
            "top1_is_student_gold": float(np.mean(top1_gold)),
            "bucket_entropy_bits": float(np.mean(ent)),
            "top1_prob": float(top1_p.mean()),
            "top1_acc": float(top1_acc.mean()),
            "chunk_bits_per_byte": float(-b.chunk_teacher_logprob.astype(np.float64).sum()
                                         / (math.log(2.0) * chunk_bytes)),
        }
    return out


def _top1_acc(recs: list) -> np.ndarray:
    """Per position: the teacher's top-1 id is the token that actually comes next.

    ``topk_ids[i]`` predicts ``token_ids[i]`` (records store the prediction *for* each token)."""
    return np.concatenate([r.topk_ids[:, 0] == r.token_ids for r in recs])


def _chunk_bytes(packed, rows: np.ndarray, source) -> int:
    """Bytes covered by the chunks of these rows (from the memoised per-row arrays)."""
    total = 0
    for row in rows.tolist():
        kd = source.row_memo[row]
        ct = kd.chunk_of_target
        lo = row * packed.seq_len + 1
        tok_bytes = packed.token_bytes[lo : lo + packed.seq_len]
        total += int(tok_bytes[ct >= 0].sum())
    return total


def main() -> None:
    """Print the per-teacher statistics as JSON and a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-quality"))
    ap.add_argument("--docs", type=int, default=3000, help="as given to run.py (names the same corpus)")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--vocab-map", choices=["exact", "first_token"], default="exact")
    args = ap.parse_args()
    recipe = base_recipe(args.runs.resolve(), args.docs, steps=1, items=1)
    data = recipe.model_dump(mode="json", exclude={"base_dir"})
    data["train"]["loss"]["vocab_map"] = args.vocab_map
    recipe = Recipe.model_validate({**data, "base_dir": recipe.base_dir})
    result = teacher_signal(recipe, args.rows)
    print(json.dumps(result, indent=2))
    keys = list(next(iter(result.values())))
    print("| teacher | " + " | ".join(keys) + " |")
    print("| --- |" + " ---: |" * len(keys))
    for name, row in result.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
