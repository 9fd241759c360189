"""Typed stage contracts: release.json and metrics.json are read through the models that
write them; the gateway refuses a release whose files changed or whose manifest is old."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from avokit.cli.main import main
from avokit.contracts import ContractError, EvalMetrics, read_metrics, read_release_manifest
from avokit.gateway.engines.base import scan_registry
from avokit.gateway.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from contract_fixtures import metrics, write_release_manifest

SECRET = "test-secret-0123456789abcdef"


def _release(registry: Path, name: str = "avo", passed: bool = True) -> Path:
    """A release directory with fake weights (the gateway checks them before loading any)."""
    out = registry / name
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (out / "config.json").write_text('{"model_type": "llama"}')
    (out / "tokenizer.json").write_text('{"version": "1.0"}')
    write_release_manifest(out, name, context_length=128, passed=passed)
    return out


def _serve(registry: Path, tmp: Path, capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> str:
    """`avokit serve` on ``registry``: it must refuse to start; returns its error line."""
    monkeypatch.setenv("AVOKIT_SECRET", SECRET)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--registry", str(registry), "--db", f"sqlite:///{tmp}/g.db"])
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_gateway_serves_an_intact_release_and_skips_a_failed_gate(tmp_path: Path) -> None:
    _release(tmp_path, "avo")
    _release(tmp_path, "bad-gate", passed=False)
    served = scan_registry(tmp_path)
    assert list(served) == ["avo"] and served["avo"].context_length == 128
    manifest = read_release_manifest(tmp_path / "avo")
    assert manifest.lineage.teachers[0].license == "Apache-2.0" and manifest.weights


def test_gateway_refuses_tampered_weights_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _release(tmp_path / "registry", "avo")
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0x01  # one byte
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"model.safetensors: sha256 \w+ does not match"):
        scan_registry(tmp_path / "registry")
    err = _serve(tmp_path / "registry", tmp_path, capsys, monkeypatch)
    assert f"{weights}: sha256" in err and "refusing to serve" in err


def test_gateway_refuses_changed_tokenizer_and_unlisted_weights(tmp_path: Path) -> None:
    out = _release(tmp_path, "avo")
    (out / "tokenizer.json").write_text('{"version": "2.0"}')
    with pytest.raises(ConfigError, match=r"tokenizer.json: sha256"):
        scan_registry(tmp_path)
    (out / "tokenizer.json").write_text('{"version": "1.0"}')
    (out / "model-00002.safetensors").write_bytes(b"extra")
    with pytest.raises(ConfigError, match=r"model-00002.safetensors: weights file not listed"):
        scan_registry(tmp_path)
    (out / "model-00002.safetensors").unlink()
    (out / "config.json").unlink()
    with pytest.raises(ConfigError, match=r"config.json: listed in .* but missing"):
        scan_registry(tmp_path)


def test_release_json_without_version_gives_the_regenerate_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _release(tmp_path / "registry", "avo")
    legacy = json.loads((out / "release.json").read_text())
    del legacy["schema_version"]
    (out / "release.json").write_text(json.dumps(legacy))
    err = _serve(tmp_path / "registry", tmp_path, capsys, monkeypatch)
    assert "release.json: no schema_version field (written by an older avokit)" in err
    assert "regenerate it: release the run again with `avokit release RUN_DIR --name NAME`" in err
    legacy["schema_version"] = 99
    (out / "release.json").write_text(json.dumps(legacy))
    with pytest.raises(ConfigError, match="schema_version 99, this avokit reads version 1"):
        scan_registry(tmp_path / "registry")


def test_release_manifest_fields_are_checked_by_name(tmp_path: Path) -> None:
    out = _release(tmp_path, "avo")
    body = json.loads((out / "release.json").read_text())
    good = body["weights_sha256"]
    body["weights_sha256"] = "0" * 64
    (out / "release.json").write_text(json.dumps(body))
    with pytest.raises(ContractError, match="weights_sha256 is not the digest"):
        read_release_manifest(out)
    body["weights_sha256"] = good
    body["gate"]["passed"] = "maybe"
    (out / "release.json").write_text(json.dumps(body))
    with pytest.raises(ContractError, match=r"release.json: invalid field gate.passed"):
        read_release_manifest(out)


def test_metrics_contract_round_trip_and_old_files(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    body = metrics(passed=True, student_sha256="a" * 64)
    body["tasks"]["student"]["toy"]["acc"]["value"] = float("nan")  # accuracy over no items
    EvalMetrics.model_validate(body).write(path)
    back = read_metrics(path)
    toy = back.tasks["student"]["toy"]
    assert back.bpb["student"].domains["english"].bpb == 2.0 and toy.metric("acc").value != toy.metric("acc").value
    assert toy.clean.model_extra["acc"].n == 4 and back.teachers[0].fingerprint == "f" * 64
    del body["schema_version"]
    path.write_text(json.dumps(body))
    with pytest.raises(ContractError, match=r"no schema_version field .* regenerate it: run `avokit eval RECIPE` again"):
        read_metrics(path)
    body["schema_version"] = 1
    body["bpb"]["student"]["domains"]["english"].pop("bytes")
    path.write_text(json.dumps(body))
    with pytest.raises(ContractError, match=r"invalid field bpb.student.domains.english.bytes: Field required"):
        read_metrics(path)
