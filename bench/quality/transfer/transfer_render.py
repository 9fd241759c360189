"""bench/results/transfer.md from the transfer benchmark's JSON (bench/quality/transfer/transfer.py)."""

from __future__ import annotations

from typing import Any

from bench.quality.fusion_proof.proof_render import _ci, mean_rows
from bench.quality.fusion_proof.proof_stats import OVERALL, chosen


def _cell(x: dict[str, Any] | None) -> str:
    """``mean [lo, hi]``; a mean alone below 2 seeds; ``-`` without seeds."""
    if not x or x.get("mean") is None:
        return "-"
    return _ci(x) if x.get("ci95") else f"{x['mean']:+.4f} (no interval)"


def render(result: dict[str, Any]) -> str:
    """Markdown: the verdict, test BPB per arm and domain, paired differences, curves, runs."""
    v, settings, budget = result["verdict"], result["settings"], result["budget"]
    test = result["chosen_test"]
    domains = sorted({k for by in test.values() for r in by.values() for k in r if k != OVERALL}
                     | {k for k in result["teachers_test_bpb"].get(v["holds_teacher"], {}) if k != OVERALL})
    cols = [OVERALL, *domains]
    head = "Pilot, not a result" if v["label"] != "result" else "Result"
    lines = [f"# Transfer: does cross-tokenizer KD beat CE for a pretrained student? ({head.lower()})", "",
             f"Student {v['student']} from its pretrained weights and tokenizer, trained in "
             f"{'/'.join(result['records']['dtype']) or 'float32'} on {'/'.join(result['records']['cpu']) or '-'}. "
             f"Settings: {settings}; each run trains on {budget['tokens_per_run']:,} tokens = "
             f"{budget['epochs']:.2f} epochs of the training split ({budget['train_tokens']:,} student tokens). "
             f"Corpus (split by source text): documents {result['corpus']['documents']}, source texts per domain "
             f"{result['corpus']['domain_texts']}.", ""]
    if v["label"] != "result":
        lines += [f"**{head}**: {v['seeds']} paired seed(s); the claim needs at least 3, so `holds` is false.", ""]
    lines += [f"**Verdict ({v['seeds']} seeds): {'holds' if v['holds'] else 'does NOT hold'}** — {v['why']}.", "",
              "KD minus CE in test BPB at the checkpoints chosen on validation (mean [95% t interval]; "
              "negative = KD better):", "",
              "| teacher | arm | seeds | " + " | ".join(cols) + " | teacher better than start on |",
              "| --- | --- | ---: |" + " ---: |" * len(cols) + " --- |"]
    for t, p in v["per_teacher"].items():
        better = p["teacher_better_than_start"]
        lines.append(f"| {t} | {p['arm']} | {p['seeds']} | {_cell(p['kd_minus_ce'])} | "
                     + " | ".join(_cell(p["per_domain"].get(d)) for d in domains)
                     + f" | {'-' if better is None else ', '.join(better) or 'none'} |")
    eq = v.get("equal_steps")
    if eq:
        lines += ["", f"The same at equal steps (step {eq['step']} for both arms, no checkpoint chosen):", "",
                  "| teacher | arm | seeds | " + " | ".join(cols) + " |", "| --- | --- | ---: |" + " ---: |" * len(cols)]
        lines += [f"| {t} | {p['arm']} | {p['seeds']} | {_cell(p['kd_minus_ce'])} | "
                  + " | ".join(_cell(p["per_domain"].get(d)) for d in domains) + " |" for t, p in eq["per_teacher"].items()]
    u = v["uld_minus_avokit"]
    source = f"; from [{u['source'][:-5]}.md]({u['source'][:-5]}.md), whose runs trained it" if u.get("source") else ""
    lines += ["", f"ULD minus avokit's alignment ({u['arm']} minus {u['reference']}, teacher {u['teacher']}, "
                  f"{u['seeds']} seeds{source}): overall {_cell(u)}; "
                  + ", ".join(f"{d} {_cell(x)}" for d, x in u["per_domain"].items()) + ".",
              "", f"Crossing price ([transfer_crossing.md](transfer_crossing.md), issue 31 item 3a): {v['crossing_price_note']}.", ""]
    lines += ["Test BPB at the checkpoint chosen on validation, mean over seeds:", "",
              "| model | " + " | ".join(cols) + " | seeds | what |", "| --- |" + " ---: |" * (len(cols) + 1) + " --- |"]
    lines += mean_rows(test, cols, result["arms"])
    for t, vals in result["teachers_test_bpb"].items():
        dtype = ((result.get("teacher_caches") or {}).get(t) or {}).get("compute_dtype", "?")
        lines.append(f"| teacher {t} | " + " | ".join(f"{vals.get(c, float('nan')):.4f}" for c in cols) +
                     f" | - | its own log-probs from the capture cache ({dtype}) |")
    return "\n".join(lines + _paired(result, cols) + _curves(result) + _runs(result)) + "\n"


def _paired(result: dict[str, Any], cols: list[str]) -> list[str]:
    rows = [f"| {a} minus ce | " + " | ".join(_ci(d.get(c)) for c in cols) + f" | {len(d['seeds'])} |"
            for a, d in result["paired_vs_ce"].items() if d]
    if not rows:
        return []
    return ["", "Every arm minus CE, paired by seed (test BPB; negative = better than CE):", "",
            "| comparison | " + " | ".join(cols) + " | seeds |", "| --- |" + " ---: |" * (len(cols) + 1), *rows]


def _curves(result: dict[str, Any]) -> list[str]:
    """Mean validation / test BPB (domain-balanced) after each segment: have the curves flattened?"""
    curves = {a: c for a, c in result["curves"].items() if a != "start"}
    steps = sorted({s for c in curves.values() for s in c})
    if not steps:
        return []
    lines = ["", "Curves: mean validation / test BPB (domain-balanced) after each segment, over the seeds scored:",
             "", "| arm | " + " | ".join(str(s) for s in steps) + " |", "| --- |" + " ---: |" * len(steps)]
    for arm, c in curves.items():
        lines.append(f"| {arm} | " + " | ".join(
            f"{c[s]['validation']:.4f} / {c[s]['test']:.4f}" if s in c else "-" for s in steps) + " |")
    return lines


def _runs(result: dict[str, Any]) -> list[str]:
    """Each run: chosen step, its BPB, wall times, the commit and load it ran with."""
    lines = ["", "Every finished run: checkpoint chosen on validation (step), validation and test BPB "
             "(domain-balanced), training and scoring wall time, load, commit:", "",
             "| arm | seed | step | validation | test | train s | score s | load | commit |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for arm, by in result["runs"].items():
        for seed, run in sorted(by.items()):
            c, segs = chosen(run["segments"]), run["segments"]
            commits = sorted({p["commit"][:10] for p in (run["run"] or {}).get("processes", [])})
            train_s = sum(s["train_wall_s"] for s in segs)
            score_s = sum(s.get("score_wall_s", 0) for s in segs)
            lines.append(f"| {arm} | {seed} | {c['step']} | {c['validation'][OVERALL]:.4f} | "
                         f"{c['test'][OVERALL]:.4f} | {train_s:.0f} | {score_s:.0f} | "
                         f"{segs[-1].get('load', 0):.1f} | {', '.join(commits) or '-'} |")
    rec = result["records"]
    lines += ["", f"Records: commits {rec['commit']}; corpus manifest sha256 {rec['corpus_manifest_sha256']} "
                  f"(now {result['corpus_manifest_sha256_now']}); CPU {rec['cpu']}; dtype {rec['dtype']}."]
    if len(rec["corpus_manifest_sha256"]) > 1 or any(h != result["corpus_manifest_sha256_now"]
                                                     for h in rec["corpus_manifest_sha256"]):
        lines.append("**Warning: runs were trained on different corpora (manifest hashes differ).**")
    if result.get("unfinished"):
        lines += ["", f"Still training (not counted): {', '.join(result['unfinished'])}."]
    return lines
