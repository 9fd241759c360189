"""Markdown of the on-policy study (bench/results/onpolicy_pretrained.md) from its JSON."""

from __future__ import annotations

from typing import Any

from bench.quality.onpolicy_pretrained.stats import PRIMARY

ORDER = ["start", "offline", "offline@on_time", "on", "seq", "on_jsd", "on_fkl", "on_mix25", "on_t07", "on_gated",
         "on_add"]


def _ci(d: dict[str, Any] | None, digits: int = 4) -> str:
    if d is None:
        return "(fewer than 2 paired seeds)"
    lo, hi = d["ci95"]
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] ({len(d['seeds'])} seeds)"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _clip(text: str, n: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ⏎ ")
    return text if len(text) <= n else text[:n] + " …"


def _verdict(res: dict[str, Any]) -> list[str]:
    v, bpb = res["verdict"], res["verdict"]["bpb"]
    et = v["equal_time"]
    lines = ["## Verdict", "",
             f"**{'holds' if v['holds'] else 'does not hold'}** over {v['seeds']} paired seeds: {v['why']}. "
             f"Primary metric `{PRIMARY}`: the mean over domains of the two teachers' mean bits per byte of the "
             f"student's own continuations of {res['split']} prompts (lower is better).", "",
             "| paired difference | mean [95% CI] |", "| --- | --- |",
             f"| on − offline, {PRIMARY}, equal steps | {_ci(v['on_minus_offline'])} |",
             f"| seq − offline, {PRIMARY}, equal steps | {_ci(v['seq_minus_offline'])} |",
             f"| on − offline, {bpb}, equal steps | {_ci(v['bpb_on_minus_offline'])} |",
             f"| on − offline, {PRIMARY}, equal wall time | {_ci(et['on_minus_offline'])} |",
             f"| on − offline, {bpb}, equal wall time | {_ci(et['bpb_on_minus_offline'])} |", ""]
    if et["per_seed"]:
        lines += ["Equal wall time: `on`'s train wall seconds (setup included, scoring excluded) against the offline "
                  "checkpoint with the largest cumulative train time not above it:", "",
                  "| seed | on s | offline step | offline s | offline shorter |", "| ---: | ---: | ---: | ---: | --- |"]
        lines += [f"| {s} | {t['on_train_s']:.0f} | {t['step']} | {t['offline_train_s']:.0f} | {t['offline_shorter']} |"
                  for s, t in et["per_seed"].items()]
        lines.append("")
    return lines


def _means(res: dict[str, Any]) -> list[str]:
    bpb = res["verdict"]["bpb"]
    lines = ["## Per point (mean over seeds)", "", f"| point | seeds | {PRIMARY} | {bpb} | distinct-2 | distinct-3 |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for p in [p for p in ORDER if p in res["means"]] + sorted(set(res["means"]) - set(ORDER)):
        m = res["means"][p]
        lines.append(f"| {p} | {len(res['points'][p])} | {m[PRIMARY]:.4f} | {m[bpb]:.4f} | {m['distinct2']:.3f} | "
                     f"{m['distinct3']:.3f} |")
    lines += ["", "Per domain (minus offline, equal steps; judged BPB | " + bpb + "):", "",
              "| arm | domain | judged | " + bpb + " |", "| --- | --- | --- | --- |"]
    for name, by in res["per_domain"].items():
        lines += [f"| {name} | {d} | {_ci(x['judged'])} | {_ci(x['bpb'])} |" for d, x in by.items()]
    return [*lines, ""]


def _noise(res: dict[str, Any]) -> list[str]:
    noise = res.get("sampling_noise") or {}
    if not noise:
        return []
    lines = ["## Within each seed: what the prompts alone could make", "",
             f"Each arm minus offline (equal steps) on {PRIMARY}, with a paired bootstrap over the evaluation prompts "
             "(documents resampled within each domain, each with all its draws, the same resample for both points): its sd is a floor under the seed-to-seed "
             "spread of a paired difference, so a difference inside this interval cannot be told from the choice of "
             "prompts.", "", "| arm | seed | minus offline | bootstrap sd | bootstrap 95% |",
             "| --- | ---: | ---: | ---: | --- |"]
    for arm, by_seed in noise.items():
        lines += [f"| {arm} | {s} | {n['mean']:+.4f} | {n['sd']:.4f} | [{n['ci95'][0]:+.4f}, {n['ci95'][1]:+.4f}] |"
                  for s, n in by_seed.items()]
    return [*lines, ""]


def _cost(res: dict[str, Any]) -> list[str]:
    lines = ["## Cost (mean over seeds)", "",
             "Train wall time per step includes the run's setup (model, caches, teachers for live scoring) in its first "
             "segment and excludes the scoring after each segment; on-policy micro-batches count the tokens of their "
             "samples. Timings depend on the machine's load (recorded per segment in the runs).", "",
             "| arm | s / step | tokens / s | sampling share | live scoring share |", "| --- | ---: | ---: | ---: | ---: |"]
    for arm, c in res["cost"].items():
        if arm == "seq_data" or not isinstance(c, dict):
            continue
        m = c["mean"]
        lines.append(f"| {arm} | {_num(m.get('s_per_step'))} | {_num(m.get('tokens_per_s'), '.1f')} | "
                     f"{_num(m.get('sampling_share'), '.1%')} | {_num(m.get('scoring_share'), '.1%')} |")
    seq = res["cost"].get("seq_data")
    if seq:  # one entry per prepare process (a resumed one adds the rest)
        capture = {t: sum(e["capture_wall_s"].get(t, 0.0) for e in seq) for t in seq[-1]["capture_wall_s"]}
        lines += ["", f"Teacher-written text for `seq` (once, shared by every seed): generation "
                  f"{sum(e['generate_wall_s'] for e in seq):.0f} s, capture by "
                  + ", ".join(f"{t} {s:.0f} s" for t, s in capture.items()) + "."]
    return [*lines, ""]


def _samples(res: dict[str, Any]) -> list[str]:
    s = res["samples"]
    if not s:
        return []
    lines = [f"## Side by side (seed {s['seed']}, sampling seed {res['options']['sample_seed']})", ""]
    for dom, rows in s["domains"].items():
        for row in rows:
            lines += [f"**{dom}** `{row['doc_id'][:24]}` prompt: {_clip(row['prompt'], 200)}", "",
                      "| point | continuation |", "| --- | --- |"]
            lines += [f"| {p} | {_clip(row[p])} |" for p in ("start", "offline", "on", "seq") if p in row]
            lines.append("")
    return lines


def render(res: dict[str, Any]) -> str:
    """The report: verdict, per-point means, per-domain differences, pilot choice, cost, samples."""
    o, st = res["options"], res["settings"]
    lines = [f"# On-policy vs offline vs sequence-level KD, two teachers, pretrained student ({res['label']})", "",
             f"{res['created']}. Student SmolLM2-135M; teachers Gemma 3 270M and Qwen2.5-Coder-0.5B; the fusion study's "
             f"data ({res['data']}). Start: {o['start']}. {st['steps']} steps × {st['batch_size']} × {st['seq_len']} "
             f"tokens (offline {o['offline_steps']}), lr {st['lr']}, warmup {st['warmup']}, constant; fusion "
             f"{o['fusion']}. On-policy: mix {o['mix']}, {o['divergence']}, temperature {o['temperature']}, gates "
             f"{o['gates']}, combine {o.get('combine', 'replace')}, {o['prompt_tokens']} prompt + {o['max_new_tokens']} new tokens. Evaluation: "
             f"{o['eval_prompts']} {res['split']} prompts per domain ({o['eval_prompt_tokens']} tokens), "
             f"{o['eval_new_tokens']} new tokens at temperature 1, {o.get('eval_samples', 1)} sample(s) per prompt, sampling seed "
             f"{o['sample_seed']}.", ""]
    lines += _verdict(res) + _means(res)
    if res["pilot"]:
        lines += ["## Pilot choice", "", f"Rule: {res['pilot']['rule']}. Chosen: **{res['pilot']['chosen']}**.", "",
                  "| arm | seeds | judged − offline | validation BPB − offline | sd |", "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {a} | {r['seeds']} | {r['judged_minus_offline']:+.4f} | {r['validation_bpb_minus_offline']:+.4f} "
                  f"| {_num(r['sd_of_paired_differences'], '.4f')} |" for a, r in res["pilot"]["candidates"].items()]
        lines.append("")
    lines += _noise(res) + _cost(res) + _samples(res)
    if res["missing"]:
        lines += ["Not yet evaluated: " + "; ".join(res["missing"]), ""]
    return "\n".join(lines)
