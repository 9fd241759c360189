"""Markdown of the complementarity benchmark, rendered from its JSON result only."""

from __future__ import annotations

import datetime as dt

from bench.quality.complementarity.complementarity_stats import BALANCED, BYTES

ORACLES = ("oracle_document", "oracle_span")
MIXTURES = ("uniform_span", "bayes_document", "fixed_share_fitted", "fusion_bpb_softmax",
            "best_fixed_weights", "fixed_weights_cv")
LABELS = {
    "best_single": "best single teacher (chosen per column)",
    "best_teacher_per_domain": "best teacher per domain (chosen on the data)",
    "oracle_document": "*oracle: best teacher per document (looks at the answer)*",
    "oracle_span": "*oracle: best teacher per span (looks at the answer)*",
    "uniform_span": "uniform mix per span",
    "bayes_document": "Bayes mix per document (sequential posterior, uniform prior)",
    "fixed_share_fitted": "Bayes + fixed share per span (rate fitted per domain)",
    "fusion_bpb_softmax": "trainer fusion bpb_softmax per document (T={T}; uses the doc's own BPB)",
    "best_fixed_weights": "best fixed weights per domain (fitted on these documents)",
    "fixed_weights_cv": "fixed weights per domain, two-fold cross-fitted",
}


def _columns(result: dict) -> list[str]:
    domains = list(result["counts"])
    order = [d for d in ("english", "code", "chinese") if d in domains] + \
        [d for d in domains if d not in ("english", "code", "chinese")]
    return [*order, BALANCED, BYTES]


def _head(cols: list[str]) -> list[str]:
    names = {BALANCED: "overall (domain-balanced)", BYTES: "overall (byte-weighted)"}
    return ["| | " + " | ".join(names.get(c, c) for c in cols) + " |",
            "| --- |" + " ---: |" * len(cols)]


def _bpb_table(result: dict, cols: list[str]) -> list[str]:
    bpb = result["bpb"]
    label = {**LABELS, "fusion_bpb_softmax": LABELS["fusion_bpb_softmax"].format(
        T=result["settings"]["fusion_temperature"])}
    rows = [*result["teachers"], "best_single", "best_teacher_per_domain", *ORACLES, *MIXTURES]
    real = [r for r in rows if r not in ORACLES]
    best = {c: min(bpb[r][c] for r in real) for c in cols}
    lines = _head(cols)
    for r in rows:
        cells = []
        for c in cols:
            v = bpb[r][c]
            cells.append(f"**{v:.4f}**" if r not in ORACLES and v <= best[c] + 1e-12 else f"{v:.4f}")
        lines.append(f"| {label.get(r, r)} | " + " | ".join(cells) + " |")
    return lines


def _gain_table(result: dict, cols: list[str]) -> list[str]:
    gain, ci, bpb = result["gain_over_best_single"], result["gain_interval_95"], result["bpb"]
    lines = _head(cols)
    for r in [*ORACLES, *MIXTURES, "best_teacher_per_domain"]:
        cells = []
        for c in cols:
            pct = 100.0 * gain[r][c] / bpb["best_single"][c]
            cells.append(f"{gain[r][c]:+.4f} ({pct:+.1f}%) [{ci[r][c]['lo_pct']:+.1f}, {ci[r][c]['hi_pct']:+.1f}]")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return lines


def _wins_table(result: dict, cols: list[str]) -> list[str]:
    lines = _head(cols)
    for kind in ("documents", "spans"):
        shares = result["wins"][kind]
        for name in shares[cols[0]]:
            lines.append(f"| {kind} won by {name} | " + " | ".join(f"{shares[c][name]:.1%}" for c in cols) + " |")
    return lines


def _counts_table(result: dict) -> list[str]:
    teachers = result["teachers"]
    lines = ["| domain | documents | bytes | spans | bytes/span | " + " | ".join(f"{t} tokens" for t in teachers) + " |",
             "| --- |" + " ---: |" * (4 + len(teachers))]
    total = dict.fromkeys(teachers, 0)
    for d, c in result["counts"].items():
        lines.append(f"| {d} | {c['documents']} | {c['bytes']:,} | {c['spans']:,} | {c['bytes_per_span']:.2f} | "
                     + " | ".join(f"{c['teacher_tokens'][t]:,}" for t in teachers) + " |")
        for t in teachers:
            total[t] += c["teacher_tokens"][t]
    docs = sum(c["documents"] for c in result["counts"].values())
    nbytes = sum(c["bytes"] for c in result["counts"].values())
    spans = sum(c["spans"] for c in result["counts"].values())
    lines.append(f"| all | {docs} | {nbytes:,} | {spans:,} | {nbytes / spans:.2f} | "
                 + " | ".join(f"{total[t]:,}" for t in teachers) + " |")
    return lines


def _machine(result: dict) -> list[str]:
    m = result["machine"]
    lines = [f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; shared with other "
             f"engineers' jobs; at analysis: `{m['uptime_at_analysis']}`"]
    for t, tm in m["capture_timings"].items():
        start = dt.datetime.fromtimestamp(tm["process_start_unix"], dt.timezone.utc).strftime("%H:%M")
        end = dt.datetime.fromtimestamp(tm.get("last_unix", tm["process_start_unix"]), dt.timezone.utc).strftime("%H:%M")
        loads = tm["loadavg_samples"] or [float("nan")]
        lines.append(f"- capture {t}: {tm['shards']} of {tm['shards_planned']} shards ({tm['documents']} documents), "
                     f"{tm['capture_s'] - tm['load_s']:.0f} s scoring + {tm['load_s']:.0f} s model load, "
                     f"{start}-{end} UTC, 1 thread; 1-min load average during it "
                     f"{min(loads):.1f}-{max(loads):.1f} (median {sorted(loads)[len(loads) // 2]:.1f})")
    lines.append(f"- analysis: {result['analysis_wall_s']['total']} s (scoring {result['analysis_wall_s']['scoring']} s)")
    return lines


def render_markdown(result: dict) -> str:
    """The whole report: BPB, gains with intervals, win shares, counts, fitted choices, machine."""
    cols = _columns(result)
    s = result["settings"]
    partial = [t for t in result["teachers"] if not result["coverage"][t]["complete"]]
    out = ["# Complementarity of three teachers across three domains", ""]
    if partial:
        out += [f"**PARTIAL RESULT**: the capture of {', '.join(partial)} had not finished; only the "
                 "documents every teacher has scored are counted (see coverage below).", ""]
    out += ["Bits per byte over exactly the bytes all three teachers cover; spans are the bytes between "
            "offsets where all three tokenizations end a token. Bold: lowest BPB among teachers and "
            "real mixtures (oracles excluded). Produced by `bench/quality/complementarity/complementarity.py` from "
            "`complementarity.json`; every number below is in that file.", "", "## BPB", ""]
    out += _bpb_table(result, cols)
    out += ["", f"## Gain over the best single teacher (BPB, %, and 95% bootstrap interval of the %; "
            f"{s['bootstrap_resamples']} resamples of documents within each domain, fitted choices "
            "re-made in every resample)", ""]
    out += _gain_table(result, cols)
    out += ["", "## Who wins what", "", "Documents: lowest BPB on the document; spans: highest "
            "log-prob of the span (tie: equal within 1e-9 nats). The byte-weighted column pools all "
            "documents / spans.", ""]
    out += _wins_table(result, cols)
    out += ["", "## Text scored", ""] + _counts_table(result)
    out += ["", "## Fitted choices (on all documents of the domain)", ""]
    for d, f in result["fitted"].items():
        out.append(f"- {d}: best single {f['best_single']}; best fixed weights {f['best_fixed_weights']}; "
                   f"fixed-share rate {f['fixed_share_alpha']}; cross-fitted weights per fold "
                   f"{f['fixed_weights_cv_folds']}")
    out += ["", "## Coverage, machine and wall times", ""]
    out += [f"- {t}: {c}" for t, c in result["coverage"].items()]
    out += _machine(result)
    out += ["", "Span boundaries depend on the text, so span-level rows (uniform, fixed weights, fixed "
            "share, fusion, oracle per span) flatter a mixture slightly; teachers, the per-document "
            "Bayes mix and the per-document oracle are exact sequential quantities. A teacher's "
            "probability of a span is that of its own tokenization of the bytes (not summed over "
            "other tokenizations), as in the capture cache.", ""]
    return "\n".join(out)


def readme_row(result: dict) -> str:
    """A suggested row for ``bench/README.md``'s table (printed; pasted by hand)."""
    bpb, ci = result["bpb"], result["gain_interval_95"]
    # rows that fit nothing on the scored documents (fixed-share's rate and the best fixed
    # weights are chosen on them, so they stay out of "best real mixture")
    real = ["uniform_span", "bayes_document", "fusion_bpb_softmax", "fixed_weights_cv"]
    cells = []
    for d in _columns(result)[:-2]:
        best = min(real, key=lambda r: bpb[r][d])
        pct = 100.0 * (bpb["best_single"][d] - bpb[best][d]) / bpb["best_single"][d]
        cells.append(f"{d}: best single {bpb['best_single'][d]:.3f}, oracle doc/span "
                     f"{bpb['oracle_document'][d]:.3f}/{bpb['oracle_span'][d]:.3f}, {best} "
                     f"{bpb[best][d]:.3f} ({pct:+.1f}%, 95% CI {ci[best][d]['lo_pct']:+.1f} to "
                     f"{ci[best][d]['hi_pct']:+.1f})")
    return "; ".join(cells)
