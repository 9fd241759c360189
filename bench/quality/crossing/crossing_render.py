"""The crossing-price report as Markdown (bench/results/transfer_crossing.md)."""

from __future__ import annotations

from typing import Any

from bench.quality.fusion_proof.proof_stats import OVERALL


def _ci(x: dict[str, Any] | None) -> str:
    if not x or x.get("mean") is None:
        return "n/a"
    ci = x.get("ci95")
    return f"{x['mean']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")


def _frac(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def render(r: dict[str, Any]) -> str:
    """The report: the price with its interval, each KD-minus-CE gap, per arm and seed."""
    p = r["crossing_price"]
    s = r["settings"]
    domains = sorted(p["per_domain"]) or sorted(k for k in r["teacher_test_bpb"] if k != OVERALL)
    keys = [OVERALL, *domains]
    lines = [
        "# The price of crossing tokenizers (issue 31, item 3a)", "",
        f"Teacher {r['teacher']} into one small Llama student "
        f"({r['student']['hidden_size']} wide, {r['student']['num_layers']} layers), with the teacher's own "
        f"tokenizer (`shared`: the exact same-vocabulary path) or its own {r['own_vocab_size']}-token BPE "
        f"(`own`: avokit's byte alignment). Steps {s['steps']} x {s['batch_size']} x {s['seq_len']}, lr {s['lr']}, "
        f"warmup {s['warmup']}, scored every {s['segment_steps']} steps; checkpoint chosen on validation, "
        "test BPB reported (domain-balanced `overall`).", "",
        f"**{p['label']}** over seeds {p['seed_ids']}: {p['reading']}.", "",
        "Crossing price = (kd_own - ce_own) - (kd_shared - ce_shared), bits per byte, mean [95% t interval] "
        "paired by seed; > 0 means the alignment loses KD gain. Kept = mean gap own / mean gap shared.", "",
        "| | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys),
        "| crossing price | " + " | ".join(_ci(p if k == OVERALL else p["per_domain"].get(k)) for k in keys) + " |",
    ]
    for name, gap in (("KD - CE, shared", p["kd_minus_ce_shared"]), ("KD - CE, own BPE", p["kd_minus_ce_own"])):
        lines.append(f"| {name} | " + " | ".join(_ci(gap if k == OVERALL else gap["per_domain"].get(k))
                                               for k in keys) + " |")
    lines.append("| kept share of the shared gain | " + " | ".join(_frac(p["kept_fraction"].get(k)) for k in keys) + " |")
    lines += ["", "## Test BPB per arm and seed (checkpoint chosen on validation)", "",
              "| arm | seed | step | " + " | ".join(keys) + " |", "| --- | ---: | ---: |" + " ---: |" * len(keys)]
    for arm, by in r["chosen_test"].items():
        for seed, v in sorted(by.items(), key=lambda x: int(x[0])):
            counted = p["seed_ids"] and int(seed) in p["seed_ids"]
            step = r["chosen_step"][arm][seed]
            lines.append(f"| {arm} | {seed}{'' if counted else ' (not counted)'} | {step} | "
                         + " | ".join(f"{v[k]:.4f}" for k in keys) + " |")
    t = r["teacher_test_bpb"]
    lines.append(f"| teacher {r['teacher']} | | | " + " | ".join(f"{t[k]:.4f}" for k in keys) + " |")
    lines += ["", "## Validation curves (mean over finished seeds, domain-balanced)", "",
              "| arm | " + " | ".join(f"step {st}" for st in next(iter(r["curves"].values()), {})) + " |"]
    if r["curves"]:
        lines.append("| --- |" + " ---: |" * len(next(iter(r["curves"].values()))))
    for arm, by in r["curves"].items():
        lines.append(f"| {arm} | " + " | ".join(f"{c['validation']:.4f}" for c in by.values()) + " |")
    paths = {a: next(iter(v.values()), None) for a, v in r["vocabulary_path"].items()}
    d = r["data"]
    lines += ["", "## Provenance", "",
              *(f"- {a}: the trainer's map: {v}" for a, v in paths.items()),
              f"- corpus manifest sha256 (every run): {', '.join(r['records']['corpus_manifest_sha256'])}; the "
              f"split files equal the transfer study's: {d['same_split_as_transfer']['identical']}",
              f"- teacher cache: {d['teacher_cache']}",
              f"- commit(s): {', '.join(r['records']['commit'])}; dtype {', '.join(r['records']['dtype'])}; "
              f"CPU {', '.join(r['records']['cpu'])}; torch threads {', '.join(r['records']['torch_threads'])}",
              "- seconds per run (training + scoring), by seed: "
              + "; ".join(f"{a} {', '.join(f'{v:.0f}' for v in by.values())}" for a, by in r["wall_s"].items()),
              f"- load average at each process start: {', '.join(f'{x:.2f}' for x in r['load'] if x is not None)}",
              f"- unfinished runs (not counted): {', '.join(r['unfinished']) or 'none'}", ""]
    return "\n".join(lines)
