"""FSDP2 inside avokit's loop (``train.parallel: fsdp``): the student sharded with ``fully_shard``.

Accelerate (1.16) forms FSDP only over accelerators: on CPUs its process group is MULTI_CPU and
its FSDP plugin never runs. So where Accelerate has not formed FSDP itself, avokit shards the
student with torch's FSDP2 over all of the group's processes (gloo on CPUs, NCCL on GPUs): every
transformer block (the model's ``_no_split_modules``) and then the root, fully sharded (each
block's parameters gathered for its forward and backward only). Accelerate still forms the
group, reduces the logged numbers and saves the scheduler and RNG; the sharded model and
optimizer are checkpointed with ``torch.distributed.checkpoint`` (each rank writes its own
part) and the final student is gathered whole into one Hugging Face directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avokit.errors import AvokitError

# inside a checkpoint folder: the sharded model and optimizer (one .distcp file per rank)
SHARDED_DIR = "sharded"


@dataclass(frozen=True)
class ParamShares:
    """How many parameter elements each rank holds, against the model's full count."""

    full: int
    by_rank: list[int]
    trained: int | None = None  # elements with gradients (train.freeze); None: every one

    def record(self) -> dict[str, Any]:
        """The train_log.jsonl fields: ``params`` (full), ``params_trained`` (what the
        optimizer updates) and ``params_by_rank``."""
        return {"params": self.full, "params_trained": self.full if self.trained is None else self.trained,
                "params_by_rank": self.by_rank}

    def check_sharded(self) -> None:
        """Raise unless the ranks together hold each element once and none holds it all."""
        if len(self.by_rank) < 2 or sum(self.by_rank) != self.full or max(self.by_rank) >= self.full:
            raise AvokitError(f"train.parallel: fsdp did not shard the student: ranks hold {self.by_rank} "
                              f"of its {self.full} parameter elements")


def avokit_shards(parallel: str, distributed_type: str) -> bool:
    """Whether avokit applies FSDP2 itself: ``train.parallel`` is ``fsdp`` and the launcher
    formed a plain multi-process group (an Accelerate FSDP launch shards through its plugin).

    Raises :class:`AvokitError` for fsdp on one process or under DeepSpeed."""
    if parallel != "fsdp" or distributed_type == "FSDP":
        return False
    if distributed_type == "DEEPSPEED":
        raise AvokitError("train.parallel: fsdp asks avokit to shard the student, but the launcher formed "
                          "DeepSpeed, which shards it its own way; use train.parallel: ddp with a DeepSpeed config")
    if distributed_type == "NO":
        raise AvokitError("train.parallel: fsdp shards the student over several processes, but this run has "
                          "one; start it with `avokit train RECIPE --nproc N` (N >= 2)")
    return True


def shard_student(model: torch.nn.Module, device: torch.device, world_size: int) -> None:
    """Apply ``fully_shard`` to every transformer block of ``model``, then to the root (in place).

    Every rank must hold identical initial weights (the same seed): each keeps its slice of them.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or ())
    if not blocks:
        raise AvokitError(f"train.parallel: fsdp needs the student's transformer block class "
                          f"(_no_split_modules), which {type(model).__name__} does not name")
    mesh = init_device_mesh(device.type, (world_size,))
    for module in list(model.modules()):
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def local_param_count(model: torch.nn.Module) -> tuple[int, int]:
    """(elements this rank holds, elements of the whole model): a sharded parameter (DTensor)
    counts its local shard; a replicated one counts in full on every rank."""
    from torch.distributed.tensor import DTensor

    local = full = 0
    for param in model.parameters():
        full += param.numel()
        local += param.to_local().numel() if isinstance(param, DTensor) else param.numel()
    return local, full


def save_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Every rank writes its shard of the model and optimizer under ``path`` (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))


def load_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Every rank reads its shard of the model and optimizer from ``path`` (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    # dcp.load fills these two dicts in place (each rank its own shard)
    dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU, gathered from every rank's shard (collective; the
    main process gets them, the others an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
