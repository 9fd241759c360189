"""The on-policy study's options, its table of arms and the :class:`Study` objects that train
them (bench/quality/study).

Every arm of a seed starts from one model, ``--start``: the pretrained SmolLM2-135M
(``pretrained``), or the ``warm`` run's weights after N steps of offline KD from it
(``offline:N``, one warm run per seed). The trained arms then share the data order, steps,
learning rate and loss (the fusion study's ``BEST`` with ``train.fusion.mode`` = ``--fusion``):
``offline`` (cached targets on the corpus, trained ``--offline-steps`` so that a checkpoint at
``on``'s wall time exists), ``on`` (the same, a share ``mix`` of the micro-batches written by
the student and scored live by both teachers), ``seq`` (the same on the corpus plus the
teachers' continuations of training prefixes, captured by both teachers: seqdata.py) and the
pilot's one-factor variants of ``on``.

The options that change what a run or an evaluation is are recorded once per runs folder
(``options.json``) and a later command with other values is refused (``offline_steps`` may
grow, as ``--steps`` may).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from bench.quality.fusion_pretrained.fusion import BEST
from bench.quality.fusion_pretrained.fusion_data import FUSION_DATA
from bench.quality.study.data import _write_json, student_dir
from bench.quality.study.runner import split_scores
from bench.quality.study.study import Arm, Study
from bench.quality.transfer.transfer_data import GEMMA, QWEN

BOTH = [GEMMA, QWEN]
DATA = FUSION_DATA  # the corpus and captures (the fusion study's); tests put a tiny one here
WARM = "warm"
SEQDATA = "seqdata"  # runs/seqdata: the teacher-written text and the caches that hold it
OPTIONS = "options.json"
# one factor of `on` changed each: the pilot's candidates (names fixed, values relative to `on`)
PILOT_VARIANTS: dict[str, dict[str, Any]] = {
    "on_jsd": {"divergence": "jsd"}, "on_fkl": {"divergence": "forward_kl"}, "on_mix25": {"mix": 0.25},
    "on_t07": {"temperature": 0.7}, "on_gated": {"gates": "run"},
    # the samples' loss added to the corpus micro-batch's instead of replacing it (every step
    # sees the whole corpus batch, as offline's do)
    "on_add": {"combine": "add"}}
ON_ARMS = ("on", *PILOT_VARIANTS)
TRAINED = (WARM, *ON_ARMS, "seq", "offline")  # the order a seed's runs train in: `on` before `offline`
CHOICES = {"fusion": ["fixed", "bpb_softmax", "min_ce", "span_softmax"],
           "divergence": ["forward_kl", "reverse_kl", "jsd", "tvd"], "gates": ["run", "none"],
           "combine": ["replace", "add"]}
DESIGNS = {"pilot": "validation prompts: choose mix, divergence, temperature, gates and start on pilot seeds",
           "test": "held-out test prompts: the pre-registered arms on fresh seeds"}


@dataclass(frozen=True)
class Options:
    """What the runs of one folder share beyond the training settings (settings.json)."""

    start: str = "pretrained"  # pretrained | offline:<steps>
    fusion: str = "span_softmax"
    offline_steps: int = 0  # 0: the same as --steps
    mix: float = 0.5
    divergence: str = "reverse_kl"
    temperature: float = 1.0
    gates: str = "none"
    combine: str = "replace"  # replace | add (train.on_policy.combine)
    prompt_tokens: int = 32
    max_new_tokens: int = 64
    top_k: int = 32  # the teachers' live top-k (the caches' is 32)
    gen_prompts: int = 20  # seq: training prefixes per domain each teacher continues
    gen_prefix_chars: int = 120
    gen_tokens: int = 96
    eval_prompts: int = 12  # held-out prompts per domain
    eval_prompt_tokens: int = 32
    eval_new_tokens: int = 64
    eval_samples: int = 1  # continuations per held-out prompt, each its own draw (the metric pools them)
    sample_seed: int = 1234

    @property
    def start_steps(self) -> int:
        """N of ``offline:N`` (0 for the pretrained start)."""
        return 0 if self.start == "pretrained" else int(self.start.split(":", 1)[1])

    def on_policy(self, **change: Any) -> dict[str, Any]:
        """The ``train.on_policy`` section of ``on`` (with ``change`` for a pilot variant)."""
        return {"mix": self.mix, "prompt_tokens": self.prompt_tokens, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "divergence": self.divergence, "gates": self.gates,
                "combine": self.combine, "top_k": self.top_k, **change}


def parse_start(text: str) -> str:
    """``--start``: ``pretrained`` or ``offline:N`` with N >= 1."""
    if text == "pretrained":
        return text
    kind, _, steps = text.partition(":")
    if kind != "offline" or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"--start must be 'pretrained' or 'offline:<steps>', got {text!r}")
    return f"offline:{int(steps)}"


def add_options(ap: argparse.ArgumentParser) -> None:
    """The :class:`Options` as CLI flags (``--offline-steps``, ``--mix``, ...), defaults None:
    a flag not given takes the value recorded in the runs folder, else the default."""
    for f in fields(Options):
        flag = "--" + f.name.replace("_", "-")
        kind: Callable[[str], Any] = parse_start if f.name == "start" else type(f.default)
        ap.add_argument(flag, type=kind, default=None, choices=CHOICES.get(f.name),
                        help=f"(default {f.default}; recorded in {OPTIONS})")


def lock_options(runs: Path, args: argparse.Namespace, steps: int | None) -> Options:
    """The options of these runs: those recorded, with what ``args`` gives; recorded by the
    first command, refused when they differ (``offline_steps`` may only grow)."""
    path = runs / OPTIONS
    saved = json.loads(path.read_text()) if path.is_file() else {}
    given = {f.name: getattr(args, f.name) for f in fields(Options) if getattr(args, f.name, None) is not None}
    opts = Options(**{**saved, **given})
    if not opts.offline_steps and steps is not None:
        opts = Options(**{**asdict(opts), "offline_steps": steps})
    diff = {k: (saved[k], v) for k, v in asdict(opts).items() if k in saved and saved[k] != v and k != "offline_steps"}
    if diff:
        raise SystemExit(f"{path}: these runs were made with other options (saved, given): {diff}; "
                         "use another --runs folder")
    if saved.get("offline_steps", 0) > opts.offline_steps:
        raise SystemExit(f"{path}: --offline-steps {opts.offline_steps} below the {saved['offline_steps']} recorded")
    if opts.eval_samples < 1:
        raise SystemExit(f"--eval-samples must be at least 1 (draws per held-out prompt), got {opts.eval_samples}")
    if steps is not None and opts.offline_steps < steps:
        raise SystemExit(f"--offline-steps {opts.offline_steps} is below --steps {steps}: offline trains at least as long")
    _write_json(path, asdict(opts))
    return opts


def arm_table(opts: Options) -> dict[str, Arm]:
    """Every arm: teachers, changes to the train section (None: scored, not trained), what it is."""
    offline = {"loss": BEST, "fusion": {"mode": opts.fusion}}
    arms: dict[str, Arm] = {
        "start": ([], None, f"the shared start ({opts.start}), scored and evaluated, not trained"),
        WARM: (BOTH, offline, "the shared start of --start offline:N: offline KD for N steps from the pretrained model"),
        "offline": (BOTH, offline, f"offline KD from both teachers (cached targets), fusion {opts.fusion}"),
        "on": (BOTH, {**offline, "on_policy": opts.on_policy()},
               f"on-policy KD mixed with offline: mix {opts.mix}, {opts.divergence}, temperature {opts.temperature}, "
               f"gates {opts.gates}, combine {opts.combine}"),
        "seq": (BOTH, offline, "offline KD on the corpus plus the teachers' continuations of training prefixes")}
    for name, change in PILOT_VARIANTS.items():
        arms[name] = (BOTH, {**offline, "on_policy": opts.on_policy(**change)},
                      "on with " + ", ".join(f"{k} {v}" for k, v in change.items()))
    return arms


def arm_steps(opts: Options, settings: dict[str, Any], arm: str) -> dict[str, Any]:
    """The training settings of ``arm``: ``offline`` trains ``offline_steps``, the warm run
    its N steps in one segment, every other arm ``steps``."""
    if arm == "offline":
        return {**settings, "steps": opts.offline_steps}
    if arm == WARM:
        return {**settings, "steps": opts.start_steps, "segment_steps": opts.start_steps}
    return settings


def start_dir(runs: Path, opts: Options, seed: int) -> Path:
    """The weights every arm of ``seed`` starts from."""
    if opts.start == "pretrained":
        return student_dir()
    return (runs / WARM / f"s{seed}" / "student").resolve()


def seq_section(runs: Path) -> dict[str, Any]:
    """The ``generate`` section the teacher-written text was made with (seqdata.py wrote it)."""
    path = runs / SEQDATA / "generate.json"
    if not path.is_file():
        raise SystemExit(f"{path} missing: run `prepare` (it writes the teacher-written text) before training seq")
    section: dict[str, Any] = json.loads(path.read_text())
    return section


def arm_data(runs: Path, arm: str) -> tuple[Path, dict[str, Any] | None]:
    """``seq`` reads the teacher-written text and the caches that hold it; the rest runs/data."""
    return (runs / SEQDATA, seq_section(runs)) if arm == "seq" else (runs / "data", None)


def _log_per_segment(runs: Path, arm: str, train: dict[str, Any]) -> dict[str, Any]:
    """One train_log line per segment: a resumed run (from a segment's checkpoint) then keeps
    every on-policy timing line of the steps before it."""
    return {**train, "log_every": train["checkpoint_every"]}


def make_study(runs: Path, opts: Options, seed: int | None) -> Study:
    """The study whose student is the start of ``seed`` (None: the pretrained model, which the
    warm run and the pretrained start's scoring use). Offline keeps every scored checkpoint's
    weights (one of them is compared with ``on`` at equal wall time); the others end in
    ``student/``."""
    if seed is None:
        folder: Callable[[], Path] = student_dir
        start: dict[str, Any] = {"kind": "pretrained", "model": "smollm2-135m"}
    else:
        folder = lambda: start_dir(runs, opts, seed)  # noqa: E731 (a closure over this seed)
        start = {"kind": opts.start, "model": str(start_dir(runs, opts, seed)), "steps": opts.start_steps}
    return Study(name="onpolicy_pretrained", arms=arm_table(opts), designs=DESIGNS, data=DATA,
                 student_dir=folder, scores=split_scores, arm_data=arm_data,
                 run_info={"start": start, "options": asdict(opts)}, adjust=_log_per_segment,
                 save_model=lambda arm, step: arm == "offline" and step < opts.offline_steps)
