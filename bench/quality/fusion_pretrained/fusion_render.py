"""bench/results/fusion_pretrained.md from the fusion study's JSON (bench/quality/fusion_pretrained/fusion.py)."""

from __future__ import annotations

from typing import Any

from bench.quality.fusion_proof.proof_render import mean_rows
from bench.quality.fusion_proof.proof_stats import OVERALL
from bench.quality.transfer.transfer_render import _curves, _runs


def _cell(mean: float | None, ci: list[float] | None) -> str:
    """``mean [lo, hi]``; ``-`` without a number."""
    if mean is None:
        return "-"
    return f"{mean:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else f"{mean:+.4f}"


def _proof(p: dict[str, Any]) -> list[str]:
    """The headline: verdict, the two comparisons with both intervals, the per-domain rows."""
    o, ce = p["fused_minus_best_single"], p["fused_minus_ce"]
    lines = [f"**Proof ({p['seeds']} seeds {p['seed_ids']}, {p['label']}): {'holds' if p['holds'] else 'does NOT hold'}**"
             f" — {p['why']}.", "",
             f"Fused arm `{p['fused_arm']}` (mode {p['fused_mode']}); best single-teacher arm `{p['best_single']}` "
             f"({p['best_single_rule']}; validation BPB "
             + ", ".join(f"{a} {v:.4f}" for a, v in p["best_single_validation_bpb"].items()) + ").", "",
             "Test BPB differences (negative = fused better). The verdict's interval is the wider of the seeds' "
             "paired t interval and the bootstrap over test documents:", "",
             "| comparison | mean | verdict's 95% interval | t over seeds | bootstrap over test documents | used |",
             "| --- | ---: | --- | --- | --- | --- |"]
    for name, c in (("fused minus best single", o), ("fused minus CE", ce)):
        lines.append(f"| {name} | {c['mean']:+.4f} | {_cell(c['mean'], c['ci95'])} | {_cell(c['mean'], c['t_ci95'])} "
                     f"| {_cell(c['mean'], c['bootstrap_ci95'])} | {c['interval']} |")
    for dom, d in p["per_domain"].items():
        lines.append(f"| {dom}: fused minus {d['best_single']} | {d['diff_mean']:+.4f} | "
                     f"{_cell(d['diff_mean'], d['diff_ci95'])} | {_cell(d['diff_mean'], d['t_ci95'])} | "
                     f"{_cell(d['diff_mean'], d['bootstrap_ci95'])} | {d['interval']} |")
    closure = ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in p["gap_closure"].items())
    return lines + ["", f"Gap closure (CE minus fused over CE minus the best teacher, test): {closure}."]


def render(result: dict[str, Any]) -> str:
    """Markdown: the proof (or why there is none), the pilot's choice, test BPB per arm and
    domain with the start and teacher rows, curves and every run."""
    test, settings = result["chosen_test"], result["settings"]
    domains = sorted({k for by in test.values() for r in by.values() for k in r if k != OVERALL}
                     | {k for t in result["teachers_test_bpb"].values() for k in t if k != OVERALL})
    cols = [OVERALL, *domains]
    rec = result["records"]
    lines = ["# Fusion into a pretrained student: two teachers against the best one alone", "",
             f"Student SmolLM2-135M from its pretrained weights and tokenizer, trained in "
             f"{'/'.join(rec['dtype']) or 'float32'} on {'/'.join(rec['cpu']) or '-'}; teachers "
             f"{', '.join(result['teachers_test_bpb'])}. Settings: {settings}. Corpus (split by source text): "
             f"documents {result['corpus']['documents']}, source texts per domain {result['corpus']['domain_texts']}. "
             f"Design: {result['design']}.", ""]
    if result.get("math_items"):
        lines += ["GSM8K test items in this corpus, by split (no validation or test item is trained on): "
                  + "; ".join(f"{s} {v}" for s, v in result["math_items"].items()) + ".", ""]
    lines += _proof(result["proof"]) if result["proof"] else [f"No proof yet: {result['proof_missing']}."]
    choice = result.get("fused_choice")
    if choice:
        lines += ["", f"Pilot: fused arm chosen on validation (seeds {choice['seeds']}): `{choice['chosen']}`; mean "
                      "validation BPB " + ", ".join(f"{a} {v:.4f}" for a, v in choice["validation_bpb"].items()) + "."]
        plan = choice.get("planning")
        if plan:
            lines += ["", f"For the pre-registration: sd of the pilot's paired differences (fused minus best single, "
                          f"test) {plan['sd_of_paired_differences']}; seeds needed for a 0.02 BPB half-width "
                          f"{plan['seeds_needed_for_0.02']}; the bootstrap's half-width over test documents "
                          f"{plan['bootstrap_half_width']:.4f} (seeds do not reduce it)."]
    lines += ["", "Test BPB at the checkpoint chosen on validation, mean over seeds (start and teacher rows included):",
              "", "| model | " + " | ".join(cols) + " | seeds | what |", "| --- |" + " ---: |" * (len(cols) + 1) + " --- |"]
    lines += mean_rows(test, cols, result["arms"])
    for t, vals in result["teachers_test_bpb"].items():
        dtype = ((result.get("teacher_caches") or {}).get(t) or {}).get("compute_dtype", "?")
        lines.append(f"| teacher {t} | " + " | ".join(f"{vals.get(c, float('nan')):.4f}" for c in cols) +
                     f" | - | its own log-probs from the capture cache ({dtype}) |")
    return "\n".join(lines + _curves(result) + _runs(result)) + "\n"
