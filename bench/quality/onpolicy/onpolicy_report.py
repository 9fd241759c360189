"""Markdown of the on-policy comparison (bench/results/onpolicy.md) from its JSON."""

from __future__ import annotations

from typing import Any

import numpy as np

ORDER = ["start", "offline", "seq", "on"]


def _ci(d: dict[str, Any] | None, digits: int = 4) -> str:
    if d is None:
        return "(fewer than 2 paired seeds)"
    lo, hi = d["ci95"]
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] ({len(d['seeds'])} seeds)"


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def render(res: dict[str, Any]) -> str:
    """The report: verdict, per-variant means, per-teacher and per-domain judged NLL."""
    v, s, evals = res["verdict"], res["settings"], res["evals"]
    lines = ["# Offline vs sequence-level vs on-policy distillation (three teachers)", "",
             f"{res['created']}. Start: the fusion proof's CE-only student (`a_ce`, 100 steps) of each seed; "
             f"then {s['steps']} optimizer steps x {s['batch_size']} sequences (offline rows of 256 tokens; on-policy "
             f"micro-batches: 32 prompt tokens + up to 64 sampled, mix {s['mix']}), constant LR {s['lr']} after "
             f"{s['warmup']} warmup steps, the proof's three teachers with its new targets (dense targets as corrected "
             f"after the proof: OTHER keeps the teacher's unseen tail) and span fusion. Equal compute means equal "
             f"optimizer steps of equal batch size; an on-policy step costs more wall time (train wall s below). "
             f"Evaluation: {s['eval_prompts']} held-out test prompts per domain (32 student tokens), 64 new tokens "
             f"at temperature 1, sampling seed {s['sample_seed']} for every run; each teacher's bits per byte of the "
             f"continuation; test BPB domain-balanced. The final checkpoint of each run is evaluated (equal steps).",
             "", "## Verdict", "",
             f"On-policy beats offline on teacher-judged NLL with BPB and distinct-2 not worse: **{v['holds']}** "
             f"({v['seeds']} paired seeds).", "",
             "| paired difference (minus offline) | mean [95% CI] |", "| --- | --- |"]
    for key in ("onpolicy_minus_offline_teacher_nll", "onpolicy_minus_offline_bpb", "onpolicy_minus_offline_distinct2",
                "seq_minus_offline_teacher_nll", "seq_minus_offline_bpb", "seq_minus_offline_distinct2"):
        lines.append(f"| {key} | {_ci(v.get(key))} |")
    teachers = sorted({t for runs in evals.values() for e in runs.values() for t in e["teacher_bpb"]})
    lines += ["", "## Per variant (mean ± sd over seeds)", "",
              "| variant | seeds | teacher NLL (bits/byte) | " + " | ".join(teachers)
              + " | test BPB | distinct-2 | distinct-3 | new tokens | train wall s |",
              "| --- | ---: | ---: | " + " | ".join("---:" for _ in teachers) + " | ---: | ---: | ---: | ---: | ---: |"]
    for variant in ORDER:
        runs = evals.get(variant, {})
        if not runs:
            continue
        es = list(runs.values())
        walls = [w["wall_s"] for w in res["train_wall"].get(variant, {}).values()]
        wall = f"{np.mean(walls):.0f}" if walls else "-"
        lines.append(f"| {variant} | {len(es)} | {_mean_sd([e['teacher_nll'] for e in es])} | "
                     + " | ".join(_mean_sd([e['teacher_bpb'][t]['pooled'] for e in es]) for t in teachers)
                     + f" | {_mean_sd([e['test_bpb']['overall'] for e in es])} | {_mean_sd([e['distinct2'] for e in es])}"
                     f" | {_mean_sd([e['distinct3'] for e in es])} | {np.mean([e['mean_new_tokens'] for e in es]):.1f}"
                     f" | {wall} |")
    domains = sorted({d for runs in evals.values() for e in runs.values() for d in e["test_bpb"] if d != "overall"})
    lines += ["", "## Teacher-judged NLL per domain (mean over teachers and seeds)", "",
              "| variant | " + " | ".join(domains) + " |", "| --- | " + " | ".join("---:" for _ in domains) + " |"]
    for variant in ORDER:
        es = list(evals.get(variant, {}).values())
        if es:
            lines.append(f"| {variant} | " + " | ".join(
                f"{np.mean([np.mean([e['teacher_bpb'][t].get(d, np.nan) for t in teachers]) for e in es]):.4f}"
                for d in domains) + " |")
    gen = res.get("generated")
    if gen:
        kept = ", ".join(f"{k} {t['kept']}/{t['samples']}" for k, t in gen["teachers"].items())
        lines += ["", f"Teacher-written text for `seq`: {gen['documents']} documents kept ({kept}); "
                  f"domains {gen['domains']}."]
    lines.append("")
    return "\n".join(lines)
