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
             "next text, as long as the longest continuation. A low figure can also mean repetitive text: read "
             "the continuations below.", ""]
    if not judges:
        lines += ["No teacher judged the continuations (`eval.include_teachers: false`).", ""]
    else:
        domains = [d for d in next(iter(gen["mean"].values())) if d != "all"] if gen["mean"] else []
        cols = [*domains, "all"]
        lines += [f"Mean over the judging teachers ({', '.join(judges)}), per domain:", "",
                  "| model | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
        lines += [f"| {m} | " + " | ".join(_bpb(v.get(c)) for c in cols) + " |" for m, v in gen["mean"].items()]
        lines += ["", "Per judging teacher (all domains):", "",
                  "| model | " + " | ".join(judges) + " |", "| --- |" + " ---: |" * len(judges)]
        lines += [f"| {m} | " + " | ".join(_bpb(gen["bpb"][j][m]["all"]) for j in judges) + " |"
                  for m in gen["mean"]]
    for p in gen["prompts"]:
        header = ["model", "continuation", *(f"BPB by {j}" for j in judges)]
        lines += ["", f"### {p['domain']}: `{p['doc_id']}`", "", f"Prompt: {_cell(p['prompt'], 600)}", "",
                  "| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * len(judges)]
        for m, text in p["continuations"].items():
            cells = [m, _cell(text), *(_bpb(p["bpb"][j].get(m)) for j in judges)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines
