"""Rebuild a GGUF file from raw parts shipped in PyPI packages, checked before it is used.

The parts stream into a temporary file beside the target while a sha256 runs over them; only
a file whose size and checksum match the pinned ones is renamed into place, so a missing part,
a corrupt part or a kill mid-write never leaves a file that a later run would load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from avokit.catalog import GgufParts
from avokit.errors import AvokitError, MissingPackageError

_BLOCK = 1 << 22


class ChecksumError(AvokitError):
    """The assembled bytes are not the pinned file; the message gives both checksums."""


def part_paths(parts: GgufParts) -> list[Path]:
    """Each part's file, found without importing its package.

    Raises :class:`MissingPackageError` naming the first package that is not installed (or
    whose part file is missing) with the pip command that installs all of them.
    """
    out = []
    for package, module, rel in zip(parts.packages, parts.modules, parts.files):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise MissingPackageError(f"part package {package}=={parts.version}", parts.pip_command())
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if not path.is_file():
            raise MissingPackageError(f"{path} (part file of {package}=={parts.version})",
                                      parts.pip_command())
        out.append(path)
    return out


def _pid_alive(pid: str) -> bool:
    """Whether the process that named a temporary file ``<name>.tmp<pid>`` still runs."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def assemble_parts(sources: list[Path], target: Path, size: int, sha256: str) -> Path:
    """Concatenate ``sources`` into ``target`` if their bytes have ``size`` and ``sha256``.

    An existing ``target`` of the right size is taken as built (it only ever appears through
    the checked rename below). Leftover temporary files of killed runs are removed.
    """
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(target.name + ".tmp*"):
        # only a dead process's leftover: a live one (another test worker, another run) is
        # still writing its copy and will rename it into place
        if not _pid_alive(stale.name.rsplit(".tmp", 1)[1]):
            stale.unlink(missing_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    digest = hashlib.sha256()
    written = 0
    try:
        with tmp.open("wb") as out:
            for src in sources:
                with src.open("rb") as fh:
                    while block := fh.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if written != size or got != sha256:
            raise ChecksumError(
                f"assembled {target.name} from {len(sources)} parts: {written} bytes, sha256 {got}; "
                f"expected {size} bytes, sha256 {sha256}. A part is corrupt or from another "
                "version: reinstall the part packages"
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def assemble_gguf(parts: GgufParts, target: Path) -> Path:
    """The GGUF at ``target``, built from the installed part packages when not there yet.

    The packages must be installed even when the file is already built, as for every
    registry teacher: they are what the licence and provenance records point at."""
    sources = part_paths(parts)
    try:
        return assemble_parts(sources, target, parts.size, parts.sha256)
    except ChecksumError as err:
        raise ChecksumError(f"{err}. Fix: {parts.pip_command()} --force-reinstall") from err
