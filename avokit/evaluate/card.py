"""MODEL_CARD.md of a release: architecture, the pretrained start and its licence, tokenizer,
data, teachers and licences, what each teacher contributed per domain, metrics, contamination
and the gate verdict. Everything comes from the evaluation's typed ``metrics.json``."""

from __future__ import annotations

from typing import Any

from avokit.contracts import EvalMetrics
from avokit.contracts.metrics import TeacherLineage
from avokit.evaluate.lineage import catalog_lineage
from avokit.evaluate.report import domain_table

# The domain column of the contribution table for the whole training corpus.
ALL = "all"


def license_note(lic: str) -> str:
    """A licence as the card states it; Gemma's terms reach derivatives, and the card says so."""
    if "gemma" in lic.lower():
        return (f"{lic}: Gemma's Terms of Use apply to models derived from Gemma outputs; this "
                "student is such a derivative, so its use must follow them (including the prohibited-use policy).")
    return lic


def pretrained_start(metrics: EvalMetrics) -> TeacherLineage | None:
    """The start the student was trained from: as the evaluation recorded it, else (metrics
    from before the field) what the catalog knows of ``student.pretrained``; None from scratch."""
    if metrics.pretrained_start is not None:
        return metrics.pretrained_start
    name = metrics.student_config.get("pretrained")
    if not name:
        return None
    known = catalog_lineage(str(name))
    if not known:
        return TeacherLineage(name=str(name), kind="hf", license="unknown")
    return TeacherLineage(name=str(name), kind="registry", **known)


def _start_section(metrics: EvalMetrics, start: TeacherLineage) -> list[str]:
    origin = "; ".join(x for x in (start.upstream, start.provenance) if x)
    lines = ["## Pretrained start", "",
             f"- trained from `{start.name}`{f' ({origin})' if origin else ''}, not from random weights"]
    if start.fingerprint:
        lines.append(f"- start weights fingerprint `{start.fingerprint}`")
    if start.license and start.license != "unknown":
        lines.append(f"- licence: {license_note(start.license)}. This student is the start's weights after "
                     "further training, so it inherits the start's licence terms: use and redistribute it under them.")
    else:
        lines.append("- licence: not recorded (a local model directory). This student inherits whatever terms "
                     "the start's weights carry: check them before using or redistributing it.")
    bpb = metrics.bpb
    if "start" in bpb and "student" in bpb:
        lines.append(f"- held-out bits per byte: start {bpb['start'].bpb:.4f} -> student {bpb['student'].bpb:.4f}"
                     + (f" (CE baseline {bpb['baseline'].bpb:.4f})" if "baseline" in bpb else ""))
    return lines + [""]


def _fusion_words(mode: str, temperature: float) -> str:
    if mode == "fixed":
        return "`fixed`: each teacher's recipe weight, renormalised over the teachers that cover a document"
    if mode == "span_softmax":
        return (f"`span_softmax` (temperature {temperature}): per span within a document; the table gives "
                "the document-level weights the spans start from")
    return f"`{mode}` (temperature {temperature}): per document, from the teachers' bits per byte on it"


def _overall_weight(metrics: EvalMetrics, teacher: str) -> float | None:
    """A teacher's mean weight over every training document, from its per-domain means (for a
    run whose training log did not record the overall one)."""
    d = metrics.distillation
    per = d.domain_teacher_weights.get(teacher, {}) if d is not None else {}
    docs = {dom: d.domain_docs.get(dom, 0) for dom in per} if d is not None else {}
    total = sum(docs.values())
    return sum(per[dom] * docs[dom] for dom in per) / total if total else None


def contribution_rows(metrics: EvalMetrics) -> list[tuple[str, str, float | None, float | None, float | None]]:
    """(teacher, domain, mean fusion weight, teacher BPB, student BPB) per teacher and per
    domain, then over all the data (domain ``all``); None where a figure was not recorded."""
    d = metrics.distillation
    by_domain = d.domain_teacher_weights if d is not None else {}
    overall = d.teacher_weights if d is not None else {}
    student = metrics.bpb.get("student")
    rows: list[tuple[str, str, float | None, float | None, float | None]] = []
    for t in metrics.teachers:
        scored = metrics.bpb.get(t.name)
        domains = sorted({*by_domain.get(t.name, {}), *(scored.domains if scored else {})})
        for dom in domains:
            rows.append((t.name, dom, by_domain.get(t.name, {}).get(dom),
                         scored.domains[dom].bpb if scored and dom in scored.domains else None,
                         student.domains[dom].bpb if student and dom in student.domains else None))
        rows.append((t.name, ALL, overall.get(t.name, _overall_weight(metrics, t.name)),
                     scored.bpb if scored else None, student.bpb if student else None))
    return rows


def _contribution_section(metrics: EvalMetrics) -> list[str]:
    d = metrics.distillation
    lines = ["## What each teacher contributed", ""]
    if d is not None:
        docs = ", ".join(f"{dom} {n}" for dom, n in d.domain_docs.items())
        lines += [f"Fusion of the teachers in training: {_fusion_words(d.fusion_mode, d.fusion_temperature)}. "
                  "Mean fusion weight of each teacher over the training documents of each domain"
                  f"{f' (documents: {docs})' if docs else ''}, beside the teacher's and the student's "
                  "held-out bits per byte there (lower is better):", ""]
    else:
        lines += ["Fusion weights were not recorded by this evaluation; each teacher's and the student's "
                  "held-out bits per byte per domain (lower is better):", ""]

    def fmt(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    lines += ["| teacher | domain | mean fusion weight | teacher BPB | student BPB |",
              "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {t} | {dom} | {fmt(w, '.3f')} | {fmt(tb, '.4f')} | {fmt(sb, '.4f')} |"
              for t, dom, w, tb, sb in contribution_rows(metrics)]
    return lines + [""]


def _header(name: str, config: dict[str, Any], metrics: EvalMetrics, context_length: int) -> list[str]:
    student = metrics.models.get("student")
    return [f"# {name}", "",
            f"Distilled by avokit from recipe `{metrics.recipe}` (evaluation run {metrics.eval_run}, {metrics.created}).", "",
            "## Architecture", "",
            f"- {config.get('model_type', '?')}: {config.get('num_hidden_layers', '?')} layers, hidden size "
            f"{config.get('hidden_size', '?')}, {config.get('num_attention_heads', '?')} heads, "
            f"{student.params if student else '?'} parameters",
            f"- context length {context_length} tokens", ""]


def _data_and_teachers(config: dict[str, Any], metrics: EvalMetrics) -> list[str]:
    tr = metrics.training.get("student")
    student = metrics.models.get("student")
    tok_cfg = metrics.student_config.get("tokenizer", {})
    tok_origin = {"train": "a byte-level BPE trained on the recipe's training corpus",
                  "pretrained": f"the pretrained start's own ({metrics.student_config.get('pretrained')})"
                  }.get(tok_cfg.get("kind", ""), f"loaded from {tok_cfg.get('path', '?')}")
    lines = ["## Tokenizer", "",
             f"- own tokenizer, vocabulary {config.get('vocab_size', '?')} "
             f"({student.tokenizer if student else '?'}): {tok_origin}", "",
             "## Data", "",
             f"- training: {tr.tokens if tr else '?'} tokens over {tr.steps if tr else '?'} steps from the recipe's "
             f"corpus train split; held-out evaluation on {metrics.heldout.docs} documents ({metrics.heldout.bytes} bytes)", "",
             "## Teachers and licences", ""]
    for t in metrics.teachers:
        origin = f" — {t.upstream}; {t.provenance}" if t.upstream else ""
        lines.append(f"- {t.name}: {license_note(t.license)}{origin}")
    return lines + [""]


def _licence_section(metrics: EvalMetrics, start: TeacherLineage | None) -> list[str]:
    inherits = f" to the pretrained start's licence ({start.license}) and" if start is not None else ""
    return ["## Licence", "",
            f"- this student: {metrics.release_license or 'unspecified'} (recipe `release.license`), "
            f"subject{inherits} to the teachers' terms above where they follow derivatives", ""]


def _metrics_and_gate(metrics: EvalMetrics) -> list[str]:
    gate, con = metrics.gate, metrics.contamination
    lines = ["## Metrics", "", "Held-out bits per byte, per domain and overall (best per column in bold):", ""]
    lines += domain_table({m: v.model_dump() for m, v in metrics.bpb.items()})
    rows = []
    for task, s in metrics.tasks.get("student", {}).items():
        acc, clean = s.metric("acc"), (s.clean.model_extra or {}).get("acc")
        if acc is not None and clean is not None:
            rows.append(f"| {task} | {acc.value:.3f} (n={acc.n}) | {clean.value:.3f} (n={clean.n}) |")
    if rows:  # a recipe without task suites (eval.tasks: []) gets no empty table
        lines += ["", "| task | student acc (all) | student acc (clean items) |", "| --- | --- | --- |", *rows]
    lines += ["", "## Contamination", "",
              f"{con.n}-gram and token-overlap check of every eval item against the training text: "
              f"{len(con.items)} contaminated items, overall rate {con.overall_rate:.4f}.", "",
              f"## Release gate: {'PASSED' if gate.passed else 'FAILED'}", ""]
    return lines + [f"- {c.name}: {'pass' if c.passed else 'FAIL'} ({c.message})" for c in gate.checks]


def model_card(name: str, config: dict[str, Any], metrics: EvalMetrics, context_length: int) -> str:
    """MODEL_CARD.md: architecture, the pretrained start (name, upstream, licence the release
    inherits), tokenizer, data, teachers and licences, what each teacher contributed per domain
    (fusion weight and held-out BPB beside the student's), metrics, contamination and the gate."""
    start = pretrained_start(metrics)
    lines = _header(name, config, metrics, context_length)
    if start is not None:
        lines += _start_section(metrics, start)
    lines += _data_and_teachers(config, metrics)
    if metrics.teachers:
        lines += _contribution_section(metrics)
    lines += _licence_section(metrics, start) + _metrics_and_gate(metrics)
    return "\n".join(lines) + "\n"
