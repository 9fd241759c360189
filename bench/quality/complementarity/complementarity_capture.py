"""Capture teachers for the complementarity benchmark in a domain-balanced shard order.

The corpus lists its sources one after another (English, then code, then Chinese), so a plain
``avokit capture`` that is stopped early has only English. This driver loads each teacher ONCE
and captures one shard at a time (``run_capture(..., shard=(j, n))``: exactly shard j) in an
order that keeps the captured bytes of every domain level, so whatever has finished by
``--until`` is a balanced sample. Several teachers named in one call share this one process
(and its one thread) and take turns shard by shard, so they advance together.

Resumable like the capture itself: a finished shard is skipped. Timings (wall seconds spent
in each teacher's captures, tokens captured, load averages) go to
``runs/bench-complementarity/timings/<teacher>.json`` after every shard.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.complementarity.complementarity_capture \\
        --teachers qwen2.5-coder-0.5b --until 22:35
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

RECIPE = Path(__file__).with_suffix("").with_name("complementarity.yaml")


class _KeepOpen:
    """A loaded teacher that ignores ``close()``, so one load serves every shard."""

    def __init__(self, teacher: Any) -> None:
        self._teacher = teacher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._teacher, name)

    def close(self) -> None:
        """Kept open on purpose: the next shard reuses the model."""


def balanced_order(shard_domain_bytes: list[Counter], splits: list[str] | None = None) -> list[int]:
    """Shard indices so that the captured bytes per domain stay level: each next shard is one
    whose main domain has the fewest bytes so far; within that domain, one of the split
    (``splits[i]``: train, heldout) that has the smallest share of its bytes done, so held-out
    documents (the proof's test set) arrive as early as training ones; ties: corpus order."""
    split_of = splits or [""] * len(shard_domain_bytes)
    main = [c.most_common(1)[0][0] for c in shard_domain_bytes]
    total: Counter = Counter()
    for i, c in enumerate(shard_domain_bytes):
        total[(split_of[i], main[i])] += sum(c.values())
    left = list(range(len(shard_domain_bytes)))
    done: Counter = Counter({d: 0 for c in shard_domain_bytes for d in c})
    done_split: Counter = Counter()
    order: list[int] = []
    while left:
        j = min(left, key=lambda i: (done[main[i]], done_split[(split_of[i], main[i])] / total[(split_of[i], main[i])], i))
        left.remove(j)
        order.append(j)
        done.update(shard_domain_bytes[j])
        done_split[(split_of[j], main[j])] += sum(shard_domain_bytes[j].values())
    return order


def main() -> None:
    """Capture the named teachers shard by shard until done or ``--until`` (UTC HH:MM)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", nargs="+", required=True)
    ap.add_argument("--until", default=None, help="UTC HH:MM after which no new shard starts")
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)  # the machine is shared: one thread per capture process
    from avokit.cache import finished_shard
    from avokit.capture import run_capture
    from avokit.capture.plan import plan_shards
    from avokit.corpus import build_corpus, load_split
    from avokit.recipe import load_recipe
    from avokit.teachers import load_teacher

    recipe = load_recipe(str(args.recipe))
    build_corpus(recipe)
    plans = plan_shards({s: load_split(recipe, s) for s in ("train", "heldout")}, recipe.capture.docs_per_shard)
    shard_bytes = []
    for p in plans:
        c: Counter = Counter()
        for d in p.docs:
            c[d.domain] += len(d.text.encode("utf-8"))
        shard_bytes.append(c)
    order = balanced_order(shard_bytes, [p.split for p in plans])
    deadline = None
    if args.until:
        hh, mm = (int(x) for x in args.until.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    out = recipe.run_dir / "timings"
    out.mkdir(parents=True, exist_ok=True)
    loaded: dict[str, Any] = {}
    stats = {t: {"teacher": t, "process_start_unix": time.time(), "load_s": 0.0, "capture_s": 0.0,
                 "shards": 0, "documents": 0, "loadavg_samples": [], "threads": 1,
                 "shards_planned": len(plans), "note": "capture_s includes load_s"} for t in args.teachers}
    for t in args.teachers:  # a resumed capture adds to what the earlier processes recorded
        if (out / f"{t}.json").is_file():
            before = json.loads((out / f"{t}.json").read_text(encoding="utf-8"))
            stats[t].update({k: before[k] for k in ("process_start_unix", "load_s", "capture_s", "shards",
                                                    "documents", "loadavg_samples") if k in before})
            stats[t]["processes"] = int(before.get("processes", 1)) + 1

    def loader_for(name: str):
        def load(config, base_dir):
            if name not in loaded:
                t0 = time.perf_counter()
                loaded[name] = _KeepOpen(load_teacher(config, base_dir, recipe.capture))
                stats[name]["load_s"] += time.perf_counter() - t0
            return loaded[name]
        return load

    for j in order:
        if deadline is not None and time.time() > deadline:
            print(f"deadline {args.until} UTC passed; stopping before shard {j}", flush=True)
            break
        for t in args.teachers:
            if finished_shard(recipe.run_dir / "cache" / t, plans[j].file) is not None:
                continue  # captured by an earlier process: counted there
            t0 = time.perf_counter()
            run_capture(recipe, teacher=t, shard=(j, len(plans)), teacher_loader=loader_for(t))
            s = stats[t]
            s["capture_s"] += time.perf_counter() - t0
            s["shards"] += 1
            s["documents"] += len(plans[j].docs)
            s["loadavg_samples"].append(os.getloadavg()[0])
            s["last_unix"] = time.time()
            (out / f"{t}.json").write_text(json.dumps(s, indent=1) + "\n", encoding="utf-8")
            print(f"{t}: shard {j} ({plans[j].file}) done, {s['shards']} shards, "
                  f"{s['capture_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
