"""One rank of the FSDP2-on-CPU proof (run by tests/test_fsdp_cpu.py under torchrun, gloo).

Accelerate 1.16 forms FSDP only on accelerators (``AcceleratorState`` turns FSDP on for
MULTI_GPU-like types, never MULTI_CPU), so ``avokit train`` refuses FSDP on CPUs; this worker
proves what torch itself can do with avokit's own pieces: the student built from the recipe,
its packed corpus, global batches, rank slices, optimizer, schedule and loss, sharded with
``fully_shard`` per decoder layer and at the root.

Usage: ``torchrun --standalone --nproc-per-node 2 fsdp_cpu_worker.py RECIPE OUT START STOP SAVE``
trains steps [START, STOP): from a fresh student when START is 0, else from the sharded
checkpoint ``OUT/ckpt-START``; after step SAVE saves ``OUT/ckpt-SAVE`` (sharded: each rank
writes its own part, torch.distributed.checkpoint), writes ``OUT/rank-R.json`` (this rank's shard sizes, the logged losses) and the whole student
as one Hugging Face directory ``OUT/model``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from accelerate.utils import set_seed
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from avokit.recipe import load_recipe
from avokit.student import build_student
from avokit.teachers.scoring import resolve_start_token_id
from avokit.train.data import batch_rows, pack_documents, rank_slice, read_split
from avokit.train.loop import _micro_loss, _optimizer
from avokit.train.run import ensure_student_tokenizer


def _save(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))


def main(recipe_file: str, out: Path, start: int, stop: int, save_at: int) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    recipe = load_recipe(recipe_file)
    cfg = recipe.train
    tok = ensure_student_tokenizer(recipe)
    packed = pack_documents(read_split(recipe.run_dir, "train"), tok, cfg.seq_len, tok.eos_token_id,
                            start_id=resolve_start_token_id(tok))
    set_seed(cfg.seed)  # the same initial weights as run_training's
    model = build_student(recipe.student, tok)
    mesh = init_device_mesh("cpu", (world,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    optimizer, scheduler = _optimizer(model, cfg)
    if start:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=str(out / f"ckpt-{start}"))  # each rank reads its shard
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        for _ in range(start):  # the schedule is a pure function of the step
            scheduler.step()
    shards = {name: [p.to_local().numel(), p.numel()] for name, p in model.named_parameters()
              if isinstance(p, DTensor)}
    n_params = {name: p.numel() for name, p in model.named_parameters()}
    model.train()
    losses = []
    for step in range(start, stop):
        rows = rank_slice(batch_rows(packed.n_rows, cfg.seed, step, cfg.batch_size), rank, world)
        loss, _, _ = _micro_loss(model, packed, rows, None, cfg.loss, torch.device("cpu"))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append({"step": step + 1, "loss": float(mean) / world, "rows": rows.tolist()})
        if step + 1 == save_at:
            _save(model, optimizer, out / f"ckpt-{save_at}")
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        model.save_pretrained(str(out / "model"), state_dict=full, safe_serialization=True)
        tok.save_pretrained(str(out / "model"))
    (out / f"rank-{rank}.json").write_text(json.dumps(
        {"rank": rank, "world": world, "backend": dist.get_backend(), "shards": shards,
         "n_params": n_params, "losses": losses}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
