"""The release gate: recipe thresholds checked against measured metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from avokit.recipe.evaluation import GateConfig


@dataclass(frozen=True)
class GateCheck:
    """One threshold: what was measured, what was required, and whether it held."""

    name: str  # e.g. "max_bpb", "min_task_accuracy.arc_easy"
    value: float | None
    threshold: float | None
    passed: bool
    message: str


@dataclass(frozen=True)
class GateVerdict:
    """All checks; passed only if every check passed."""

    passed: bool
    checks: list[GateCheck]

    def failed(self) -> list[GateCheck]:
        """The checks that did not hold."""
        return [c for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, object]:
        """JSON form (stored in metrics.json and release.json)."""
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def check_gate(
    cfg: GateConfig,
    student_bpb: float,
    baseline_bpb: float | None,
    task_acc: dict[str, float],
    contamination_rate: float,
) -> GateVerdict:
    """Check every configured threshold.

    ``task_acc`` is the student's accuracy per task on the *clean* items (contaminated items
    cannot vouch for a model). A threshold naming a task that was not evaluated fails: a gate
    must never pass because a number is missing.
    """
    checks: list[GateCheck] = []
    if cfg.max_bpb is not None:
        ok = student_bpb <= cfg.max_bpb
        checks.append(GateCheck("max_bpb", student_bpb, cfg.max_bpb, ok,
                                f"student held-out BPB {student_bpb:.4f} {'<=' if ok else '>'} max_bpb {cfg.max_bpb}"))
    for task, minimum in sorted(cfg.min_task_accuracy.items()):
        name = f"min_task_accuracy.{task}"
        if task not in task_acc:
            checks.append(GateCheck(name, None, minimum, False, f"{name}: task {task!r} was not evaluated"))
            continue
        acc = task_acc[task]
        ok = acc >= minimum
        checks.append(GateCheck(name, acc, minimum, ok,
                                f"student {task} accuracy {acc:.4f} {'>=' if ok else '<'} {minimum}"))
    ok = contamination_rate <= cfg.max_contamination
    checks.append(GateCheck("max_contamination", contamination_rate, cfg.max_contamination, ok,
                            f"contaminated eval items {contamination_rate:.4f} {'<=' if ok else '>'} "
                            f"max_contamination {cfg.max_contamination}"))
    if cfg.must_beat_baseline:
        if baseline_bpb is None:
            checks.append(GateCheck("must_beat_baseline", student_bpb, None, False,
                                    "must_beat_baseline: no CE-only baseline was evaluated"))
        else:
            ok = student_bpb < baseline_bpb
            checks.append(GateCheck("must_beat_baseline", student_bpb, baseline_bpb, ok,
                                    f"student BPB {student_bpb:.4f} {'<' if ok else '>='} baseline BPB {baseline_bpb:.4f}"))
    return GateVerdict(all(c.passed for c in checks), checks)
