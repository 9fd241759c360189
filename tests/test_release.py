"""release() input checks that need no model: bad names, missing or old report, failed gate,
missing student."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from avokit.evaluate.release import ReleaseError, release

sys.path.insert(0, str(Path(__file__).parent))
from contract_fixtures import metrics


def _run(tmp: Path, passed: bool) -> Path:
    run = tmp / "runs" / "r"
    (run / "report").mkdir(parents=True)
    (run / "report" / "metrics.json").write_text(json.dumps(metrics(passed)))
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
    with pytest.raises(ReleaseError, match="metrics.json: not valid JSON"):
        release(passed, "ok-name", reg)
    assert not reg.exists() or not any(reg.iterdir())


def test_release_refuses_metrics_from_an_older_avokit(tmp_path: Path) -> None:
    run = _run(tmp_path, passed=True)
    old = metrics(passed=True)
    del old["schema_version"]
    (run / "report" / "metrics.json").write_text(json.dumps(old))
    with pytest.raises(ReleaseError, match=r"metrics.json: no schema_version field .* run `avokit eval RECIPE` again"):
        release(run, "ok-name", tmp_path / "registry")


def _student_run(tmp: Path, **extra: object) -> Path:
    """A run with a (fake) student whose weights are the evaluated ones and whose gate passed."""
    from avokit.evaluate.release import weights_sha256

    run = tmp / "runs" / "r"
    student = run / "student"
    student.mkdir(parents=True)
    (student / "model.safetensors").write_bytes(b"weights" * 100)
    (student / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 64}')
    (student / "tokenizer.json").write_text("{}")
    (run / "report").mkdir()
    body = {**metrics(passed=True, student_sha256=weights_sha256(student)), **extra}
    (run / "report" / "metrics.json").write_text(json.dumps(body))
    return run


def test_release_command_defaults_to_the_recipes_registry_and_name(tmp_path: Path) -> None:
    from avokit.cli.main import main
    from avokit.contracts import read_release_manifest

    recipe_registry = tmp_path / "recipe-folder" / "registry"
    run = _student_run(tmp_path, release_registry=str(recipe_registry), release_name="avo-mini")
    main(["release", str(run)])
    manifest = read_release_manifest(recipe_registry / "avo-mini")
    assert manifest.name == "avo-mini" and manifest.context_length == 64
    assert list(manifest.weights) == ["model.safetensors"] and manifest.tokenizer.files == ["tokenizer.json"]
    main(["release", str(run), "--name", "other", "--registry", str(tmp_path / "elsewhere")])
    assert (tmp_path / "elsewhere" / "other" / "release.json").is_file()


def test_release_command_without_recorded_registry_asks_for_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from avokit.cli.main import main

    run = _student_run(tmp_path)
    with pytest.raises(SystemExit):
        main(["release", str(run)])
    assert "records no release name or registry; give --name and --registry" in capsys.readouterr().err
