"""``run_eval``: held-out BPB and tasks for student, baseline and teachers; contamination;
the gate verdict; the report. Every call is appended to report/eval_log.jsonl."""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from avokit.contracts.metrics import EVAL_SCHEMA_VERSION, EvalMetrics, TrainingSummary
from avokit.corpus import Document, load_split
from avokit.errors import AvokitError
from avokit.evaluate.bpb import BpbResult, domain_bpb
from avokit.evaluate.contamination import check_contamination
from avokit.evaluate.gate import check_gate
from avokit.evaluate.generations import GenerationJudge, heldout_prompts
from avokit.evaluate.lineage import (
    cached_teacher_dtype,
    cached_teacher_fingerprint,
    catalog_lineage,
    data_lineage,
    fusion_by_domain,
)
from avokit.evaluate.models import MODEL_DIRS, START, score_all
from avokit.evaluate.plots import read_train_log
from avokit.evaluate.release import weights_sha256
from avokit.evaluate.report import export_eval_items, render_markdown, write_plots
from avokit.evaluate.runlog import append_entry, read_log
from avokit.evaluate.suites import load_builtin_task
from avokit.evaluate.tasks import Task, load_task
from avokit.paths import FUSION_LOG
from avokit.recipe import Recipe


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """CPU model, cores, RAM and accelerator of this machine, for the report."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0.0
    acc = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gib": round(ram, 1), "accelerator": acc}


def load_tasks(recipe: Recipe) -> list[Task]:
    """The recipe's tasks (built-in names or YAML paths), capped to eval.max_items."""
    out = []
    for spec in recipe.eval.tasks:
        if spec.endswith((".yaml", ".yml")):
            task = load_task(recipe.resolve(Path(spec)))
        else:
            task = load_builtin_task(spec, recipe.eval.num_fewshot)
        out.append(task.subset(recipe.eval.max_items))
    return out


def training_texts(recipe: Recipe) -> list[str]:
    """Train split plus any other corpus Parquet (teacher-generated text), never held-out."""
    texts = [d.text for d in load_split(recipe, "train")]
    corpus = recipe.run_dir / "corpus"
    for extra in sorted(corpus.glob("*.parquet")):
        if extra.name not in ("train.parquet", "heldout.parquet"):
            table = pq.read_table(extra)
            if "text" in table.column_names:
                texts.extend(str(t) for t in table.column("text").to_pylist())
    return texts


def training_summary(run_dir: Path) -> dict[str, TrainingSummary]:
    """metrics.json's ``training``: per trained model (student, baseline), what its
    train_log.jsonl says, the process group of its last logged step included."""
    out = {}
    for m in MODEL_DIRS:
        log = read_train_log(run_dir / m / "train_log.jsonl")
        losses = [e["loss"] for e in log if e.get("loss") is not None]
        walls = [float(e["elapsed_s"]) for e in log if e.get("elapsed_s") is not None]
        group: dict[str, Any] = next((e for e in reversed(log) if "world_size" in e), {})
        out[m] = TrainingSummary(
            steps=max((int(e.get("step", 0)) for e in log), default=0),
            tokens=max((int(e.get("tokens", 0)) for e in log), default=0),
            final_loss=float(losses[-1]) if losses else None,
            # train-loop wall time summed over every (resumed) process run; None for old logs
            wall_time_s=walls[-1] if walls else None,
            **{k: group.get(k) for k in ("world_size", "distributed_type", "backend", "rows_per_rank",
                                         "params_by_rank")})
    return out


def balanced_subset(docs: list[Document], limit: int | None) -> list[Document]:
    """At most ``limit`` documents, taken from each domain in turn (corpus order within a
    domain), so a cap never drops a whole domain; all of them when ``limit`` is None."""
    if limit is None or limit >= len(docs):
        return docs
    queues = {dom: [d for d in docs if d.domain == dom] for dom in dict.fromkeys(d.domain for d in docs)}
    picked: set[str] = set()
    while len(picked) < limit:
        for queue in queues.values():
            if queue and len(picked) < limit:
                picked.add(queue.pop(0).doc_id)
    return [d for d in docs if d.doc_id in picked]


def domain_contamination(recipe: Recipe, tasks: list[Task]) -> dict[str, dict[str, Any]]:
    """Per domain of the train split: how many evaluated items its text alone contaminates."""
    train = load_split(recipe, "train")
    out: dict[str, dict[str, Any]] = {}
    for dom in sorted({d.domain for d in train}):
        rep = check_contamination([d.text for d in train if d.domain == dom], tasks, n=recipe.eval.ngram)
        out[dom] = {"docs": sum(d.domain == dom for d in train), "contaminated_items": len(rep.items),
                    "rate": rep.overall_rate, "per_task": rep.per_task}
    return out


def _distillation(recipe: Recipe) -> dict[str, Any]:
    """The recipe's loss and fusion settings, the student's logged mean teacher weights and
    their means per domain (its fusion_weights.jsonl)."""
    student = recipe.run_dir / "student"
    log = read_train_log(student / "train_log.jsonl")
    weights: dict[str, Any] = next((e["teacher_weights"] for e in reversed(log) if e.get("teacher_weights")), {})
    by_domain, domain_docs = fusion_by_domain(student / FUSION_LOG,
                                              {d.doc_id: d.domain for d in load_split(recipe, "train")})
    loss, fusion = recipe.train.loss, recipe.train.fusion
    return {"targets": loss.targets, "chunk_debias": loss.chunk_debias, "token_loss": loss.token_loss,
            "fusion_mode": fusion.mode, "fusion_temperature": fusion.temperature,
            "fusion_window": fusion.window, "ce_weight": loss.ce_weight, "kd_weight": loss.kd_weight,
            "chunk_weight": loss.chunk_weight, "teacher_weights": {k: float(v) for k, v in weights.items()},
            "domain_teacher_weights": by_domain, "domain_docs": domain_docs}


def _teacher_lineage(recipe: Recipe, infos: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each teacher with its licence; registry teachers add their upstream name and provenance."""
    from avokit.teachers.fidelity import check_path, read_check

    out = []
    for t in recipe.teachers:
        row: dict[str, Any] = {"name": t.name, "kind": t.kind,
                               "license": infos.get(t.name, {}).get("license", "unknown"),
                               # the weights the student learnt from are the cache's teacher
                               "fingerprint": cached_teacher_fingerprint(recipe.run_dir, t.name)
                               or infos.get(t.name, {}).get("fingerprint"),
                               "capture_dtype": cached_teacher_dtype(recipe.run_dir, t.name),
                               "bf16_check": read_check(check_path(recipe, t.name))}
        row.update(catalog_lineage(t.registry_name if t.kind == "registry" else None))
        out.append(row)
    return out


def _start_lineage(recipe: Recipe, infos: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The pretrained student's start, as a teacher's lineage reads: a registry model with its
    catalog licence, upstream and provenance; a directory with what its scoring knew (its
    licence is not recorded there). None for a student trained from scratch."""
    student = recipe.student
    if student.pretrained is None:
        return None
    info = infos.get(START, {})
    return {"name": student.pretrained, "kind": "registry" if student.registry_name else "hf",
            "license": info.get("license", "unknown"), "fingerprint": info.get("fingerprint"),
            **catalog_lineage(student.registry_name)}


def _bpb_metrics(bpb: dict[str, BpbResult], texts: dict[str, str], domains: dict[str, str]) -> dict[str, Any]:
    out = {}
    for m, b in bpb.items():
        per_domain = domain_bpb(b, texts, domains)
        out[m] = {**b.as_dict(), "domains": per_domain,
                  # every domain counts the same, however many bytes it has
                  "domain_mean": float(np.mean([v["bpb"] for v in per_domain.values()]))}
    return out


def run_eval(recipe: Recipe) -> Path:
    """Evaluate student, baseline and every teacher of ``recipe``; write runs/NAME/report/.

    Always re-evaluates (evaluations are cheap next to training and each one is logged);
    returns the report directory.
    """
    t0 = time.time()
    run_dir = recipe.run_dir
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    for m in MODEL_DIRS:
        if not (run_dir / m / "config.json").is_file():
            raise AvokitError(f"{run_dir / m}: no trained model (config.json missing); run `avokit train` first")
    whole = load_split(recipe, "heldout")
    heldout = balanced_subset(whole, recipe.eval.bpb_max_docs)
    texts = {d.doc_id: d.text for d in heldout}
    domains = {d.doc_id: d.domain for d in heldout}
    tasks = load_tasks(recipe)
    train_texts = training_texts(recipe)
    contamination = check_contamination(train_texts, tasks, n=recipe.eval.ngram)
    export_eval_items(tasks, report_dir / "eval_items.jsonl")
    gen = recipe.eval.generation
    judge = GenerationJudge(heldout_prompts(whole, gen), gen) if gen.prompts_per_domain else None
    bpb, task_metrics, infos = score_all(recipe, texts, tasks, contamination, judge)

    student_acc = {t: task_metrics["student"][t]["clean"]["acc"]["value"] for t in task_metrics["student"]
                   if task_metrics["student"][t]["clean"]["acc"]["n"]}
    verdict = check_gate(recipe.gate, bpb["student"].bpb, bpb["baseline"].bpb, student_acc,
                         contamination.overall_rate)
    wall = time.time() - t0
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    log_path = report_dir / "eval_log.jsonl"
    run_no = append_entry(log_path, {
        "created": created, "student_bpb": bpb["student"].bpb, "baseline_bpb": bpb["baseline"].bpb,
        "bpb": {m: b.bpb for m, b in bpb.items()},
        "tasks": {m: {t: v["acc"]["value"] for t, v in tm.items()} for m, tm in task_metrics.items()},
        "contamination_rate": contamination.overall_rate, "gate_passed": verdict.passed, "wall_time_s": wall,
        "gate_config": recipe.gate.model_dump(mode="json"), "eval_config": recipe.eval.model_dump(mode="json"),
    })
    metrics: dict[str, Any] = {
        "schema_version": EVAL_SCHEMA_VERSION, "recipe": recipe.name, "created": created, "eval_run": run_no,
        "hardware": hardware(), "wall_time_s": wall, "cost_per_hour": recipe.eval.cost_per_hour,
        "cost_usd": wall / 3600 * recipe.eval.cost_per_hour,
        "heldout": {"docs": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts.values()),
                    "domains": {dom: sum(v == dom for v in domains.values()) for dom in sorted(set(domains.values()))}},
        "bpb": _bpb_metrics(bpb, texts, domains),
        "tasks": task_metrics,
        "task_subset": {t.name: {"items": len(t.items), "available": t.n_available, "num_fewshot": recipe.eval.num_fewshot,
                                 "selection": "first by sha256(item id)" if len(t.items) < t.n_available else "all"}
                        for t in tasks},
        "contamination": {"n": contamination.n, "min_span": contamination.min_span,
                          "dirty_fraction": contamination.dirty_fraction, "corpus_docs": len(train_texts),
                          "overall_rate": contamination.overall_rate, "per_task": contamination.per_task,
                          "per_domain": domain_contamination(recipe, tasks),
                          "items": [vars(i) for i in contamination.items]},
        "gate": verdict.as_dict(),
        # release refuses a student whose weights changed after this verdict was reached
        "student_sha256": weights_sha256(run_dir / "student"),
        "release_license": recipe.release.license,
        "release_registry": str(recipe.resolve(recipe.release.registry)),
        "release_name": recipe.release.name or recipe.name,
        "training": {m: t.model_dump(mode="json") for m, t in training_summary(run_dir).items()},
        "models": infos,
        # `auto` resolved: the tokenizer the run really used
        "student_config": {**recipe.student.model_dump(mode="json"),
                           "tokenizer": {**recipe.student.tokenizer.model_dump(mode="json"),
                                         "kind": recipe.student.tokenizer_kind}},
        "teachers": _teacher_lineage(recipe, infos),
        "pretrained_start": _start_lineage(recipe, infos),
        "data": data_lineage(run_dir, [t.name for t in recipe.teachers]),
        "distillation": _distillation(recipe),
        "generations": judge.as_metrics() if judge is not None else None,
    }
    typed = EvalMetrics.model_validate(metrics)  # the contract, checked before anything is written
    plots = write_plots(metrics, run_dir, report_dir)
    typed.write(report_dir / "metrics.json")
    (report_dir / "report.md").write_text(render_markdown(metrics, read_log(log_path), plots), encoding="utf-8")
    return report_dir
