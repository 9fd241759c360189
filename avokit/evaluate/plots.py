"""Report figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """Entries of a train_log.jsonl; unreadable lines are skipped (a killed run may leave half a line)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_training_curves(logs: dict[str, list[dict[str, Any]]], out: Path) -> Path | None:
    """Training loss and held-out BPB against step, one line per model; None if no logs.

    The left panel draws each model's cross-entropy (solid), the term student and baseline
    share, and the student's total loss with its KD terms (dashed): totals of different
    objectives are not comparable with each other."""
    if not any(logs.values()):
        return None
    fig, (ax_loss, ax_bpb) = plt.subplots(1, 2, figsize=(11, 4))
    for name, entries in logs.items():
        ce = [(e["step"], e["ce"]) for e in entries if "step" in e and e.get("ce") is not None]
        total = [(e["step"], e["loss"]) for e in entries if "step" in e and e.get("loss") is not None]
        if ce:
            (line,) = ax_loss.plot(*zip(*ce), label=f"{name} CE")
            if any(abs(t - c) > 1e-9 for (_, t), (_, c) in zip(total, ce)):
                ax_loss.plot(*zip(*total), linestyle="--", color=line.get_color(), label=f"{name} total (CE + KD)")
        elif total:
            ax_loss.plot(*zip(*total), label=name)
        bpts = [(e["step"], e["heldout_bpb"]) for e in entries if e.get("heldout_bpb") is not None]
        if bpts:
            ax_bpb.plot(*zip(*bpts), marker="o", label=name)
    ax_loss.set(title="Training loss", xlabel="step", ylabel="nats per token")
    ax_loss.xaxis.get_major_locator().set_params(integer=True)
    ax_bpb.xaxis.get_major_locator().set_params(integer=True)
    ax_bpb.set(title="Held-out bits per byte during training", xlabel="step", ylabel="bits per byte")
    for ax in (ax_loss, ax_bpb):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_bpb(bpb: dict[str, float], out: Path) -> Path:
    """Held-out bits per byte per model (lower is better), values printed on the bars."""
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(bpb) + 2), 4))
    names = list(bpb)
    bars = ax.bar(names, [bpb[n] for n in names], color=["#2a7" if n == "student" else "#888" for n in names])
    ax.bar_label(bars, fmt="%.3f")
    ax.set(title="Held-out bits per byte (lower is better)", ylabel="bits per byte")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_task_accuracy(acc: dict[str, dict[str, tuple[float, float, float]]], out: Path) -> Path:
    """Accuracy per task (groups) and model (bars) with 95% interval error bars.

    ``acc[model][task] = (value, low, high)``."""
    models = list(acc)
    tasks = sorted({t for m in acc.values() for t in m})
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(tasks) + 3), 4.2))
    for j, m in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for i, t in enumerate(tasks):
            if t in acc[m]:
                v, low, high = acc[m][t]
                xs.append(i + (j - (len(models) - 1) / 2) * width)
                ys.append(v)
                lo.append(v - low)
                hi.append(high - v)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=m)
    ax.set(ylim=(0, 1))
    return _save_grouped(fig, ax, tasks, "Task accuracy with 95% Wilson intervals", "accuracy", out)


def _save_grouped(fig: Any, ax: Any, groups: list[str], title: str, ylabel: str, out: Path) -> Path:
    """Label, grid and legend a grouped bar chart, then write it to ``out``."""
    ax.set_xticks(range(len(groups)), groups)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_domain_bpb(bpb: dict[str, dict[str, float]], out: Path) -> Path:
    """Held-out bits per byte per domain (groups) and model (bars); ``bpb[model][domain]``."""
    models = list(bpb)
    domains = sorted({d for m in bpb.values() for d in m})
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(domains) * max(1, len(models)) / 2 + 3), 4.2))
    for j, m in enumerate(models):
        xs = [i + (j - (len(models) - 1) / 2) * width for i, d in enumerate(domains) if d in bpb[m]]
        ys = [bpb[m][d] for d in domains if d in bpb[m]]
        bars = ax.bar(xs, ys, width, label=m)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    return _save_grouped(fig, ax, domains, "Held-out bits per byte by domain (lower is better)",
                         "bits per byte", out)
