"""The provenance block every bench results JSON carries (bench/provenance.py) and the one writer
that adds it (bench/results_io.py), on throwaway git repositories and files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.provenance import Provenance, RunCommits, git_state, run_commits, snapshot_sha256
from bench.results_io import write_json, write_results


def _git(repo: Path, *cmd: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *cmd], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "a.py").write_text("x = 1\n")
    _git(root, "add", "a.py")
    _git(root, "commit", "-qm", "one")
    return root


def test_git_state_names_the_commit_and_the_dirty_paths(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo) == (head, [])
    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("untracked files do not make the tree dirty\n")
    assert git_state(repo) == (head, ["a.py"])


def test_outside_a_checkout_the_commit_is_unknown(tmp_path: Path) -> None:
    assert git_state(tmp_path) == ("unknown", [])


def test_collect_fills_every_field(repo: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"documents": 3}\n')
    (repo / "a.py").write_text("x = 3\n")
    prov = Provenance.collect(dtype="float32", corpus=manifest, root=repo,
                              training={"kd/seed1": ["c1", "c1"], "ce/seed1": ["c1", "c2", "c1"]})
    assert prov.commit == _git(repo, "rev-parse", "HEAD") and prov.dirty and prov.dirty_paths == ["a.py"]
    assert prov.dtype == "float32" and prov.cpu and prov.torch
    assert prov.corpus_sha256 == snapshot_sha256(manifest)
    assert prov.training == {"kd/seed1": RunCommits(commits=["c1"], spans_commits=False),
                             "ce/seed1": RunCommits(commits=["c1", "c2"], spans_commits=True)}


def test_a_run_trained_across_two_commits_says_so() -> None:
    out = run_commits({"a/seed0": ["x", "x", "y"], "a/seed1": ["x"], "a/seed2": ["", "x"]})
    assert {k: v.spans_commits for k, v in out.items()} == {"a/seed0": True, "a/seed1": False, "a/seed2": False}
    assert out["a/seed0"].commits == ["x", "y"]


def test_snapshot_hash_follows_names_and_contents(tmp_path: Path) -> None:
    snap = tmp_path / "corpus"
    (snap / "sub").mkdir(parents=True)
    (snap / "train.parquet").write_bytes(b"abc")
    (snap / "sub" / "manifest.json").write_text("{}")
    first = snapshot_sha256(snap)
    assert snapshot_sha256(snap) == first
    (snap / "train.parquet").write_bytes(b"abd")
    assert snapshot_sha256(snap) != first
    (snap / "train.parquet").write_bytes(b"abc")
    (snap / "sub" / "manifest.json").rename(snap / "sub" / "other.json")
    assert snapshot_sha256(snap) != first
    with pytest.raises(FileNotFoundError, match="corpus snapshot"):
        snapshot_sha256(tmp_path / "missing")


def test_the_writer_adds_the_block_and_it_reads_back_typed(tmp_path: Path) -> None:
    prov = Provenance.collect(dtype=None)
    write_results(tmp_path / "out" / "study", {"verdict": "holds"}, "# study\n", prov)
    saved = json.loads((tmp_path / "out" / "study.json").read_text())
    assert saved["verdict"] == "holds"
    assert Provenance.model_validate(saved["provenance"]) == prov
    assert (tmp_path / "out" / "study.md").read_text() == "# study\n"


def test_the_writer_refuses_a_result_that_brings_its_own_block(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="provenance"):
        write_json(tmp_path / "x.json", {"provenance": {}}, Provenance.collect(dtype=None))
    assert not (tmp_path / "x.json").exists()


def test_the_model_refuses_unknown_and_missing_fields() -> None:
    good = Provenance.collect(dtype="bf16").model_dump()
    with pytest.raises(ValueError, match="extra"):
        Provenance.model_validate({**good, "extra": 1})
    with pytest.raises(ValueError, match="commit"):
        Provenance.model_validate({k: v for k, v in good.items() if k != "commit"})


def test_every_bench_results_json_goes_through_the_writer() -> None:
    """No bench script writes a results JSON past the writer: a ``json.dumps`` written to a file
    named like a result under bench/results would carry no provenance."""
    root = Path(__file__).resolve().parents[1] / "bench"
    results = {p.name for p in (root / "results").glob("*.json")}
    assert "transfer.json" in results  # the scan below looks at real names
    offenders = []
    for script in root.rglob("*.py"):
        text = script.read_text()
        for name in results:
            stem = name.removesuffix(".json")
            if f'"{name}").write_text(json.dumps' in text or f'"{stem}").with_suffix(".json").write_text' in text:
                offenders.append(f"{script.relative_to(root)}: {name}")
    assert offenders == []
