"""What could fusing the teachers give at best? BPB of each teacher and of their mixtures.

Two teachers' tokenizations of a document share common boundaries (bytes where both end a
token). Between two of them, each teacher's probability of the chunk's bytes given the same
prefix is ``exp(sum of its gold log-probs over the chunk)`` (from the capture cache), so a
mixture ``w * p_a + (1 - w) * p_b`` per chunk is a proper sequential predictor whose bits per
byte are comparable with the teachers'. If no mixture beats the better teacher, fusing cannot
give the student a better target than that teacher alone; if it does, the margin is what
multi-teacher distillation can add over the best single teacher.

Rows:
  * each teacher alone;
  * ``mix 50/50``: equal weights in every chunk;
  * ``mix fusion``: per-document weights ``softmax(-BPB_doc / T)`` as the trainer's
    ``bpb_softmax`` fusion computes them (from each document's own BPB, as the trainer
    does on its training documents);
  * ``oracle per document``: the better teacher on each document (a diagnostic bound that
    looks at the answer; not a predictor).

    .venv/bin/python -m bench.quality.ablations.ensemble runs/bench-quality/quality-base --split train --temperature 0.1 1
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avokit.align import align
from avokit.cache import CacheReader
from avokit.records import TeacherRecords

LN2 = math.log(2.0)


@dataclass(frozen=True)
class DocChunks:
    """Two teachers' chunk log-probs over the bytes both cover: float64 [m] each, and bytes."""

    logp_a: np.ndarray
    logp_b: np.ndarray
    n_bytes: int


def chunk_logprobs(a: TeacherRecords, b: TeacherRecords) -> DocChunks:
    """Both teachers' log-probability of every common-boundary chunk of one document.

    Cut at the last byte where both end a token, so a teacher that covers only a prefix
    (its ``max_length``) is compared on exactly the bytes both scored.
    """
    a_ends = np.asarray(a.byte_ends, dtype=np.int64)
    b_ends = np.asarray(b.byte_ends, dtype=np.int64)
    common = np.intersect1d(a_ends, b_ends)
    if common.size == 0:
        return DocChunks(np.zeros(0), np.zeros(0), 0)
    cut = int(common[-1])
    n_a = int(np.searchsorted(a_ends, cut, side="right"))
    n_b = int(np.searchsorted(b_ends, cut, side="right"))
    al = align(a_ends[:n_a], b_ends[:n_b])
    lp_a = al.teacher_chunk_sum(np.asarray(a.gold_logprob[:n_a], dtype=np.float64))
    lp_b = al.student_chunk_sum(np.asarray(b.gold_logprob[:n_b], dtype=np.float64))
    return DocChunks(lp_a, lp_b, cut)


def mixture_nll(chunks: DocChunks, w_a: float) -> float:
    """NLL in nats of the per-chunk mixture ``w_a * p_a + (1 - w_a) * p_b``."""
    if w_a <= 0.0:
        return float(-chunks.logp_b.sum())
    if w_a >= 1.0:
        return float(-chunks.logp_a.sum())
    mixed = np.logaddexp(math.log(w_a) + chunks.logp_a, math.log1p(-w_a) + chunks.logp_b)
    return float(-mixed.sum())


def ensemble_bpb(run_dir: Path, teachers: tuple[str, str], temperature: float,
                 doc_ids: list[str]) -> dict[str, float | int]:
    """Held-out BPB of two teachers and of their mixtures over ``doc_ids`` (see module doc)."""
    ra = CacheReader(run_dir / "cache" / teachers[0])
    rb = CacheReader(run_dir / "cache" / teachers[1])
    totals = {"a": 0.0, "b": 0.0, "mix_50_50": 0.0, "mix_fusion": 0.0, "oracle": 0.0}
    n_bytes = 0
    a_wins = 0
    docs = 0
    for doc_id in doc_ids:
        if doc_id not in ra or doc_id not in rb:
            continue
        ch = chunk_logprobs(ra[doc_id], rb[doc_id])
        if ch.n_bytes == 0:
            continue
        nll_a, nll_b = float(-ch.logp_a.sum()), float(-ch.logp_b.sum())
        bpb_a, bpb_b = nll_a / LN2 / ch.n_bytes, nll_b / LN2 / ch.n_bytes
        # softmax(-bpb / T) over the two teachers, written for two outcomes
        w_a = 1.0 / (1.0 + math.exp(min(700.0, (bpb_a - bpb_b) / temperature)))
        totals["a"] += nll_a
        totals["b"] += nll_b
        totals["mix_50_50"] += mixture_nll(ch, 0.5)
        totals["mix_fusion"] += mixture_nll(ch, w_a)
        totals["oracle"] += min(nll_a, nll_b)
        a_wins += int(nll_a < nll_b)
        n_bytes += ch.n_bytes
        docs += 1
    if n_bytes == 0:
        raise ValueError(f"{run_dir}: none of the {len(doc_ids)} documents is in both teachers' caches")
    out: dict[str, float | int] = {f"bpb:{k}": v / LN2 / n_bytes for k, v in totals.items()}
    out.update({"documents": docs, "bytes": n_bytes, "share_docs_a_better": a_wins / docs})
    return out


def render(result: dict, teachers: tuple[str, str], temperature: float) -> str:
    """The result as a Markdown table."""
    names = {"a": teachers[0], "b": teachers[1], "mix_50_50": "mix 50/50 per chunk",
             "mix_fusion": f"mix, per-document bpb_softmax weights (T={temperature})",
             "oracle": "oracle: better teacher per document (diagnostic bound)"}
    lines = ["| predictor | BPB |", "| --- | ---: |"]
    lines += [f"| {label} | {result[f'bpb:{key}']:.4f} |" for key, label in names.items()]
    lines += ["", f"{result['documents']} documents, {result['bytes']:,} bytes both teachers "
              f"cover; {teachers[0]} is the better teacher on {result['share_docs_a_better']:.1%} of them."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Print the teachers' and mixtures' BPB on one split of a run directory."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--teachers", nargs=2, default=["gemma3-270m", "smollm2-135m"])
    ap.add_argument("--temperature", type=float, nargs="+", default=[0.1])
    ap.add_argument("--split", choices=["train", "heldout"], default="train",
                    help="documents to score (choose fusion settings on train, report held-out)")
    args = ap.parse_args()
    import pyarrow.parquet as pq

    ids = [str(x) for x in pq.read_table(args.run_dir / "corpus" / f"{args.split}.parquet", columns=["doc_id"])
           .column("doc_id").to_pylist()]
    teachers = (args.teachers[0], args.teachers[1])
    for temperature in args.temperature:
        result = ensemble_bpb(args.run_dir, teachers, temperature, ids)
        print(json.dumps(result, indent=2))
        print(render(result, teachers, temperature))


if __name__ == "__main__":
    main()
