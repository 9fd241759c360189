"""The training loop on Hugging Face Accelerate: the same code on one CPU or many GPUs.

Distribution (DDP, FSDP, DeepSpeed) comes from the launcher (``avokit train --nproc N``,
torchrun, ``accelerate launch`` configs), or, with ``train.parallel: fsdp`` where Accelerate
formed no FSDP (CPUs), from avokit sharding the student itself (:mod:`avokit.train.sharding`);
this loop slices each global batch by rank, and every log line records the process group, the
parameter elements each rank holds and the rows each rank trained on. With ``train.on_policy``
each line also has ``on_policy``: the main process's on-policy micro-batches since the previous
line, seconds sampling and each teacher's seconds of live scoring
(:class:`avokit.train.on_policy.OnPolicyClock`), so the share of a step they take is measured.

Loss = ce_weight * CE + sum over teachers of (kd_weight * kd + chunk_weight * chunk, a teacher's own term weights where its recipe entry
sets them), each teacher's terms scaled by its fusion weights,
which carry the recipe's teacher weights (see ``_teacher_terms``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from avokit.errors import AvokitError
from avokit.losses.ce import cross_entropy
from avokit.recipe.train import TrainConfig
from avokit.train.checkpoint import save_checkpoint
from avokit.train.data import PackedCorpus, batch_rows, rank_slice
from avokit.train.engine import Engine, param_shares, prepare_engine, save_final
from avokit.train.kd_terms import KDSetup, teacher_loss
from avokit.train.on_policy import OnPolicy, on_policy_loss
from avokit.train.topology import Topology, check_requested_distribution, current_topology

LN2 = math.log(2.0)


class TrainingInterrupted(Exception):
    """Raised by a ``stop_after`` hook: the run stopped early and can be resumed."""


@torch.no_grad()
def heldout_bpb(model: Any, packed: PackedCorpus, accelerator: Any, max_rows: int, batch: int) -> float:
    """Bits per byte on held-out rows: total NLL nats / (ln 2 * UTF-8 bytes) of document tokens.

    Separator targets are excluded (they carry no bytes); rows are shared across processes and
    the sums reduced, so the number is the same on any process count.
    """
    rows = np.arange(min(max_rows, packed.n_rows), dtype=np.int64)
    mine = rows[accelerator.process_index :: accelerator.num_processes]
    was_training = model.training
    model.eval()
    nll = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    nbytes = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    # as many forwards on every rank as on the one with the most rows: a sharded model gathers
    # its parameters from all ranks in each forward, so a rank out of rows still runs one (on
    # row 0, counted as nothing) rather than leave the others waiting
    n_forwards = -(-len(rows[0 :: accelerator.num_processes]) // batch)
    for i in range(n_forwards):
        part = mine[i * batch : (i + 1) * batch]
        counted = part.size > 0
        part = part if counted else rows[:1]
        x, y = packed.row_tokens(part)
        tgt_idx = part[:, None] * packed.seq_len + 1 + np.arange(packed.seq_len)[None, :]
        keep = torch.from_numpy(~packed.is_sep[tgt_idx] & counted).to(accelerator.device)
        xt = torch.from_numpy(x).to(accelerator.device)
        yt = torch.from_numpy(y).to(accelerator.device)
        logits = model(input_ids=xt).logits.float()
        tok_nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt.reshape(-1), reduction="none")
        nll += (tok_nll.view_as(yt) * keep).sum().double()
        nbytes += float(packed.token_bytes[tgt_idx].sum()) if counted else 0.0
    model.train(was_training)
    nll = accelerator.reduce(nll, reduction="sum")
    nbytes = accelerator.reduce(nbytes, reduction="sum")
    return float(nll / (LN2 * nbytes)) if float(nbytes) > 0 else float("nan")


def _truncate_log(path: Path, step: int) -> float:
    """Drop log lines written after the checkpoint we resume from (they will be redone).

    Returns the wall time already logged by the kept lines, so a resumed run keeps counting."""
    if not path.is_file():
        return 0.0
    kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in kept))
    return float(json.loads(kept[-1]).get("elapsed_s", 0.0)) if kept else 0.0


def _micro_loss(model: Any, packed: PackedCorpus, rows: np.ndarray, kd: KDSetup | None, loss_cfg: Any,
                device: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
    """Loss of one micro-batch, its detached parts (ce, kd, chunk) and each teacher's share."""
    x, y = packed.row_tokens(rows)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    logits = model(input_ids=xt).logits.float()
    # one log_softmax over [B, T, V], shared by CE and every teacher's KD terms
    logprobs = torch.log_softmax(logits, dim=-1)
    ce = cross_entropy(logits, xt, torch.ones_like(yt, dtype=torch.bool), logprobs, targets=yt)
    loss = loss_cfg.ce_weight * ce
    if kd is None or not kd.sources:
        zero = torch.zeros((), device=logits.device)
        return loss, {"ce": ce.detach(), "kd": zero, "chunk": zero}, {}
    teachers, parts, per_teacher = teacher_loss(logits, logprobs, yt, packed, rows, kd, device)
    return loss + teachers, {"ce": ce.detach(), **parts}, per_teacher


def _step_loss(accelerator: Any, model: Any, packed: PackedCorpus, rows: np.ndarray, kd: KDSetup | None,
               loss_cfg: Any, on_policy: OnPolicy | None, step: int,
               micro: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
    """The micro-batch's loss: on the packed corpus rows; where on-policy takes the micro-batch,
    on the student's own samples instead (``combine: replace``) or as well, weighted (``add``)."""
    if on_policy is None or not on_policy.takes(step, micro):
        return _micro_loss(model, packed, rows, kd, loss_cfg, accelerator.device)
    loss, parts, shares = on_policy_loss(model, accelerator.unwrap_model(model), on_policy, step, micro, len(rows),
                                         accelerator.device, accelerator.process_index)
    if on_policy.cfg.combine == "replace":
        return loss, parts, shares
    w = on_policy.cfg.weight
    corpus, corpus_parts, corpus_shares = _micro_loss(model, packed, rows, kd, loss_cfg, accelerator.device)
    return (corpus + w * loss, {k: v + w * parts[k] if k in parts else v for k, v in corpus_parts.items()},
            {n: corpus_shares.get(n, 0.0) + w * shares.get(n, 0.0) for n in {*corpus_shares, *shares}})


class _RunLog:
    """train_log.jsonl and TensorBoard scalars, written by the main process only."""

    def __init__(self, out_dir: Path, start: int, main: bool, topology: Topology) -> None:
        self.path = out_dir / "train_log.jsonl"
        self.main = main
        self.elapsed_before = 0.0
        self.writer: Any = None
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.elapsed_before = _truncate_log(self.path, start)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start + 1 if start else None)
            self.writer.add_text("run/process_group", f"{topology.world_size} processes, "
                                 f"{topology.distributed_type}, backend {topology.backend}", start)

    def write(self, record: dict[str, Any], per_teacher: dict[str, float]) -> None:
        """Append ``record`` and its numbers as scalars at its step."""
        if not self.main:
            return
        done = record["step"]
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        for key, val in record.items():
            if isinstance(val, (int, float)) and not isinstance(val, bool) and key != "step":
                self.writer.add_scalar(f"train/{key}", val, done)
        for name, val in record.get("teacher_weights", {}).items():
            self.writer.add_scalar(f"teacher_weight/{name}", val, done)
        for name, val in per_teacher.items():
            self.writer.add_scalar(f"teacher_loss/{name}", val, done)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()


def _log_record(accelerator: Any, sums: dict[str, float], done: int, lr: float, tokens: int,
                tokens_per_s: float, elapsed: float) -> dict[str, Any]:
    """One train_log.jsonl line: losses averaged over processes, throughput, wall time."""
    stats = accelerator.reduce(torch.tensor([sums[k] for k in ("loss", "ce", "kd", "chunk")],
                                            device=accelerator.device), reduction="mean")
    return {"step": done, "loss": float(stats[0]), "lr": lr, "ce": float(stats[1]), "kd": float(stats[2]),
            "chunk": float(stats[3]), "tokens": tokens, "tokens_per_s": tokens_per_s, "elapsed_s": elapsed}


def _rows_by_rank(accelerator: Any, rows: np.ndarray) -> list[list[int]]:
    """The corpus rows every process trained on in this step, gathered through the process
    group (so a rank that is not in it cannot appear): ``[world][grad_accum * rows_per_rank]``."""
    gathered = accelerator.gather(torch.from_numpy(rows).to(accelerator.device))
    return gathered.view(accelerator.num_processes, -1).cpu().tolist()


def _progress_bar(total: int, start: int, enabled: bool) -> tuple[Any, Any]:
    """A rich progress bar over the optimizer steps (hidden when not ``enabled``) and its task."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=not enabled)
    return bar, bar.add_task("train", total=total, completed=start, info="")


def _checkpoint(run: Engine, out_dir: Path, done: int, on_checkpoint: Callable[[int, Any], None] | None) -> None:
    """Save the training state after ``done`` steps, then hand the model to ``on_checkpoint``
    (main process) and put it back in training mode."""
    accelerator, model = run.accelerator, run.model
    save_checkpoint(accelerator, out_dir / "checkpoints", done, sharded=run.sharded_state)
    if on_checkpoint is not None:
        if accelerator.is_main_process:
            on_checkpoint(done, accelerator.unwrap_model(model))
            model.train()
        accelerator.wait_for_everyone()


def _train_step(run: Engine, packed: PackedCorpus, kd: KDSetup | None, loss_cfg: Any,
                on_policy: OnPolicy | None, cfg: TrainConfig,
                step: int) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
    """One optimizer step over ``grad_accum`` micro-batches; the mean loss parts, each
    teacher's share and the rows this process trained on (int64 [grad_accum * rows per rank])."""
    accelerator, model, optimizer = run.accelerator, run.model, run.optimizer
    world, rank = accelerator.num_processes, accelerator.process_index
    sums: dict[str, float] = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "chunk": 0.0}
    per_teacher: dict[str, float] = {}
    seen = []
    for micro in range(cfg.grad_accum):
        rows = rank_slice(batch_rows(packed.n_rows, cfg.seed, step * cfg.grad_accum + micro, cfg.batch_size),
                          rank, world)
        seen.append(rows)
        with accelerator.accumulate(model), accelerator.autocast():
            if run.sharded:  # reduce-scatter the gradients on the step's last micro-batch only
                model.set_requires_gradient_sync(accelerator.sync_gradients)
            loss, parts, shares = _step_loss(accelerator, model, packed, rows, kd, loss_cfg, on_policy, step, micro)
            accelerator.backward(loss)
            # (a prepared optimizer skips the other micro-batches itself; a sharded one is plain)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        for key, val in (("loss", loss.detach()), *parts.items()):
            sums[key] += float(val) / cfg.grad_accum
        for name, share in shares.items():
            per_teacher[name] = per_teacher.get(name, 0.0) + share / cfg.grad_accum
    return sums, per_teacher, np.concatenate(seen)


def train_loop(
    model: Any,
    packed: PackedCorpus,
    heldout: PackedCorpus | None,
    cfg: TrainConfig,
    out_dir: Path,
    kd: KDSetup | None = None,
    eval_max_rows: int = 64,
    stop_after: Callable[[int], bool] | None = None,
    progress: bool = True,
    eval_split: str = "heldout",
    on_checkpoint: Callable[[int, Any], None] | None = None,
    on_policy: OnPolicy | None = None,
) -> Any:
    """Train ``model`` for ``cfg.steps`` optimizer steps, resuming from ``out_dir/checkpoints``.

    Writes the final weights (``config.json``, ``model.safetensors``) to ``out_dir``, gathered
    whole even when sharded (FSDP, ZeRO-3), and returns the unwrapped trained model (on every
    process). ``stop_after(step)`` returning True
    right after a checkpoint is saved raises :class:`TrainingInterrupted` (tests use it to
    simulate a kill at a known point). ``on_checkpoint(step, model)`` runs on the main process
    after each checkpoint with the unwrapped model (benchmarks score checkpoints with it); the
    model is put back in training mode after it. ``on_policy``: a share of the micro-batches
    is written by the student and scored live by the teachers (:mod:`avokit.train.on_policy`).
    """
    run = prepare_engine(model, cfg, out_dir)
    accelerator, model, scheduler, start = run.accelerator, run.model, run.scheduler, run.start
    if run.sharded and on_checkpoint is not None:
        raise AvokitError("on_checkpoint hands the main process the whole model, which train.parallel: fsdp "
                          "never holds on one process; use train.parallel: ddp")
    topology = current_topology(accelerator.state)
    check_requested_distribution(os.environ, topology)
    if run.sharded:  # Accelerate formed a plain group; the student is sharded with FSDP2 by avokit
        topology = replace(topology, distributed_type="FSDP")
    shares = param_shares(accelerator, model, run.sharded)
    log = _RunLog(out_dir, start, accelerator.is_main_process, topology)
    loss_cfg = kd.loss_cfg if kd else cfg.loss
    model.train()
    bar, task = _progress_bar(cfg.steps, start, enabled=accelerator.is_main_process and progress)
    step_tokens = cfg.batch_size * cfg.grad_accum * packed.seq_len
    tokens_seen = start * step_tokens
    t_last, tok_last = time.perf_counter(), 0
    t_begin = t_last
    with bar:
        for step in range(start, cfg.steps):
            sums, per_teacher, rows = _train_step(run, packed, kd, loss_cfg, on_policy, cfg, step)
            lr_now = scheduler.get_last_lr()[0]
            scheduler.step()
            done = step + 1
            tokens_seen += step_tokens
            tok_last += step_tokens
            is_eval = heldout is not None and (done % cfg.eval_every == 0 or done == cfg.steps)
            if done % cfg.log_every == 0 or done == cfg.steps or is_eval:
                now = time.perf_counter()
                record = _log_record(accelerator, sums, done, lr_now, tokens_seen,
                                     tok_last / max(now - t_last, 1e-9), log.elapsed_before + now - t_begin)
                t_last, tok_last = now, 0
                record.update(topology.record(cfg.batch_size), **shares.record(),
                              rows_by_rank=_rows_by_rank(accelerator, rows),
                              **({"on_policy": on_policy.clock.take()} if on_policy is not None else {}))
                if is_eval and heldout is not None:  # is_eval implies it; said again for the checker
                    record["heldout_bpb"] = heldout_bpb(accelerator.unwrap_model(model), heldout,
                                                        accelerator, eval_max_rows, cfg.batch_size)
                    record["eval_split"] = eval_split  # which split the in-training BPB scores
                if kd is not None and kd.sources:
                    record["teacher_weights"] = {s.name: float(np.mean(kd.doc_weights[:, t]))
                                                 for t, s in enumerate(kd.sources)}
                log.write(record, per_teacher)
                bar.update(task, info=f"loss {record['loss']:.3f}")
            bar.update(task, completed=done)
            # the last step is checkpointed too: raising train.steps later continues from it
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                _checkpoint(run, out_dir, done, on_checkpoint)
                if done < cfg.steps and stop_after is not None and stop_after(done):
                    log.close()
                    raise TrainingInterrupted(f"stopped after step {done}")
    log.close()
    return save_final(accelerator, model, out_dir, run.sharded)
