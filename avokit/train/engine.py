"""What the loop trains: the student prepared by Accelerate (one process, DDP, or Accelerate's
FSDP / DeepSpeed on GPUs) or sharded by avokit (``train.parallel: fsdp``, :mod:`avokit.train.sharding`),
its optimizer and schedule, resumed from the newest checkpoint, and the whole model saved at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avokit.errors import AvokitError
from avokit.precision import resolve_mixed_precision
from avokit.recipe.train import TrainConfig
from avokit.train.checkpoint import latest_checkpoint, load_checkpoint
from avokit.train.schedule import lr_factor
from avokit.train.sharding import (
    ParamShares,
    avokit_shards,
    full_state_dict,
    local_param_count,
    shard_student,
)


def build_optimizer(model: Any, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW without decay on biases and norms, and the warmup-cosine schedule; frozen
    parameters (``requires_grad`` off, :mod:`avokit.train.freeze`) are left out."""
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
    return optimizer, scheduler


def save_final(accelerator: Any, model: Any, out_dir: Path, sharded: bool) -> Any:
    """Write the whole model to ``out_dir`` and return it unwrapped, on every process (still
    sharded where avokit sharded it: ``sharded``).

    Under FSDP or DeepSpeed ZeRO-3 each process holds a shard of the weights: every process
    takes part in gathering the full state dict, and the main one writes the whole model."""
    accelerator.wait_for_everyone()
    state_dict = full_state_dict(model) if sharded else accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(str(out_dir), state_dict=state_dict, safe_serialization=True)
    accelerator.wait_for_everyone()
    return unwrapped


def fill_deepspeed_batch(ds_config: dict[str, Any], batch_size: int, grad_accum: int, world_size: int) -> None:
    """Set DeepSpeed's batch sizes (in place) from the recipe: each rank's rows of a global
    micro-batch, ``train.grad_accum`` and their product over the ranks.

    Accelerate reads the micro-batch from a prepared DataLoader, and avokit slices its own
    batches (it prepares none): without this an `accelerate launch` DeepSpeed run stops at
    ``accelerator.prepare``. A config that fixes other numbers than the recipe's is an error."""
    if batch_size % world_size:
        raise AvokitError(f"train.batch_size={batch_size} must be divisible by the number of processes ({world_size})")
    want = {"train_micro_batch_size_per_gpu": batch_size // world_size, "gradient_accumulation_steps": grad_accum,
            "train_batch_size": batch_size * grad_accum}
    for key, value in want.items():
        given = ds_config.get(key, "auto")
        if given not in ("auto", value):
            raise AvokitError(f"the DeepSpeed config sets {key}={given}, but the recipe gives {value} "
                              "(train.batch_size, train.grad_accum): set it to 'auto' or leave it out")
        ds_config[key] = value


@dataclass
class Engine:
    """What training runs on: the Accelerator, the model and optimizer (prepared by Accelerate,
    or sharded by avokit: ``sharded``), the scheduler and the step to start from."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    start: int
    sharded: bool

    @property
    def sharded_state(self) -> tuple[Any, Any] | None:
        """The (model, optimizer) that checkpoints write with torch.distributed.checkpoint."""
        return (self.model, self.optimizer) if self.sharded else None


def prepare_engine(model: Any, cfg: TrainConfig, out_dir: Path) -> Engine:
    """Accelerator, prepared (or sharded) model and optimizer, the scheduler, and the step to
    start from (the newest complete checkpoint's, else 0)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
                              gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    if cfg.gradient_checkpointing:
        # transformers 5 renamed the switch; keep working on both spellings
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        model.config.use_cache = False
    sharded = avokit_shards(cfg.parallel, accelerator.distributed_type.name)
    if sharded:
        if accelerator.mixed_precision == "fp16":
            # fp16 needs Accelerate's gradient scaler, which only an optimizer it prepared gets
            raise AvokitError("train.parallel: fsdp trains in float32 or bf16; train.mixed_precision "
                              "resolved to fp16 (set it to bf16 or no)")
        shard_student(model.to(accelerator.device), accelerator.device, accelerator.num_processes)
    # The scheduler is stepped by hand once per optimizer step (not through accelerate.prepare,
    # which would step it once per process) and checkpointed alongside the rest.
    optimizer, scheduler = build_optimizer(model, cfg)
    if accelerator.distributed_type.name == "DEEPSPEED":
        fill_deepspeed_batch(accelerator.state.deepspeed_plugin.deepspeed_config, cfg.batch_size, cfg.grad_accum,
                             accelerator.num_processes)
    if not sharded:
        model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    run = Engine(accelerator, model, optimizer, scheduler, 0, sharded)
    found = latest_checkpoint(out_dir / "checkpoints")
    run.start = load_checkpoint(accelerator, found[0], run.sharded_state) if found is not None else 0
    return run


def param_shares(accelerator: Any, model: Any, sharded: bool) -> ParamShares:
    """The parameter elements each rank holds, gathered through the process group; where avokit
    sharded the student, checked to be a real split (raises :class:`AvokitError` if not)."""
    local, full = local_param_count(model)
    by_rank = accelerator.gather(torch.tensor([local], dtype=torch.int64, device=accelerator.device))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shares = ParamShares(full=full, by_rank=[int(n) for n in by_rank.cpu().tolist()],
                         trained=None if sharded else trained)
    if sharded:
        shares.check_sharded()
    return shares
