"""The evaluation report: metrics.json, report.md, PNG plots and the exported eval items."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from avokit.corpus.canary import AVOKIT_CANARY
from avokit.evaluate.plots import (
    plot_bpb,
    plot_domain_bpb,
    plot_task_accuracy,
    plot_training_curves,
    read_train_log,
)
from avokit.evaluate.report_generations import generation_section
from avokit.evaluate.tasks import Task


def export_eval_items(tasks: list[Task], out: Path) -> Path:
    """Write every evaluated item as JSONL, each line carrying the avokit canary string so a
    corpus built from a crawl that picked this file up is refused by the corpus stage."""
    with out.open("w", encoding="utf-8") as fh:
        for t in tasks:
            for it in t.items:
                fh.write(json.dumps({"canary": AVOKIT_CANARY, "task": t.name, "id": it.item_id,
                                     "prompt": it.prompt, "choices": list(it.choices),
                                     "gold": it.gold, "answer": it.answer}) + "\n")
    return out


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _score(s: dict[str, Any] | None) -> str:
    if not s or not s.get("n"):
        return "n/a (0 items)"
    lo, hi = s["ci95"]
    return f"{s['value']:.3f} [{lo:.3f}, {hi:.3f}] (n={s['n']})"


def write_plots(metrics: dict[str, Any], run_dir: Path, report_dir: Path) -> list[Path]:
    """Training curves, BPB per model, task accuracy with intervals; returns the PNG paths."""
    out = []
    logs = {m: read_train_log(run_dir / m / "train_log.jsonl") for m in ("student", "baseline")}
    p = plot_training_curves(logs, report_dir / "training_curves.png")
    if p:
        out.append(p)
    if metrics["bpb"]:
        out.append(plot_bpb({m: v["bpb"] for m, v in metrics["bpb"].items()}, report_dir / "bpb.png"))
        per_domain = {m: {d: x["bpb"] for d, x in v.get("domains", {}).items()} for m, v in metrics["bpb"].items()}
        if any(per_domain.values()):
            out.append(plot_domain_bpb(per_domain, report_dir / "bpb_by_domain.png"))
    acc = {
        m: {t: (s["acc"]["value"], *s["acc"]["ci95"]) for t, s in tasks.items() if s["acc"]["n"]}
        for m, tasks in metrics["tasks"].items()
    }
    if any(acc.values()):
        out.append(plot_task_accuracy(acc, report_dir / "task_accuracy.png"))
    return out


def domain_table(bpb: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: models x (each domain, overall, domain mean); the lowest BPB of each
    column in bold."""
    domains = sorted({d for v in bpb.values() for d in v.get("domains", {})})
    columns = [*domains, "overall", "domain mean"]

    def cell(v: dict[str, Any], col: str) -> float | None:
        if col == "overall":
            return v["bpb"]
        if col == "domain mean":
            return v.get("domain_mean")
        return v.get("domains", {}).get(col, {}).get("bpb")

    best = {c: min((x for x in (cell(v, c) for v in bpb.values()) if x is not None), default=None)
            for c in columns}
    rows = ["| model | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for m, v in bpb.items():
        vals = []
        for c in columns:
            x = cell(v, c)
            vals.append("n/a" if x is None else f"**{x:.4f}**" if x == best[c] else f"{x:.4f}")
        rows.append(f"| {m} | " + " | ".join(vals) + " |")
    return rows


def _gate_section(metrics: dict[str, Any], log: list[dict[str, Any]]) -> list[str]:
    gate = metrics["gate"]
    lines = [
        f"# Evaluation report: {metrics['recipe']}",
        "",
        f"Evaluation run {metrics['eval_run']} of {len(log)} recorded for this recipe, {metrics['created']}.",
        "",
        f"**Release gate: {'PASSED' if gate['passed'] else 'FAILED'}**",
        "",
        "| check | measured | threshold | result |",
        "| --- | --- | --- | --- |",
    ]
    for c in gate["checks"]:
        lines.append(f"| {c['name']} | {_fmt(c['value'])} | {_fmt(c['threshold'])} | "
                     f"{'pass' if c['passed'] else '**FAIL**'}: {c['message']} |")
    return lines


def _bpb_section(metrics: dict[str, Any]) -> list[str]:
    ho = metrics["heldout"]
    lines = ["", "## Held-out bits per byte", "",
             f"{ho['docs']} held-out documents, {ho['bytes']} UTF-8 bytes. BPB = total NLL (nats) / "
             "(ln 2 x bytes of exactly the scored text); every model scored through the same Teacher "
             "interface from a start token, long documents in windows. `source` says whether the gold "
             "log-probs were computed now (live) or read from the capture cache (exact stored values), "
             "`dtype` what the model computed in there (`auto`: bf16 only where the CPU or GPU has "
             "native bf16 and the teacher passed capture's bf16 check).", "",
             "| model | BPB | tokens | tokens/byte | window (tokens) | source | dtype |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    models = metrics.get("models", {})
    captured = {t["name"]: t.get("capture_dtype") for t in metrics.get("teachers", [])}
    for m, b in metrics["bpb"].items():
        window = _fmt(models.get(m, {}).get("window"))
        # cached gold log-probs were computed in the capture's dtype, live ones in this run's
        dtype = captured.get(m) if b["source"] == "cache" else models.get(m, {}).get("dtype")
        lines.append(f"| {m} | {b['bpb']:.4f} | {b['tokens']} | {b['tokens'] / max(1, b['bytes']):.3f} | "
                     f"{window} | {b['source']} | {_fmt(dtype)} |")
    if "start" in metrics["bpb"]:
        lines += ["", "`start` is the pretrained student before any training (its weights as loaded), so "
                  "start -> baseline shows what training on the corpus alone changed and baseline -> student "
                  "what the teachers added."]
    held_domains = ho.get("domains", {})
    lines += ["", "### Per domain", "",
              "Bits per byte within each domain's held-out documents (" +
              ", ".join(f"{d}: {n} docs" for d, n in held_domains.items()) +
              "); overall weighs every byte the same, domain mean every domain. Best per column in bold.", ""]
    return lines + domain_table(metrics["bpb"])


def _distillation_section(metrics: dict[str, Any]) -> list[str]:
    d = metrics.get("distillation")
    if not d:
        return []
    if d["fusion_mode"] == "fixed":  # the teachers' own weights: no temperature plays a part
        fusion = "`fixed` (each teacher's recipe weight, renormalised)"
    else:
        fusion = f"`{d['fusion_mode']}` (temperature {d['fusion_temperature']}"
        fusion += f", window {d['fusion_window']} spans)" if d["fusion_mode"] == "span_softmax" else ")"
    weights = ", ".join(f"{t} {w:.3f}" for t, w in d["teacher_weights"].items()) or "not logged"
    per_domain = d.get("domain_teacher_weights") or {}
    domains = sorted({dom for per in per_domain.values() for dom in per})
    by_domain = "; ".join(f"{dom}: " + ", ".join(f"{t} {per[dom]:.3f}" for t, per in per_domain.items() if dom in per)
                          for dom in domains)
    return ["", "## Distillation", "",
            f"- fusion of the teachers: {fusion}; mean teacher weight over the training documents: {weights}",
            *([f"- mean teacher weight per domain: {by_domain}"] if by_domain else []),
            f"- targets: `{d['targets']}`; loss = {d['ce_weight']} x CE + {d['kd_weight']} x KD"
            f"{' (ULD)' if d.get('token_loss') == 'uld' else ''} + "
            f"{d['chunk_weight']} x chunk{' (debiased)' if d.get('chunk_debias') else ''} "
            "(per teacher, fusion-weighted)"]


def _task_section(metrics: dict[str, Any]) -> list[str]:
    lines = ["", "## Tasks", "",
             "Multiple choice by log-likelihood: `acc` picks the highest log p(choice | prompt), "
             "`acc_norm` the highest log-prob per UTF-8 byte of the choice. 95% Wilson intervals. "
             "Clean = items with no detected overlap with the training text.", ""]
    for t, sub in metrics["task_subset"].items():
        lines.append(f"- {t}: {sub['items']} of {sub['available']} items ({sub['selection']}), "
                     f"{sub['num_fewshot']}-shot")
    unscored = [m for m, t in metrics["tasks"].items() if not t]
    if unscored and metrics["task_subset"]:
        lines.append(f"- not scored on tasks (`eval.teacher_tasks: false`, BPB only): {', '.join(unscored)}")
    lines += ["", "| model | task | acc | acc_norm | acc (clean) | acc (dirty) |", "| --- | --- | --- | --- | --- | --- |"]
    for m, tasks in metrics["tasks"].items():
        for t, s in tasks.items():
            lines.append(f"| {m} | {t} | {_score(s['acc'])} | {_score(s.get('acc_norm'))} | "
                         f"{_score(s['clean']['acc'])} | {_score(s['dirty']['acc'])} |")
    return lines


def _contamination_section(con: dict[str, Any]) -> list[str]:
    lines = ["", "## Contamination", "",
             f"Training text ({con['corpus_docs']} documents: train split plus any teacher-generated text) "
             f"against every evaluated item (prompt + gold answer): {con['n']}-gram overlap, and Llama-2 "
             f"style token overlap (share of an item's words inside a shared span of >= {con['min_span']} "
             f"words; dirty above {con['dirty_fraction']}). Overall contaminated rate: "
             f"{con['overall_rate']:.4f}.", "", "| task | items | contaminated | rate |", "| --- | --- | --- | --- |"]
    for t, v in con["per_task"].items():
        lines.append(f"| {t} | {v['items']} | {v['contaminated']} | {v['rate']:.4f} |")
    if con.get("per_domain"):
        lines += ["", "Per domain of the training text (items that domain's text alone contaminates):", "",
                  "| domain | train docs | contaminated items | rate |", "| --- | --- | --- | --- |"]
        lines += [f"| {d} | {v['docs']} | {v['contaminated_items']} | {v['rate']:.4f} |"
                  for d, v in con["per_domain"].items()]
    if con["items"]:
        lines += ["", "Contaminated items:", ""]
        lines += [f"- {i['task']} `{i['item_id']}`: {i['ngram_hits']} shared {con['n']}-grams, "
                  f"token overlap {i['token_overlap']:.2f}" for i in con["items"][:200]]
        if len(con["items"]) > 200:
            lines.append(f"- ... {len(con['items']) - 200} more in metrics.json")
    return lines


def _cost_section(metrics: dict[str, Any], log: list[dict[str, Any]]) -> list[str]:
    hw, rate = metrics["hardware"], metrics["cost_per_hour"]
    lines = ["", "## Training, hardware and cost", ""]
    for m, t in metrics["training"].items():
        wall = t.get("wall_time_s")
        when = (f", training wall time {wall:.1f} s (${wall / 3600 * rate:.4f} at ${rate}/hour)"
                if wall is not None else ", training wall time not logged")
        group = (f", on {t['world_size']} process{'es' if t['world_size'] != 1 else ''} "
                 f"({t['distributed_type']}, {t.get('backend') or 'no backend'}; {t.get('rows_per_rank')} rows "
                 "of each global batch per process)" if t.get("world_size") else "")
        lines.append(f"- {m}: {t['steps']} logged steps, {t['tokens']} training tokens, "
                     f"final loss {_fmt(t['final_loss'])}{when}{group}")
    lines += [f"- hardware (this evaluation): {hw['cpu']} ({hw['cores']} cores), {hw['ram_gib']} GiB RAM, "
              f"accelerator: {hw['accelerator']}",
              f"- evaluation wall time: {metrics['wall_time_s']:.1f} s; cost at ${rate}/hour: "
              f"${metrics['cost_usd']:.4f}" + (" (0 $/hour: a machine you own; set eval.cost_per_hour to price rented time)"
                                              if rate == 0 else ""),
              "", "## Every evaluation of this recipe (append-only log, nothing dropped)", "",
              "| run | created | student BPB | baseline BPB | gate |", "| --- | --- | --- | --- | --- |"]
    for e in log:
        lines.append(f"| {e['run']} | {e.get('created', '')} | {_fmt(e.get('student_bpb'))} | "
                     f"{_fmt(e.get('baseline_bpb'))} | {'passed' if e.get('gate_passed') else 'failed'} |")
    return lines


def render_markdown(metrics: dict[str, Any], log: list[dict[str, Any]], plots: list[Path]) -> str:
    """report.md from metrics.json and the whole evaluation log."""
    lines = (_gate_section(metrics, log) + _bpb_section(metrics) + generation_section(metrics.get("generations"))
             + _distillation_section(metrics)
             + _task_section(metrics)
             + _contamination_section(metrics["contamination"]) + _cost_section(metrics, log)
             + ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots])
    return "\n".join(lines) + "\n"
