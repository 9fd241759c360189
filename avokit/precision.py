"""Which floating-point type a model runs in: bf16 where the device computes it natively,
float32 otherwise.

The machines differ: on an Intel Xeon with AMX a SmolLM2-135M forward ran 7-8x faster in bf16
than in float32 (DESIGN.md); on an AMD EPYC with AVX2 only, torch's bf16 ``F.linear`` ran ~8x
and ``matmul`` ~140x slower than float32, and capture 3-9x slower (bench/results/capture.md). So ``auto`` is
decided by the device, never by a constant, and ``AVOKIT_CPU_BF16=0/1`` overrides the CPU
detection (for a CPU this module does not know, or to measure the other branch).

Nothing here imports torch at module load: the gateway's ``[serve]`` role has no torch.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from avokit.errors import AvokitError

DType = Literal["float32", "bfloat16", "float16"]
DTYPE_SETTINGS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
ENV_CPU_BF16 = "AVOKIT_CPU_BF16"

# /proc/cpuinfo flags that mean the CPU has bf16 matrix or dot-product instructions that
# oneDNN uses: Intel AMX tiles, AVX512-BF16 (Cooper Lake, Sapphire Rapids, AMD Zen 4+), and
# Arm's BF16 extension (Neoverse V1/N2, Graviton 3+).
NATIVE_BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16", "bf16")


@dataclass(frozen=True)
class CpuBf16:
    """Whether this CPU runs bf16 natively, and why we think so."""

    native: bool
    reason: str  # the flag found, "no bf16 flag", or the override variable's value


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (x86 ``flags``, Arm ``Features``);
    empty where the file does not exist (macOS, Windows)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def detect_cpu_bf16(
    flags: frozenset[str] | None = None, env: Mapping[str, str] | None = None
) -> CpuBf16:
    """Native bf16 on this CPU: ``AVOKIT_CPU_BF16`` (``0`` or ``1``) if set, else the flags.

    Raises :class:`AvokitError` naming the variable when it holds anything but 0 or 1.
    """
    env = os.environ if env is None else env
    forced = env.get(ENV_CPU_BF16)
    if forced is not None and forced.strip() != "":
        value = forced.strip()
        if value not in ("0", "1"):
            raise AvokitError(f"{ENV_CPU_BF16} must be 0 or 1, got {forced!r}")
        return CpuBf16(native=value == "1", reason=f"{ENV_CPU_BF16}={value}")
    found = [f for f in NATIVE_BF16_FLAGS if f in (cpu_flags() if flags is None else flags)]
    if found:
        return CpuBf16(native=True, reason=found[0])
    return CpuBf16(native=False, reason=f"no bf16 flag ({platform.machine() or 'unknown'} CPU)")


def cpu_bf16_report() -> dict[str, object]:
    """What this CPU offers for bf16, for benchmark and report headers: ``native_bf16``,
    ``bf16_reason``, the bf16/AMX flags present and torch's CPU capability (imports torch)."""
    import torch

    support = detect_cpu_bf16()
    return {"native_bf16": support.native, "bf16_reason": support.reason,
            "bf16_flags": sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx")),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def device_type(device: str) -> str:
    """``cuda:1`` -> ``cuda``; ``auto`` -> ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.split(":", 1)[0]


def native_bf16(device: str) -> bool:
    """True where ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``) computes bf16 natively."""
    kind = device_type(device)
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return detect_cpu_bf16().native
    return False  # mps, xpu, ...: not measured here; float32 is always correct


def resolve_dtype(setting: str, device: str, *, field: str = "dtype") -> DType:
    """The dtype a model runs in: ``auto`` -> ``bfloat16`` where :func:`native_bf16`, else
    ``float32``; an explicit dtype is returned as given. ``field`` names the setting in errors."""
    if setting not in DTYPE_SETTINGS:
        raise AvokitError(f"{field} must be one of {', '.join(DTYPE_SETTINGS)}, got {setting!r}")
    if setting == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return setting  # type: ignore[return-value]


def resolve_mixed_precision(setting: str, device: str = "auto") -> str:
    """Accelerate's ``mixed_precision`` for training: ``auto`` -> ``bf16`` on CUDA devices that
    support it, ``no`` on every CPU.

    CPU training in bf16 did not beat float32 on any CPU measured (bench/results/train_dtype.md:
    0.07-0.14x float32's tokens/s on an AVX2-only EPYC; on a Xeon with AMX, autocast 67-78 and
    pure bf16 84-144 tokens/s against 210 in float32, DESIGN.md), so ``auto`` keeps float32
    there; ``bf16`` still forces it.
    """
    if setting != "auto":
        return setting
    return "bf16" if device_type(device) == "cuda" and native_bf16(device) else "no"


def torch_dtype(name: DType) -> Any:  # a torch.dtype; torch is imported lazily
    """The ``torch.dtype`` of a resolved dtype name."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
