"""``avokit train --nproc N``: start N training processes that form one process group.

Accelerate's launcher starts N processes only on accelerators (through torchrun) or under
mpirun; on CPUs without MPI it starts one. This wraps torchrun (``torch.distributed.run``,
``--standalone``: one node, a free rendezvous port) and sets what Accelerate needs to form a
gloo group on CPUs, so the same command gives N ranks on a laptop, a CPU server or a GPU node
(one process per GPU, NCCL).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from avokit.errors import AvokitError
from avokit.train.topology import NPROC_ENV


def launch_env(nproc: int, base: Mapping[str, str], has_cuda: bool, cpu_count: int) -> dict[str, str]:
    """The environment of the N processes: the expected count, a CPU group where there is no
    GPU, and the cores split between the processes (torchrun would give each one thread)."""
    env = dict(base)
    env[NPROC_ENV] = str(nproc)
    if not has_cuda:
        env.setdefault("ACCELERATE_USE_CPU", "true")
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpu_count // nproc)))
    return env


def launch_command(nproc: int, train_args: list[str]) -> list[str]:
    """torchrun's command line for ``avokit train`` with ``train_args`` on ``nproc`` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "avokit", "train", *train_args]


def launch_training(nproc: int, train_args: list[str]) -> None:
    """Run ``avokit train`` on ``nproc`` local processes (one process group); raises
    :class:`AvokitError` when any of them fails."""
    import torch

    if nproc < 1:
        raise AvokitError(f"--nproc must be at least 1 (got {nproc})")
    has_cuda = torch.cuda.is_available()
    if has_cuda and nproc > torch.cuda.device_count():
        raise AvokitError(f"--nproc {nproc} exceeds the {torch.cuda.device_count()} visible GPUs "
                          "(one process per GPU; CUDA_VISIBLE_DEVICES selects them)")
    env = launch_env(nproc, os.environ, has_cuda, os.cpu_count() or 1)
    proc = subprocess.run(launch_command(nproc, train_args), env=env, check=False)
    if proc.returncode != 0:
        raise AvokitError(f"training on {nproc} processes failed (torchrun exit code {proc.returncode}); "
                          "the first failing rank's error is printed above")
