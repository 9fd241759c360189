"""Cost of an on-policy step against an offline step (issue 16), with real teachers.

Uses a finished ``avokit distill`` run (default ``avocado-mini``: its corpus, student tokenizer
and the three teachers' caches). The same freshly built student takes ``--steps`` offline KD
steps (corpus rows, cached targets) and ``--steps`` on-policy steps (it samples continuations,
every teacher scores them live), each followed by backward and an optimizer step. Reported per
step and per 1,000 trained tokens: wall time, and for on-policy steps the share spent sampling
and in each teacher's live scoring. Writes bench/results/onpolicy_cost.{json,md}.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.train.onpolicy_cost [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from bench.provenance import Provenance
from bench.results_io import write_json
from bench.train.run import machine

OUT = Path(__file__).resolve().parents[1] / "results" / "onpolicy_cost"


class Timed:
    """Wraps a callable and adds its wall time to ``totals[name]`` (measurement only)."""

    def __init__(self, fn: Any, name: str, totals: dict[str, float]) -> None:
        self.fn, self.name, self.totals = fn, name, totals

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.totals[self.name] += time.perf_counter() - t0


def run(recipe_name: str, steps: int, batch: int, new_tokens: int) -> dict[str, Any]:
    """Time ``steps`` offline and ``steps`` on-policy steps of one student."""
    import avokit.train.on_policy as onp_mod
    from avokit.recipe import load_recipe
    from avokit.recipe.train import OnPolicyConfig
    from avokit.student import build_student
    from avokit.teachers.scoring import resolve_start_token_id
    from avokit.train.data import pack_documents
    from avokit.train.kd_terms import KDSetup
    from avokit.train.loop import _micro_loss
    from avokit.train.run import (
        ensure_student_tokenizer,
        fusion_weights,
        on_policy_setup,
        teacher_sources,
    )

    recipe = load_recipe(recipe_name)
    op = OnPolicyConfig(mix=1.0, prompt_tokens=32, max_new_tokens=new_tokens)
    recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"on_policy": op, "batch_size": batch})})
    cfg = recipe.train
    tok = ensure_student_tokenizer(recipe)
    from avokit.corpus import load_split

    packed = pack_documents(load_split(recipe, "train"), tok, cfg.seq_len, tok.eos_token_id,
                            start_id=resolve_start_token_id(tok))
    sources = teacher_sources(recipe, tok)
    kd = KDSetup(sources, fusion_weights(recipe, packed, sources), cfg.loss)
    t0 = time.perf_counter()
    onp = on_policy_setup(recipe, tok, packed, kd)
    load_s = time.perf_counter() - t0
    totals: dict[str, float] = defaultdict(float)
    onp_mod.sample = Timed(onp_mod.sample, "sampling", totals)
    trained: list[int] = []
    real_pack = onp_mod.pack_documents

    def counting_pack(*a: Any, **k: Any) -> Any:  # the tokens an on-policy step trains on
        packed = real_pack(*a, **k)
        trained.append(int(packed.stream.shape[0]) - 1)
        return packed

    onp_mod.pack_documents = counting_pack
    for t in onp.teachers:
        t.score = Timed(t.score, f"teacher {t.info.name}", totals)  # type: ignore[method-assign]
    torch.manual_seed(0)
    model = build_student(recipe.student, tok).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    out: dict[str, Any] = {}
    for kind in ("offline", "on-policy"):
        times, tokens = [], []
        for step in range(steps + 1):  # step 0 warms up (first-call allocations), not counted
            rows = np.arange(step * batch, (step + 1) * batch) % packed.n_rows
            before = dict(totals)
            t0 = time.perf_counter()
            if kind == "offline":
                loss, _, _ = _micro_loss(model, packed, rows, kd, cfg.loss, "cpu")
                n_tok = batch * cfg.seq_len
            else:
                loss, _, _ = onp_mod.on_policy_loss(model, model, onp, step, 0, batch, "cpu")
                n_tok = trained[-1]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            wall = time.perf_counter() - t0
            if step:
                times.append({"wall_s": wall, **{k: totals[k] - before.get(k, 0.0) for k in totals}})
                tokens.append(n_tok)
        out[kind] = {"steps": times, "tokens_per_step": tokens}
    for t in onp.teachers:
        t.close()
    return {"teacher_load_s": load_s, **out}


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """Means per step, per 1k trained tokens, and the shares of an on-policy step."""
    summary: dict[str, Any] = {}
    for kind in ("offline", "on-policy"):
        steps = res[kind]["steps"]
        wall = float(np.mean([s["wall_s"] for s in steps]))
        tok = float(np.mean(res[kind]["tokens_per_step"]))
        summary[kind] = {"wall_s_per_step": wall, "tokens_per_step": tok, "wall_s_per_1k_tokens": 1000 * wall / tok}
        if kind == "on-policy":
            parts = {k: float(np.mean([s.get(k, 0.0) for s in steps])) for k in steps[0] if k != "wall_s"}
            summary[kind]["share"] = {k: v / wall for k, v in parts.items()}
    return summary


def main() -> None:
    """Run, write JSON and Markdown."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="avocado-mini")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    info = machine()
    res = run(args.recipe, args.steps, args.batch, args.new_tokens)
    info["load_avg_at_end"] = os.getloadavg()
    summary = summarise(res)
    result = {"machine": info, "args": vars(args), "summary": summary, "raw": res,
              "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    from avokit.recipe import load_recipe

    corpus = load_recipe(args.recipe).run_dir / "corpus" / "manifest.json"
    write_json(OUT.with_suffix(".json"), result, Provenance.collect(dtype="float32", corpus=corpus))
    on, off = summary["on-policy"], summary["offline"]
    lines = ["# On-policy step vs offline step", "",
             f"{result['created']}, {info['cpu']} ({info['nproc']} cores), load {info['load_avg_at_start']} -> "
             f"{info['load_avg_at_end']}; recipe {args.recipe}, batch {args.batch}, {args.steps} timed steps each "
             f"(after one warm-up), on-policy: 32 prompt tokens + {args.new_tokens} sampled; teachers loaded once "
             f"in {res['teacher_load_s']:.1f} s.", "",
             "| step | tokens / step | wall s / step | wall s / 1k tokens | share of the step |",
             "| --- | ---: | ---: | ---: | --- |",
             f"| offline KD | {off['tokens_per_step']:.0f} | {off['wall_s_per_step']:.2f} | "
             f"{off['wall_s_per_1k_tokens']:.2f} | |",
             f"| on-policy KD | {on['tokens_per_step']:.0f} | {on['wall_s_per_step']:.2f} | "
             f"{on['wall_s_per_1k_tokens']:.2f} | " + ", ".join(f"{k} {v:.0%}" for k, v in on["share"].items()) + " |",
             ""]
    OUT.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
