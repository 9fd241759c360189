"""What produced a benchmark result: one typed block in every results JSON that bench/ writes.

A review must be able to tell which code, numeric type, machine and data made a number: the
fusion proof's seeds 0-4 were trained while the dense targets changed, and nothing in their
results said which seed saw which version. ``Provenance.collect`` is called by the process
that writes a result; ``training`` carries, per run (e.g. ``"kd_gemma/seed1"``), the commits
its training processes ran on, so a run trained across two commits says so.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

ROOT = Path(__file__).resolve().parents[1]


class RunCommits(BaseModel):
    """The commits one run's training processes ran on, oldest first, each once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commits: list[str]
    spans_commits: bool = Field(description="trained on more than one commit: its segments differ in code")


class Provenance(BaseModel):
    """Commit (and whether the tree was dirty), dtype, CPU model, torch version, corpus hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commit: str = Field(description="git HEAD of the checkout that wrote the result ('unknown' outside git)")
    dirty: bool = Field(description="tracked files differed from the commit")
    dirty_paths: list[str] = Field(default_factory=list)
    dtype: str | None = Field(description="the numeric type models ran in; None: no model ran (gateway)")
    cpu: str
    torch: str | None = Field(description="torch.__version__; None where torch is not installed")
    corpus_sha256: str | None = Field(
        description="sha256 of the corpus snapshot the result used (a manifest file or a folder's "
                    "files); None: the benchmark reads no corpus")
    training: dict[str, RunCommits] = Field(default_factory=dict)

    @classmethod
    def collect(cls, *, dtype: str | None, corpus: Path | None = None,
                training: Mapping[str, Iterable[str]] | None = None, root: Path = ROOT) -> Provenance:
        """This process's provenance; ``training`` maps a run to the commits of its processes."""
        commit, dirty = git_state(root)
        return cls(commit=commit, dirty=bool(dirty), dirty_paths=dirty, dtype=dtype, cpu=cpu_model(),
                   torch=_torch_version(), corpus_sha256=None if corpus is None else snapshot_sha256(corpus),
                   training=run_commits(training or {}))


def git_state(root: Path = ROOT) -> tuple[str, list[str]]:
    """(HEAD commit, tracked paths that differ from it); ('unknown', []) outside a git checkout."""
    def git(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown", []
    status = git("status", "--porcelain", "--untracked-files=no").stdout
    return head.stdout.strip(), [line[3:] for line in status.splitlines() if line.strip()]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def snapshot_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted by name)."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if not path.is_dir():
        raise FileNotFoundError(f"corpus snapshot {path} does not exist")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def run_commits(training: Mapping[str, Iterable[str]]) -> dict[str, RunCommits]:
    """Per run, its processes' commits in order, each once; ``spans_commits`` when several."""
    out = {}
    for run, commits in training.items():
        seen = list(dict.fromkeys(c for c in commits if c))
        out[run] = RunCommits(commits=seen, spans_commits=len(seen) > 1)
    return out


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__)
