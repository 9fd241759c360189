"""`avokit capture`: run every teacher over the corpus splits and write its cache.

Resumable by construction: a shard file appears only complete (tmp + rename) and counts as
done only once its progress record with its sha256 exists, so a killed capture redoes at
most the shard it was in, and the finished cache is byte-identical to an uninterrupted one
(no timestamps in any file; shard contents depend only on the plan).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from avokit.cache import CacheSpec, ShardWriter, finished_shard, record_progress, write_manifest
from avokit.cache.manifest import PROGRESS_DIR, TOKENIZER_DIR, write_json_atomic
from avokit.capture.dtype_check import TeacherLoader, load_checked
from avokit.capture.plan import ShardPlan, mine, plan_hash, plan_shards
from avokit.corpus import build_corpus, load_split
from avokit.errors import AvokitError, CacheError
from avokit.paths import pid_alive
from avokit.recipe import Recipe, TeacherConfig
from avokit.records import TeacherRecords
from avokit.teachers.base import Teacher

CAPTURE_STATE = "capture.json"


def _default_loader(recipe: Recipe) -> TeacherLoader:
    """:func:`avokit.teachers.load_teacher` with the recipe's batching settings."""

    def load(config: TeacherConfig, base_dir: Path) -> Teacher:
        from avokit.teachers import load_teacher  # late: loading pulls in torch and models

        return load_teacher(config, base_dir, recipe.capture)

    return load


def cache_dir_for(recipe: Recipe, teacher: str) -> Path:
    """``run_dir/cache/<teacher>``."""
    return recipe.run_dir / "cache" / teacher


def _spec(recipe: Recipe, teacher: Teacher) -> CacheSpec:
    info = teacher.info
    return CacheSpec(
        teacher=info.name,
        teacher_fingerprint=info.fingerprint,
        tokenizer_fingerprint=info.tokenizer_fingerprint,
        vocab_size=teacher.token_bytes.size,
        top_k=recipe.capture.top_k,
        logprob_bits=recipe.capture.logprob_bits,
        compression=recipe.capture.compression,
        compute_dtype=info.dtype,
        inside_top_k=recipe.capture.inside_top_k,
    )


def _read_state(cache_dir: Path) -> dict | None:
    path = cache_dir / CAPTURE_STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        CacheSpec.model_validate(state["spec"])
        return state
    except (json.JSONDecodeError, KeyError, TypeError, ValidationError):
        raise CacheError(f"{path}: unreadable capture state; delete {cache_dir} to capture again") from None


def _check_state(cache_dir: Path, state: dict | None, phash: str, spec: CacheSpec | None) -> None:
    """Refuse to mix shards of different captures in one directory (never overwrite them)."""
    if state is None:
        return
    path = cache_dir / CAPTURE_STATE
    if state["plan_hash"] != phash:
        raise CacheError(
            f"{path}: this cache was captured with another corpus, top_k, format or teacher "
            f"config; delete {cache_dir} (or use a new run name) to capture again"
        )
    # through the model: a state written before a field existed reads as its default
    old = CacheSpec.model_validate(state["spec"]).model_dump(mode="json")
    if spec is not None and old["compute_dtype"] != spec.compute_dtype:
        raise CacheError(
            f"{path}: {len(list(cache_dir.glob('*.arrow')))} shards were captured in "
            f"{old['compute_dtype']} and this run would score in {spec.compute_dtype}; set the "
            f"teacher's `dtype: {old['compute_dtype']}` in the recipe to finish this cache, or "
            f"delete {cache_dir} to capture again"
        )
    if spec is not None and old != spec.model_dump(mode="json"):
        diff = [k for k, v in spec.model_dump(mode="json").items() if old.get(k) != v]
        raise CacheError(
            f"{path}: cache was captured from a different teacher ({', '.join(diff)} differ); "
            f"delete {cache_dir} to capture again"
        )


def _save_tokenizer(cache_dir: Path, teacher: Teacher) -> None:
    """Keep the teacher's tokenizer next to its cache so training never loads the teacher.

    Safe when several ``--shard`` processes capture into one folder at once: each writes its
    own temporary folder, and the first rename wins (the others' copies are identical)."""
    target = cache_dir / TOKENIZER_DIR
    tok = getattr(teacher, "tokenizer", None)
    if target.is_dir() or tok is None or not hasattr(tok, "save_pretrained"):
        return
    tmp = cache_dir / f"{TOKENIZER_DIR}.partial{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:
        if not target.is_dir():
            raise
    shutil.rmtree(tmp, ignore_errors=True)


def _remove_leftovers(cache_dir: Path) -> None:
    """Drop the temporary JSON files and tokenizer folders a kill -9 between write and rename
    leaves behind, so the finished cache holds exactly the files of an uninterrupted capture. Files of a live
    process (another ``--shard`` capture into the same folder) are left alone; half-written
    ``*.partial`` shards need no care: their shard is pending and rewritten from scratch."""
    for folder in (cache_dir, cache_dir / PROGRESS_DIR):
        for tmp in folder.glob("*.json.tmp*"):
            pid = tmp.name.rsplit(".tmp", 1)[1]
            if not pid.isdigit() or not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)
    for tmp in cache_dir.glob(f"{TOKENIZER_DIR}.partial*"):
        pid = tmp.name.rsplit(".partial", 1)[1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _check_records(teacher: str, plan: ShardPlan, recs: list[TeacherRecords], ids: list[str]) -> None:
    if [r.doc_id for r in recs] != ids:
        raise AvokitError(f"teacher {teacher!r} returned records for other documents than asked ({plan.file})")
    texts = {d.doc_id: d.text for d in plan.docs}
    for r in recs:
        n_bytes = len(texts[r.doc_id].encode("utf-8"))
        if r.n_positions == 0 or int(r.byte_ends[-1]) != n_bytes:
            raise AvokitError(
                f"teacher {teacher!r}: records of document {r.doc_id!r} cover "
                f"{int(r.byte_ends[-1]) if r.n_positions else 0} of its {n_bytes} bytes"
            )


def _capture_shard(
    teacher: Teacher, spec: CacheSpec, plan: ShardPlan, cache_dir: Path, batch_size: int,
    on_batch: Callable[[int, int], None],
) -> Path:
    """Score one shard's documents in length-sorted batches and write the shard."""
    docs = list(plan.docs)
    order = sorted(range(len(docs)), key=lambda i: len(docs[i].text))  # less padding per batch
    out: dict[int, TeacherRecords] = {}
    for j in range(0, len(order), batch_size):
        idx = order[j : j + batch_size]
        ids = [docs[i].doc_id for i in idx]
        recs = teacher.score([docs[i].text for i in idx], ids, spec.top_k, inside_top_k=spec.inside_top_k)
        _check_records(spec.teacher, plan, recs, ids)
        out.update(zip(idx, recs))
        on_batch(len(idx), sum(r.n_positions for r in recs))
    with ShardWriter(cache_dir / plan.file, spec, plan.split) as writer:
        for i in range(len(docs)):  # written in corpus order whatever the batching
            writer.add(out[i])
        info = writer.close()
    record_progress(cache_dir, info)
    return cache_dir / plan.file


def _finish(cache_dir: Path, plans: list[ShardPlan], phash: str) -> bool:
    """Write the manifest once every planned shard (from any machine) is finished."""
    state = _read_state(cache_dir)
    if state is None:
        return False
    infos = [finished_shard(cache_dir, p.file) for p in plans]
    if any(i is None for i in infos):
        return False
    write_manifest(cache_dir, CacheSpec.model_validate(state["spec"]), phash, infos)  # type: ignore[arg-type]
    return True


def capture_teacher(
    recipe: Recipe,
    config: TeacherConfig,
    plans: list[ShardPlan],
    corpus_hash: str,
    shard: tuple[int, int] | None,
    loader: TeacherLoader,
    console: Console | None,
) -> list[Path]:
    """Capture this machine's shards of one teacher; returns their paths (done or skipped)."""
    cache_dir = cache_dir_for(recipe, config.name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    phash = plan_hash(recipe, config, corpus_hash)
    _check_state(cache_dir, _read_state(cache_dir), phash, None)
    _remove_leftovers(cache_dir)
    todo = mine(plans, shard)
    pending = [p for p in todo if finished_shard(cache_dir, p.file) is None]
    if pending:
        teacher = load_checked(recipe, config, loader, console)
        try:
            spec = _spec(recipe, teacher)
            _check_state(cache_dir, _read_state(cache_dir), phash, spec)
            write_json_atomic(cache_dir / CAPTURE_STATE, {"plan_hash": phash, "spec": spec.model_dump(mode="json")})
            _save_tokenizer(cache_dir, teacher)
            _run_with_progress(teacher, spec, pending, todo, cache_dir, recipe.capture.batch_size, console)
        finally:
            teacher.close()
    done = _finish(cache_dir, plans, phash)
    if console is not None and not done:
        console.print(f"[yellow]{config.name}: this machine's shards are done; the manifest is "
                      f"written when every shard of the {len(plans)} is present[/yellow]")
    return [cache_dir / p.file for p in todo]


def _run_with_progress(
    teacher: Teacher, spec: CacheSpec, pending: list[ShardPlan], todo: list[ShardPlan],
    cache_dir: Path, batch_size: int, console: Console | None,
) -> None:
    total_docs = sum(len(p.docs) for p in todo)
    already = total_docs - sum(len(p.docs) for p in pending)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("docs  {task.fields[tokens]:,} tok  {task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(), console=console, disable=console is None, transient=False,
    )
    started = time.perf_counter()
    counted = [0]
    with progress:
        task: TaskID = progress.add_task(spec.teacher, total=total_docs, completed=already,
                                         tokens=0, tps=0.0)

        def on_batch(n_docs: int, n_tokens: int) -> None:
            counted[0] += n_tokens
            rate = counted[0] / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=n_docs, tokens=counted[0], tps=rate)

        for plan in pending:
            _capture_shard(teacher, spec, plan, cache_dir, batch_size, on_batch)


def run_capture(
    recipe: Recipe,
    teacher: str | None = None,
    shard: tuple[int, int] | None = None,
    *,
    teacher_loader: TeacherLoader | None = None,
    console: Console | None = None,
) -> list[Path]:
    """Capture every teacher of ``recipe`` (or only ``teacher``) over train and held-out.

    Args:
        recipe: the validated recipe; the corpus is built first if needed.
        teacher: a teacher name from the recipe, or None for all.
        shard: ``(i, n)``: capture only shards ``i, i+n, ...`` (machine i of n). The manifest
            is written by whichever run finds every shard present (copy the shard files and
            ``progress/`` records of all machines into one directory and run again).
        teacher_loader: how a teacher is loaded (default :func:`avokit.teachers.load_teacher`).
        console: where the progress bar goes (None: no bar).

    Returns the shard files this machine is responsible for, per teacher, in plan order.
    """
    corpus = build_corpus(recipe)
    configs = recipe.teachers
    if teacher is not None:
        try:
            configs = [recipe.teacher(teacher)]
        except KeyError as err:
            raise AvokitError(str(err.args[0])) from None
    splits = {s: load_split(recipe, s) for s in ("train", "heldout")}
    plans = plan_shards(splits, recipe.capture.docs_per_shard)
    loader = teacher_loader or _default_loader(recipe)
    paths: list[Path] = []
    for config in configs:
        paths.extend(capture_teacher(recipe, config, plans, corpus.config_hash, shard, loader, console))
    return paths


def stored_vs_exact_kl(stored: np.ndarray, exact: np.ndarray) -> float:
    """Mean KL(stored || exact) over positions between top-k distributions renormalised over
    the same k ids (inputs: log-probs [n, k] in the same id order), in nats."""
    def norm(lp: np.ndarray) -> np.ndarray:
        lp = lp.astype(np.float64)
        m = lp.max(axis=1, keepdims=True)
        return lp - (m + np.log(np.exp(lp - m).sum(axis=1, keepdims=True)))

    s, e = norm(stored), norm(exact)
    return float(np.mean(np.sum(np.exp(s) * (s - e), axis=1)))
