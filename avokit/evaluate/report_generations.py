"""report.md's generation-quality section: the models' continuations side by side and the
teachers' bits per byte of them (:mod:`avokit.evaluate.generations`)."""

from __future__ import annotations

import html
from typing import Any


def _cell(text: str, limit: int = 400) -> str:
    """Text for a Markdown table cell: HTML-escaped, pipes and line breaks kept visible."""
    short = text if len(text) <= limit else text[:limit] + " …"
    return html.escape(short).replace("|", "&#124;").replace("\n", "<br>").replace("  ", "&nbsp;&nbsp;") or "(nothing)"


def _bpb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _repeats(summary: dict[str, Any] | None) -> str:
    """A model's repetition in one domain: mean distinct-2 (repetitive continuations / all)."""
    if not summary:
        return "n/a"
    return f"{_bpb(summary['distinct2'])} ({summary['repetitive']}/{summary['continuations']})"


def _distinct_cells(row: dict[str, Any] | None) -> list[str]:
    """One continuation's distinct-1 and distinct-2 cells; distinct-2 says when it is repetitive."""
    if not row:
        return ["n/a", "n/a"]
    return [_bpb(row["distinct1"]), _bpb(row["distinct2"]) + (" **repetitive**" if row["repetitive"] else "")]


def _repetition_lines(gen: dict[str, Any]) -> list[str]:
    """The repetition paragraph and its per-domain table (none in metrics from before it existed)."""
    rep, below = gen.get("repetition") or {}, gen.get("repetitive_below")
    if not rep or below is None:
        return []
    cols = list(next(iter(rep.values())))
    return ["", "Repetition, over Unicode characters (tokenizer-independent, and no CJK character is split): "
            "distinct-n = unique n-grams / all n-grams of a continuation (1.0: nothing repeats). A continuation "
            f"whose distinct-2 is below {below} is marked **repetitive** (the English and Chinese prose we measured "
            "stayed above it; data tables in code, such as spinner frames, fall below, and are repetitive text "
            "whoever wrote it). Human text sits higher "
            "in Chinese than in code: compare models within a domain. Mean distinct-2 per domain "
            "(repetitive continuations / continuations):", "",
            "| model | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols),
            *(f"| {m} | " + " | ".join(_repeats(v.get(c)) for c in cols) + " |" for m, v in rep.items())]


def generation_section(gen: dict[str, Any] | None) -> list[str]:
    """Markdown lines; none when the evaluation wrote no generations."""
    if not gen:
        return []
    judges = gen["judges"]
    lines = ["", "## Generation quality", "",
             f"Greedy continuations ({gen['max_new_tokens']} new tokens at most) of held-out prompts: per domain, "
             f"the first {gen['prompts_per_domain']} held-out documents (corpus order) longer than "
             f"{gen['prompt_bytes']} bytes, each cut before whitespace (or after CJK punctuation) within "
             f"{gen['prompt_bytes']} bytes. Each teacher scores every continuation given its prompt: bits per "
             "byte of the continuation, lower = likelier text to that teacher. `reference` is the document's own "
             "next text, as long as the longest continuation. A low figure can also mean repetitive text, which a "
             "teacher finds easy to predict: teacher-judged BPB is only comparable among continuations that are "
             "not marked **repetitive** (distinct-n below), and read the continuations.", ""]
    rep = gen.get("repetition") or {}
    if not judges:
        lines += ["No teacher judged the continuations (`eval.include_teachers: false`).", ""]
    else:
        domains = [d for d in next(iter(gen["mean"].values())) if d != "all"] if gen["mean"] else []
        cols = [*domains, "all"]
        lines += [f"Mean over the judging teachers ({', '.join(judges)}), per domain, with the repetition "
                  "of all the model's continuations:", "",
                  "| model | " + " | ".join(cols) + " | distinct-1 | distinct-2 | repetitive |",
                  "| --- |" + " ---: |" * (len(cols) + 3)]
        for m, v in gen["mean"].items():
            every = rep.get(m, {}).get("all")
            tail = ([_bpb(every["distinct1"]), _bpb(every["distinct2"]), f"{every['repetitive']}/{every['continuations']}"]
                    if every else ["n/a"] * 3)
            lines.append(f"| {m} | " + " | ".join([*(_bpb(v.get(c)) for c in cols), *tail]) + " |")
        lines += ["", "Per judging teacher (all domains):", "",
                  "| model | " + " | ".join(judges) + " |", "| --- |" + " ---: |" * len(judges)]
        lines += [f"| {m} | " + " | ".join(_bpb(gen["bpb"][j][m]["all"]) for j in judges) + " |"
                  for m in gen["mean"]]
    lines += _repetition_lines(gen)
    for p in gen["prompts"]:
        header = ["model", "continuation", "distinct-1", "distinct-2", *(f"BPB by {j}" for j in judges)]
        lines += ["", f"### {p['domain']}: `{p['doc_id']}`", "", f"Prompt: {_cell(p['prompt'], 600)}", "",
                  "| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(judges) + 2)]
        for m, text in p["continuations"].items():
            cells = [m, _cell(text), *_distinct_cells(p.get("distinct", {}).get(m)),
                     *(_bpb(p["bpb"][j].get(m)) for j in judges)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines
