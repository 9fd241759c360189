"""Evaluation of one student in the on-policy comparison: it continues held-out prompts, and
every teacher judges the continuation (bits per byte), per domain and pooled; distinct-n of
what it wrote. The sampling seed is the same for every run, so runs differ only by weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avokit.align import byteify
from avokit.teachers.base import Teacher
from avokit.teachers.scoring import resolve_start_token_id
from avokit.train.data import separator_prefix
from avokit.train.on_policy import continue_prompts, live_records, student_text
from bench.quality.onpolicy.onpolicy_metrics import continuation_bits, pooled_bpb, pooled_distinct


@dataclass(frozen=True)
class EvalPrompt:
    """A held-out document's first student tokens (after the packing's separator prefix)."""

    doc_id: str
    domain: str
    ids: np.ndarray


def eval_prompts(docs: list[Any], tok: Any, n_tokens: int) -> list[EvalPrompt]:
    """One prompt per document: the start of the document as training packs it."""
    prefix = separator_prefix(tok.eos_token_id, resolve_start_token_id(tok))
    return [EvalPrompt(d.doc_id, d.domain, np.asarray(prefix + tok(d.text, add_special_tokens=False).input_ids[:n_tokens]))
            for d in docs]


def continue_eval_prompts(model: Any, tok: Any, prompts: list[EvalPrompt], new_tokens: int, seed: int,
                          batch: int = 16) -> list[np.ndarray]:
    """The student's new token ids for each prompt, sampled at temperature 1 (stops at EOS)."""
    torch.manual_seed(seed)
    out: list[np.ndarray] = []
    for i in range(0, len(prompts), batch):
        out += continue_prompts(model, [p.ids for p in prompts[i:i + batch]], tok.eos_token_id, new_tokens, 1.0, "cpu")
    return out


def kept_samples(prompts: list[EvalPrompt], prompt_texts: list[str], texts: list[str],
                 per_domain: int | None) -> list[dict[str, Any]]:
    """The samples a report shows (``prompt_chars``: where the student's own text starts): the
    first 6 (``per_domain`` None, as this bench always kept them), else the first
    ``per_domain`` of each domain."""
    rows: list[dict[str, Any]] = [{"doc_id": p.doc_id, "domain": p.domain, "text": t, "prompt_chars": len(pt)}
                                  for p, pt, t in zip(prompts, prompt_texts, texts)]
    if per_domain is None:
        return rows[:6]
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        seen[row["domain"]] = seen.get(row["domain"], 0) + 1
        if seen[row["domain"]] <= per_domain:
            out.append(row)
    return out


def evaluate_model(model: Any, tok: Any, prompts: list[EvalPrompt], teachers: Mapping[str, Teacher],
                   new_tokens: int, sample_seed: int, samples_per_domain: int | None = None) -> dict[str, Any]:
    """Teacher-judged bits per byte of the student's continuations (each teacher, per domain
    and over every prompt pooled; ``teacher_nll`` = the mean over teachers) and distinct-2/3;
    ``samples``: what it wrote for some prompts (:func:`kept_samples`); ``per_prompt``: each
    prompt's (bits, bytes) per teacher, for a bootstrap over prompts."""
    tb = byteify(tok, name="student")
    new = continue_eval_prompts(model, tok, prompts, new_tokens, sample_seed)
    prompt_texts = [student_text(p.ids, tb) for p in prompts]
    texts = [pt + student_text(n, tb) for pt, n in zip(prompt_texts, new)]
    doc_ids = [f"eval:{p.doc_id}" for p in prompts]
    per_teacher: dict[str, dict[str, float]] = {}
    skipped: dict[str, int] = {}
    per_prompt: list[dict[str, Any]] = [{"doc_id": p.doc_id, "domain": p.domain, "bits": {}, "bytes": {}}
                                        for p in prompts]
    for name, teacher in teachers.items():
        records = live_records(teacher, texts, doc_ids, 1)
        parts: dict[str, list[tuple[float, int]]] = {}
        for p, pt, did, row in zip(prompts, prompt_texts, doc_ids, per_prompt):
            if did in records:
                bits, n_bytes = continuation_bits(records[did], len(pt.encode("utf-8")))
                parts.setdefault(p.domain, []).append((bits, n_bytes))
                row["bits"][name], row["bytes"][name] = bits, n_bytes
        skipped[name] = len(prompts) - len(records)
        per_teacher[name] = {"pooled": pooled_bpb([x for v in parts.values() for x in v]),
                             **{dom: pooled_bpb(v) for dom, v in sorted(parts.items())}}
    return {"teacher_bpb": per_teacher, "teacher_nll": float(np.mean([v["pooled"] for v in per_teacher.values()])),
            "distinct2": pooled_distinct([n.tolist() for n in new], 2),
            "distinct3": pooled_distinct([n.tolist() for n in new], 3),
            "mean_new_tokens": float(np.mean([len(n) for n in new])), "unscored_by_teacher": skipped,
            "samples": kept_samples(prompts, prompt_texts, texts, samples_per_domain), "per_prompt": per_prompt}
