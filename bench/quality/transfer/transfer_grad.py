"""Where does a KD step point? First-order diagnostic for the transfer study (issue 31, item 3c).

For the untouched SmolLM2-135M, on the transfer corpus' training batches exactly as the runs
draw them (seed 0's first ``--batches`` micro-batches), this takes the gradient of each loss
term alone: CE on the gold tokens, the token-level KD term (ungated and with ``kd_gate:
teacher_better``) and the chunk term, each with Gemma's dense targets as the ``kd_gemma``
arm builds them. It also takes the gradient of the *validation* CE of each domain (the
quantity checkpoint choice reads). A term helps held-out text to first order when its
descent direction is aligned with the validation descent direction:

- ``cos``: cosine between the term's gradient and the validation gradient of a domain;
- ``sign``: ``<g_val, sign(g)> / ||g_val||_1``, the first-order validation change of an
  Adam-like first step (Adam's first update is ``lr * sign(g)``), as a fraction of the best
  possible (``sign(g_val)`` itself scores 1).

So ``sign`` answers "if one optimiser step followed only this term, how much of the best
possible first-order validation gain would it get", per domain. CE, KD and their sum are
compared at the weights the runs use (ce 1, kd 1, chunk 0.5). One point in weight space (the
start), a few batches: a direction, not a training result.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.transfer.transfer_grad --batches 4
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from avokit.align import byteify
from avokit.corpus import load_split
from avokit.evaluate.run import cpu_model
from avokit.losses.ce import cross_entropy
from avokit.student import build_student
from avokit.teachers.scoring import resolve_start_token_id
from avokit.train.data import batch_rows, pack_documents, read_split
from avokit.train.kd_terms import KDSetup, teacher_terms
from avokit.train.run import ensure_student_tokenizer, fusion, teacher_sources
from bench.provenance import Provenance
from bench.quality.transfer.transfer import arm_recipe
from bench.quality.transfer.transfer_signal import SETTINGS
from bench.results_io import write_json

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "bench" / "results"


def _grad(model: Any, loss: torch.Tensor, retain: bool) -> torch.Tensor:
    """The flat gradient of ``loss`` over every trainable parameter (float32, detached)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    # kept in bfloat16 (half the memory: a dozen of these share the machine with training runs);
    # alignment() takes the products in float32
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.bfloat16)
                      for g, p in zip(grads, params)])


def validation_grads(model: Any, recipe: Any, tokenizer: Any, rows: int) -> dict[str, torch.Tensor]:
    """Per domain: the gradient of the mean validation CE over (up to ``rows``) packed rows."""
    docs = read_split(recipe.run_dir, "validation")
    start = resolve_start_token_id(tokenizer)
    out: dict[str, torch.Tensor] = {}
    for domain in sorted({d.domain for d in docs}):
        packed = pack_documents([d for d in docs if d.domain == domain], tokenizer, SETTINGS["seq_len"],
                                tokenizer.eos_token_id, require_row=False, start_id=start)
        total: torch.Tensor | None = None
        n = min(rows, packed.n_rows)
        for r in range(n):
            x, y = packed.row_tokens(np.array([r]))
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            logits = model(input_ids=xt).logits.float()
            ce = cross_entropy(logits, xt, torch.ones_like(yt, dtype=torch.bool), targets=yt)
            g = _grad(model, ce / n, retain=False)
            total = g if total is None else total + g
        assert total is not None, f"no validation rows for {domain}"
        out[domain] = total
    return out


def term_grads(model: Any, recipe: Any, tokenizer: Any, batches: int) -> dict[str, torch.Tensor]:
    """Summed over the first ``batches`` training micro-batches of seed 0: the gradient of CE,
    of the KD term ungated and gated, and of the chunk term (Gemma, dense targets)."""
    from avokit.recipe.train import LossConfig

    start = resolve_start_token_id(tokenizer)
    packed = pack_documents(load_split(recipe, "train"), tokenizer, SETTINGS["seq_len"], tokenizer.eos_token_id,
                            start_id=start)
    sources = teacher_sources(recipe, tokenizer)
    doc_w, token_w = fusion(recipe, packed, sources)
    cfgs = {"kd": recipe.train.loss, "kd_gated": LossConfig(**{**recipe.train.loss.model_dump(),
                                                                 "kd_gate": "teacher_better"})}
    setups = {name: KDSetup(sources=sources, doc_weights=doc_w, loss_cfg=cfg, token_weights=token_w,
                            student_bytes=byteify(tokenizer, name="student")) for name, cfg in cfgs.items()}
    sums: dict[str, torch.Tensor] = {}
    for micro in range(batches):
        rows = batch_rows(packed.n_rows, recipe.train.seed, micro, SETTINGS["batch_size"])
        x, y = packed.row_tokens(rows)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        logits = model(input_ids=xt).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        terms = {"ce": cross_entropy(logits, xt, torch.ones_like(yt, dtype=torch.bool), logprobs, targets=yt)}
        for name, kd in setups.items():
            (t,) = teacher_terms(logits, logprobs, yt, packed, rows, kd, "cpu").values()
            terms[name] = t["kd"]
            terms.setdefault("chunk", t["chunk"])
        names = list(terms)
        for i, name in enumerate(names):
            g = _grad(model, terms[name] / batches, retain=i < len(names) - 1)
            sums[name] = g if name not in sums else sums[name] + g
    return sums


def alignment(g: torch.Tensor, g_val: torch.Tensor) -> dict[str, float]:
    """``cos`` and ``sign`` of a term's gradient against a validation gradient (docstring)."""
    g, g_val = g.float(), g_val.float()
    cos = float(torch.dot(g, g_val) / (g.norm() * g_val.norm()).clamp(min=1e-30))
    sign = float(torch.dot(g_val, torch.sign(g)) / g_val.abs().sum().clamp(min=1e-30))
    return {"cos": cos, "sign": sign}


def main() -> None:
    """Measure and write bench/results/transfer_grad.{json,md}."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-transfer")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--val-rows", type=int, default=12, help="validation rows per domain (at most)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    recipe = arm_recipe(args.runs, "kd_gemma", 0, SETTINGS)
    tokenizer = ensure_student_tokenizer(recipe)
    assert recipe.student.pretrained is not None  # arm_recipe starts from SmolLM2's folder
    student_cfg = recipe.student.model_copy(update={"pretrained": str(recipe.student.pretrained_dir(recipe.base_dir))})
    model = build_student(student_cfg, tokenizer)
    model.eval()  # no dropout: the gradients of one fixed function
    val = validation_grads(model, recipe, tokenizer, args.val_rows)
    terms = term_grads(model, recipe, tokenizer, args.batches)
    w = recipe.train.loss
    # weighted sums built one at a time: each flat gradient is ~0.5 GB
    combos = {"ce": lambda: terms["ce"], "kd": lambda: terms["kd"], "kd_gated": lambda: terms["kd_gated"],
              "chunk": lambda: terms["chunk"],
              "ce+kd+chunk (kd_gemma)": lambda: (w.ce_weight * terms["ce"].float() + w.kd_weight * terms["kd"].float()
                                                 + w.chunk_weight * terms["chunk"].float()),
              "ce+kd_gated+chunk (kd_gemma_gated)": lambda: (w.ce_weight * terms["ce"].float() + w.kd_weight
                                                             * terms["kd_gated"].float()
                                                             + w.chunk_weight * terms["chunk"].float()),
              "ce+kd (kd_gemma_nochunk)": lambda: w.ce_weight * terms["ce"].float() + w.kd_weight * terms["kd"].float()}
    val["all (sum of domains)"] = cast(torch.Tensor, sum(v.float() for v in val.values())).to(torch.bfloat16)
    res = {}
    for name, make in combos.items():
        g = make()
        res[name] = {dom: alignment(g, gv) for dom, gv in val.items()}
        del g
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(),
            "load": [round(x, 2) for x in os.getloadavg()], "seconds": round(time.perf_counter() - t0, 1),
            "batches": args.batches, "val_rows_per_domain": args.val_rows, "teacher": "gemma3-270m",
            "norms": {k: float(v.float().norm()) for k, v in {**terms, **{f"val {d}": g for d, g in val.items()}}.items()}}
    lines = ["# Where a KD step points: gradient alignment with validation (transfer study, issue 31)", "",
             f"SmolLM2-135M untouched, float32; Gemma 3 270M dense targets; seed 0's first {args.batches} "
             f"training micro-batches (4 x 256); validation CE per domain over <= {args.val_rows} rows. "
             f"{meta['when']}, {meta['cpu']}, load {meta['load']}, {meta['seconds']} s. `sign` = first-order "
             "validation gain of one Adam-like step along the term, as a share of the best possible (1.0); "
             "`cos` = cosine with the validation gradient. Higher is better for both.", "",
             "| term | " + " | ".join(f"{d} sign / cos" for d in val) + " |",
             "| --- | " + " | ".join("---:" for _ in val) + " |"]
    for name, per in res.items():
        lines.append(f"| {name} | " + " | ".join(f"{v['sign']:.3f} / {v['cos']:.3f}" for v in per.values()) + " |")
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "transfer_grad.json", {"meta": meta, "alignment": res}, Provenance.collect(
        dtype="float32", corpus=args.runs / "data" / "corpus" / "manifest.json"))
    (RESULTS / "transfer_grad.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
