"""On-policy distillation from two teachers into a pretrained student (issue 33): offline KD,
on-policy KD mixed with offline, and sequence-level KD from one shared start, compared at equal
steps and at equal wall-clock time on the student's own continuations judged by the teachers.

Student SmolLM2-135M (its pretrained weights and tokenizer, float32 on the CPU); teachers Gemma 3
270M and Qwen2.5-Coder-0.5B; the fusion study's data folder (same corpus, splits and caches:
linked, never captured again). See README.md here for the arms, the pilot and the verdict.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.onpolicy_pretrained.onpolicy prepare
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.onpolicy_pretrained.onpolicy train --steps 40 \\
        --segment-steps 10 --offline-steps 80 --seeds 200 --arms start offline on seq
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.onpolicy_pretrained.onpolicy evaluate --seeds 200 --design pilot
    .venv/bin/python -m bench.quality.onpolicy_pretrained.onpolicy report --design pilot --seeds 200 \\
        --out bench/results/onpolicy_pretrained_pilot

Every command is resumable; the options (``--start``, ``--mix``, ...) are recorded in
``RUNS/options.json`` by the first command and a later one with other values is refused.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.quality.onpolicy_pretrained.arms import (
    DESIGNS,
    Options,
    add_options,
    lock_options,
    make_study,
)
from bench.quality.study.cli import study_parser
from bench.quality.study.study import lock_settings

DEFAULT_RUNS = "runs/bench-onpolicy-pretrained"
DEFAULT_OUT = "bench/results/onpolicy_pretrained"
DEFAULT_ARMS = ["start", "offline", "on", "seq"]


def parser() -> argparse.ArgumentParser:
    """The framework's study parser (training settings) plus this study's options."""
    ap = study_parser(make_study(Path(DEFAULT_RUNS), Options(), None), __doc__ or "", DEFAULT_RUNS, DEFAULT_OUT,
                      DEFAULT_ARMS, commands=("evaluate",))
    ap.add_argument("--data", type=Path, default=Path("runs/bench-fusion-pretrained/data"),
                    help="prepare: the fusion study's data folder, linked as RUNS/data")
    ap.add_argument("--design", choices=list(DESIGNS), default="test",
                    help="evaluate/report: " + "; ".join(f"{k}: {v}" for k, v in DESIGNS.items()))
    ap.add_argument("--keep-models", action="store_true",
                    help="evaluate: keep offline's weights at checkpoints no comparison needs")
    add_options(ap)
    return ap


def run(args: argparse.Namespace) -> None:
    """One command; the options are locked first (``train`` also locks the settings)."""
    from bench.quality.onpolicy_pretrained import evaluation, report, seqdata, training

    runs: Path = args.runs
    if args.command == "capture":
        raise SystemExit("capture: this study captures nothing; its data is the fusion study's (`prepare` links it)")
    if args.command == "prepare":  # the teacher-written text only where seq is one of --arms
        seqdata.link_data(runs, args.data)
        opts = lock_options(runs, args, None)
        if "seq" in args.arms:
            print(json.dumps(seqdata.prepare_seq(runs, opts), indent=1, default=str)[:4000])
        return
    if args.command == "train":
        if not (runs / "data" / "data.json").is_file():
            raise SystemExit(f"{runs}/data/data.json missing: run `prepare` first")
        settings = lock_settings(runs, args)
        opts = lock_options(runs, args, settings["steps"])
        if opts.offline_steps % settings["segment_steps"]:
            raise SystemExit(f"--offline-steps {opts.offline_steps} is not a multiple of --segment-steps "
                             f"{settings['segment_steps']}")
        training.train(runs, opts, settings, args.arms, args.seeds if args.seeds is not None else [0, 1, 2],
                       args.keep_checkpoints)
        return
    if not (runs / "settings.json").is_file():
        raise SystemExit(f"{args.command}: {runs}/settings.json missing (train first)")
    settings = json.loads((runs / "settings.json").read_text())
    opts = lock_options(runs, args, settings["steps"])
    if args.command == "evaluate":
        seeds = args.seeds if args.seeds is not None else report.seeds_found(runs, None)
        n = evaluation.evaluate(runs, opts, settings, seeds, args.design, args.keep_models)
        print(f"[onpolicy_pretrained] evaluated {n} points")
    else:
        result = report.report(runs, args.out, opts, args.seeds, args.design)
        print(json.dumps(result["verdict"], indent=1))


def main() -> None:
    """prepare | train | evaluate | report."""
    run(parser().parse_args())


if __name__ == "__main__":
    main()
