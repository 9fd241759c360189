"""The process group a training run really got, checked against what its launcher asked for.

A launch that asks for N processes and silently trains on one is the failure this guards
against: ``accelerate launch --num_processes 2 --cpu`` (Accelerate's CPU launcher, without
mpirun) starts ONE process, and ``torchrun`` on a machine without an accelerator gives N
independent single-process runs unless ``ACCELERATE_USE_CPU`` is set. Every run records its
:class:`Topology` in ``train_log.jsonl`` and TensorBoard, and refuses to start on a mismatch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from avokit.errors import AvokitError

# set by `avokit train --nproc N` (and settable by any launcher): the process count it started
NPROC_ENV = "AVOKIT_NPROC"
# what MPI launchers (mpirun / Intel MPI / MVAPICH) export as the world size
_MPI_SIZE_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclass(frozen=True)
class LaunchRequest:
    """What the launcher asked for: ``n`` processes (None: "more than one", count unknown),
    and which environment variable says so."""

    n: int | None
    source: str


@dataclass(frozen=True)
class Topology:
    """The process group of a run, as Accelerate formed it."""

    world_size: int
    rank: int
    distributed_type: str  # Accelerate's DistributedType name: NO, MULTI_CPU, MULTI_GPU, FSDP, ...
    backend: str | None  # gloo, nccl, ... (None for one process)

    def rows_per_rank(self, batch_size: int) -> int:
        """This process's share (rows) of each global micro-batch of ``batch_size`` rows."""
        return batch_size // self.world_size

    def record(self, batch_size: int) -> dict[str, int | str | None]:
        """The fields every train_log.jsonl line carries."""
        return {"world_size": self.world_size, "distributed_type": self.distributed_type,
                "backend": self.backend, "rows_per_rank": self.rows_per_rank(batch_size)}


def _int_env(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError as err:
        raise AvokitError(f"environment variable {name}={env[name]!r} must be an integer") from err


def launch_request(env: Mapping[str, str]) -> LaunchRequest | None:
    """The process count a launcher asked for, read from its environment; None when nothing
    in ``env`` says a multi-process launch was requested (a plain ``avokit train``)."""
    if NPROC_ENV in env:
        return LaunchRequest(_int_env(env, NPROC_ENV), NPROC_ENV)
    if "WORLD_SIZE" in env:  # torchrun, and accelerate's GPU/FSDP/DeepSpeed launchers through it
        return LaunchRequest(_int_env(env, "WORLD_SIZE"), "WORLD_SIZE")
    for name in _MPI_SIZE_ENV:
        if name in env:
            return LaunchRequest(_int_env(env, name), name)
    # Accelerate's simple (CPU) launcher exports MASTER_ADDR only when it was asked for more
    # than one process, then starts exactly one: the request is visible, its size is not.
    if "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env:
        return LaunchRequest(None, "MASTER_ADDR (set by `accelerate launch` for several processes)")
    return None


def use_cpu_group_if_no_accelerator(env: os._Environ[str] | dict[str, str]) -> None:
    """Under torchrun on a machine without an accelerator, ask Accelerate for a CPU (gloo)
    process group; without ``ACCELERATE_USE_CPU`` it would give each process a world of one.

    Must run before the first ``PartialState``/``Accelerator`` of the process.
    """
    import torch

    launched = "LOCAL_RANK" in env and int(env.get("WORLD_SIZE", "1")) > 1
    if launched and "ACCELERATE_USE_CPU" not in env and not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"


def check_process_group(request: LaunchRequest | None, topology: Topology) -> None:
    """Refuse a run whose process group is smaller than its launcher asked for."""
    if request is None or (request.n is not None and topology.world_size >= request.n):
        return
    asked = f"{request.n} processes" if request.n is not None else "several processes"
    raise AvokitError(
        f"the launcher asked for {asked} ({request.source}) but this process group has "
        f"{topology.world_size} ({topology.distributed_type}); refusing to train on fewer. "
        "On CPUs Accelerate's launcher starts one process unless it runs under mpirun: use "
        "`avokit train RECIPE --nproc N` (torchrun with a gloo group); on GPUs "
        "`accelerate launch --config_file configs/accelerate/ddp_gpu.yaml` or `avokit train --nproc N`")


def check_requested_distribution(env: Mapping[str, str], topology: Topology) -> None:
    """Refuse a run whose launcher asked for FSDP or DeepSpeed that Accelerate did not form.

    Accelerate (1.16) turns these on only over accelerators: on CPUs it forms MULTI_CPU and the
    model would be replicated (DDP), not sharded, which is not what the config said."""
    for flag, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if env.get(flag, "false").lower() == "true" and topology.distributed_type != name:
            label = "DeepSpeed" if name == "DEEPSPEED" else name
            raise AvokitError(
                f"the launcher asked for {label} ({flag}=true) but Accelerate formed "
                f"{topology.distributed_type}; Accelerate runs {label} only on GPUs (or other "
                "accelerators). On CPUs: `avokit train RECIPE --nproc N` (DDP), with train.parallel: "
                "fsdp in the recipe to shard the student (FSDP2 by avokit)")


def current_topology(state: Any = None) -> Topology:
    """The process group Accelerate formed for this process: of ``state`` (an Accelerator or
    its state, whose distributed type names FSDP / DeepSpeed) or else of the PartialState."""
    import torch.distributed as dist
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState() alone ignores ACCELERATE_USE_CPU (only Accelerator reads it): the first
    # state of the process must be created with it, or a CPU launch forms no group at all
    state = state if state is not None else PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else None
    return Topology(world_size=state.num_processes, rank=state.process_index,
                    distributed_type=state.distributed_type.name, backend=backend)


def checked_topology() -> Topology:
    """This process's :class:`Topology`, after refusing a smaller group than the launcher's."""
    use_cpu_group_if_no_accelerator(os.environ)
    topology = current_topology()
    check_process_group(launch_request(os.environ), topology)
    return topology
