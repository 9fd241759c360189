"""release() input checks that need no model: bad names, missing report, failed gate, missing student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avokit.evaluate.release import ReleaseError, release


def _run(tmp: Path, passed: bool) -> Path:
    run = tmp / "runs" / "r"
    (run / "report").mkdir(parents=True)
    checks = [{"name": "must_beat_baseline", "value": 2.0, "threshold": 1.9, "passed": passed,
               "message": "student BPB 2.0000 >= baseline BPB 1.9000"}]
    (run / "report" / "metrics.json").write_text(json.dumps({"gate": {"passed": passed, "checks": checks}}))
    return run


def test_release_refusals(tmp_path: Path) -> None:
    reg = tmp_path / "registry"
    with pytest.raises(ReleaseError, match="no evaluation report"):
        release(tmp_path / "nowhere", "ok-name", reg)
    failed = _run(tmp_path / "a", passed=False)
    with pytest.raises(ReleaseError, match=r"failed its gate: must_beat_baseline \(student BPB 2.0000 >= baseline"):
        release(failed, "ok-name", reg)
    with pytest.raises(ReleaseError, match="--name 'bad/name'"):
        release(failed, "bad/name", reg)
    passed = _run(tmp_path / "b", passed=True)
    with pytest.raises(ReleaseError, match="no trained student"):
        release(passed, "ok-name", reg)
    (passed / "report" / "metrics.json").write_text("{not json")
    with pytest.raises(ReleaseError, match="corrupt metrics file"):
        release(passed, "ok-name", reg)
    assert not reg.exists() or not any(reg.iterdir())
