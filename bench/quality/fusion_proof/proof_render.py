"""bench/results/quality.md from the proof's JSON (bench/quality/fusion_proof/proof.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.provenance import Provenance
from bench.quality.fusion_proof.proof_stats import OVERALL, chosen
from bench.results_io import write_results


def mean_rows(test: dict[str, dict[int, dict[str, float]]], cols: list[str], described: dict[str, dict]) -> list[str]:
    """One Markdown row per variant (or arm) that has runs: each column's mean over its seeds,
    the seed count and its ``what`` from ``described``."""
    lines = []
    for name, runs in test.items():
        if runs:
            means = [sum(r[c] for r in runs.values()) / len(runs) for c in cols]
            lines.append(f"| {name} | " + " | ".join(f"{m:.4f}" for m in means) +
                         f" | {len(runs)} | {described[name]['what']} |")
    return lines

def _ci(x: dict[str, Any] | None, mean: str = "mean", ci: str = "ci95") -> str:
    if not x:
        return "-"
    lo, hi = x[ci]
    return f"{x[mean]:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def render(result: dict[str, Any]) -> str:
    """Markdown: data, the proof verdict, test BPB per variant and domain, every run."""
    data, proof = result["data"], result.get("proof")
    test = result["chosen_test"]
    domains = sorted({k for runs in test.values() for r in runs.values() for k in r if k != OVERALL})
    lines = ["# Fusion proof: three teachers against the best single teacher", "",
             f"Data (frozen snapshot of the complementarity captures, {data['created']}): documents "
             f"{data['docs']}; student tokens {data['student_tokens']}. Student {result['student']}, "
             f"{data['student_params']:,} parameters. Settings: {result['settings']}; each run trains on "
             f"{result['budget']['tokens_per_run']:,} tokens = {result['budget']['epochs']:.2f} epochs of the "
             f"training split ({result['budget']['train_tokens_per_param']:.3f} training tokens per parameter).", ""]
    if result.get("preregistration"):
        lines += [f"Pre-registered: the hypothesis, seeds, variants and decision rule are fixed in "
                  f"`{result['preregistration']}`, committed before any of these runs was trained.", ""]
    if proof:
        fused = proof["fused"]
        lines += _verdict(proof, f"the pre-registered multi-teacher student ({fused}: "
                                 f"{result['variants'][fused]['what']})")
    else:
        lines += [f"No verdict yet: {result.get('proof_pending')}", ""]
    lines += _later(result.get("later_tests") or [])
    selected = result.get("proof_selected")
    if selected:
        val = ", ".join(f"{v} {b:.4f}" for v, b in sorted(selected["validation_bpb"].items(), key=lambda x: x[1]))
        lines += _verdict(selected, f"the multi-teacher variant chosen on validation ({selected['fused']}; mean "
                                    f"validation BPB {val})")
    routed = result.get("proof_routed")
    if routed:
        chosen_on = ", ".join(f"{dom} -> {v}" for dom, v in routed["routing"]["best_single"].items())
        lines += _verdict(routed, f"routed (d_routed: each domain to the teacher whose single-teacher student is "
                                  f"best there on validation: {chosen_on})")
    cols = [OVERALL, *domains]
    lines += ["Test BPB at the checkpoint chosen on validation, mean over seeds (n seeds):", "",
              "| variant | " + " | ".join(cols) + " | seeds | what |", "| --- |" + " ---: |" * (len(cols) + 1) + " --- |"]
    lines += mean_rows(test, cols, result["variants"])
    for t, vals in result["teachers"].items():
        lines.append(f"| teacher {t} | " + " | ".join(f"{vals.get(c, float('nan')):.4f}" for c in cols) + " | - | |")
    lines += _comparisons(result, cols) + _weights(result) + _runs(result)
    return "\n".join(lines) + "\n"


def _later(tests: list[dict[str, Any]]) -> list[str]:
    """Later tests of a multi-teacher student on fresh seeds (their own reports), one line each."""
    if not tests:
        return []
    lines = ["Later tests on fresh seeds (each its own report; the test split of these seeds played no "
             "part in any choice):", ""]
    for t in tests:
        domains = [f"{d} {p['diff_mean']:+.4f}" for d, p in t["per_domain"].items()]
        ce = t.get("fused_minus_ce")
        lines.append(f"- [{t['file']}]({t['file']}), seeds {t['seed_ids']}"
                     f"{', pre-registered in `' + t['preregistration'] + '`' if t.get('preregistration') else ''}: "
                     f"{t['fused']} minus best single ({t['best_single']}) {_ci(t['fused_minus_best_single'])}"
                     f"{f', minus CE {_ci(ce)}' if ce else ''}; per domain {', '.join(domains)}; "
                     f"**{'holds' if t['holds'] else 'does NOT hold'}**.")
    return lines + [""]


def _verdict(proof: dict[str, Any], what: str) -> list[str]:
    """The verdict line and per-domain table of one multi-teacher student against the best single."""
    lines = [f"**Verdict over {proof['seeds']} paired seeds, {what}: minus best single "
             f"({proof['best_single']}) = {_ci(proof['fused_minus_best_single'])} BPB "
             f"(domain-balanced test); {'holds' if proof['holds'] else 'does NOT hold'}.**", "",
             "| domain | best single | minus best single [95% CI] | gap closure |",
             "| --- | --- | ---: | ---: |"]
    gc = proof["gap_closure"]
    for dom, p in proof["per_domain"].items():
        g = gc.get(dom)
        lines.append(f"| {dom} | {p['best_single']} | {_ci(p, 'diff_mean', 'diff_ci95')} | "
                     f"{'-' if g is None else f'{g:.3f}'} |")
    g = gc.get(OVERALL)
    return lines + [f"| overall (domain-balanced) | {proof['best_single']} | {_ci(proof['fused_minus_best_single'])} | "
                    f"{'-' if g is None else f'{g:.3f}'} |", ""]


def _comparisons(result: dict[str, Any], cols: list[str]) -> list[str]:
    """Every variant against the fused student and against CE, paired by seed."""
    rows = []
    for ref, diffs in result.get("paired", {}).items():
        for v, diff in diffs.items():
            if diff:
                rows.append(f"| {v} minus {ref} | " + " | ".join(_ci(diff.get(c)) for c in cols) +
                            f" | {len(diff['seeds'])} |")
    if not rows:
        return []
    return ["", "Paired differences in test BPB (mean [95% t interval]; negative = the first is better):", "",
            "| comparison | " + " | ".join(cols) + " | seeds |", "| --- |" + " ---: |" * (len(cols) + 1), *rows]


def _weights(result: dict[str, Any]) -> list[str]:
    """Mean teacher weight per student token of the training split, per fusion mode and domain."""
    fw = result.get("fusion_weights")
    if not fw:
        return []
    lines = ["", "How the fusion modes weigh the teachers on the training split (mean weight per student "
             "token; share of tokens where one teacher has >= 0.9):", "",
             "| mode | domain | weights | one teacher >= 0.9 |", "| --- | --- | --- | ---: |"]
    for mode, doms in fw.items():
        for dom, v in doms.items():
            lines.append(f"| {mode} | {dom} | " + ", ".join(f"{t} {w:.2f}" for t, w in v["mean"].items()) +
                         f" | {v['one_teacher_share']:.2f} |")
    return lines


def _runs(result: dict[str, Any]) -> list[str]:
    """Each run's chosen checkpoint (on validation) and its wall time."""
    lines = ["", "Every finished run: checkpoint chosen on validation (step), its validation and test BPB "
             "(domain-balanced), training wall time and the machine's load at the end:", "",
             "| variant | seed | step | validation | test | wall s | load |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for v, runs in result["runs"].items():
        for seed, run in sorted(runs.items()):
            c = chosen(run["segments"])
            wall = sum(s["train_wall_s"] for s in run["segments"])
            lines.append(f"| {v} | {seed} | {c['step']} | {c['validation'][OVERALL]:.4f} | {c['test'][OVERALL]:.4f} | "
                         f"{wall:.0f} | {run['segments'][-1]['load']:.1f} |")
    if result.get("unfinished"):
        lines += ["", f"Still training (not counted): {', '.join(result['unfinished'])}."]
    return lines


def attach(main_out: Path, later: list[Path]) -> list[dict[str, Any]]:
    """Record the verdicts of later tests (their own ``report`` JSONs, e.g. the pre-registered
    confirmation on fresh seeds) in the main report, which is re-rendered; the main proof and
    its runs are left as they are."""
    result = json.loads(main_out.with_suffix(".json").read_text())
    tests = []
    for path in later:
        other = json.loads(path.read_text())
        if not other.get("proof"):
            raise SystemExit(f"{path}: no proof object (finish its runs and `report` first)")
        tests.append({"file": path.with_suffix(".md").name, "preregistration": other.get("preregistration"),
                      **{k: other["proof"][k] for k in ("seeds", "seed_ids", "fused", "best_single",
                                                         "fused_minus_best_single", "per_domain", "holds")},
                      "fused_minus_ce": (other.get("paired", {}).get("a_ce", {}).get(other["proof"]["fused"]) or {})
                      .get(OVERALL)})
    result["later_tests"] = tests
    # the numbers are the main report's: its provenance stays (older reports have none yet)
    old = result.pop("provenance", None)
    prov = Provenance.model_validate(old) if old else Provenance.collect(dtype="float32")
    write_results(main_out, result, render(result), prov)
    return tests
