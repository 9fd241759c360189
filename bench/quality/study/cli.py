"""The command line every study shares (``prepare | capture | train | report``): one parser
with the training settings of :func:`bench.quality.study.study.lock_settings`, and the
commands that do not depend on the study's report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.quality.study import data as study_data
from bench.quality.study.runner import train
from bench.quality.study.study import Study, lock_settings


def study_parser(study: Study, doc: str, runs: str, out: str, arms: list[str],
                 commands: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """The parser of a study's CLI (``runs``/``out``: default folders; ``arms``: trained by
    default; ``commands``: the study's own, besides prepare/capture/train/report); a study adds
    its own report options to it."""
    teachers = list(study.data.teachers)
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["prepare", "capture", "train", *commands, "report"])
    ap.add_argument("--runs", type=Path, default=Path(runs))
    ap.add_argument("--teacher", choices=teachers, help="capture: the one teacher this process captures")
    ap.add_argument("--teachers", nargs="+", default=teachers, choices=teachers, help="prepare: capture these")
    ap.add_argument("--inside-top-k", type=int, default=None,
                    help="prepare: capture prefix cuts of this width (capture.inside_top_k) for these runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="train: these seeds (default 0 1 2); report: count only these (default: all finished)")
    ap.add_argument("--arms", nargs="+", default=arms, choices=list(study.arms))
    ap.add_argument("--steps", type=int, default=None, help="train: total steps per run (default: as recorded)")
    ap.add_argument("--segment-steps", type=int, default=None,
                    help="train: steps between scored checkpoints (default: as recorded; 10 for the first train)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--score-max-length", type=int, default=512,
                    help="student scoring window in tokens (the teachers' capture max_length)")
    ap.add_argument("--keep-checkpoints", action="store_true", help="train: keep each finished run's checkpoints")
    ap.add_argument("--out", type=Path, default=Path(out))
    return ap


def run_command(study: Study, args: argparse.Namespace, capture_hook: Any = None) -> bool:
    """Run ``prepare``, ``capture`` or ``train`` (True), or leave ``report`` to the study (False).
    ``capture_hook(args)``: the study's own capture of one teacher (default: avokit's capture
    of the study's data recipe)."""
    if args.command == "prepare":
        if args.inside_top_k is not None:
            study_data.set_inside_top_k(args.runs, args.inside_top_k)
        info = study_data.prepare(study.data, args.runs, args.teachers, getattr(args, "reuse", None))
        print(json.dumps(info, indent=1, default=str)[:4000])
    elif args.command == "capture":
        if not args.teacher:
            raise SystemExit("capture: give --teacher")
        if capture_hook is not None:
            capture_hook(args)
        else:
            study_data.capture(study.data, args.runs, args.teacher)
    elif args.command == "train":
        if not (args.runs / "data" / "data.json").is_file():
            raise SystemExit(f"{args.runs}/data/data.json missing: run `{study.data.module} prepare` first")
        settings = lock_settings(args.runs, args)
        train(study, args.runs, args.arms, args.seeds if args.seeds is not None else [0, 1, 2], settings,
              args.keep_checkpoints)
    else:
        return False
    return True
