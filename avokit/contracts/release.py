"""``REGISTRY/<name>/release.json``: what was released, from what, and every shipped file's
sha256. Written by :func:`avokit.evaluate.release`; read by the gateway, which serves a release
only when its gate passed and every listed file still matches its checksum."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, model_validator

from avokit.checksums import file_sha256
from avokit.contracts.base import Contract, ContractError, read_versioned
from avokit.contracts.metrics import DataLineage, GateVerdict, TeacherLineage

RELEASE_SCHEMA_VERSION: Final = 1
MANIFEST_NAME = "release.json"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
REGENERATE = "release the run again with `avokit release RUN_DIR --name NAME` (after `avokit eval`)"


def combined_weights_sha256(weights: dict[str, str]) -> str:
    """One sha256 over every weights file's name and sha256 (sharded or not): the digest that
    ``metrics.json`` records as ``student_sha256``."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(f"{name}:{weights[name]}\n".encode())
    return digest.hexdigest()


class TokenizerInfo(Contract):
    """The student's own tokenizer as shipped."""

    kind: str  # resolved student.tokenizer.kind: "train" (BPE on the corpus), "path" or "pretrained"
    vocab_size: int | None
    files: list[str]  # the shipped tokenizer files (their sha256 are in ReleaseManifest.files)


class Lineage(Contract):
    """Where the released student comes from."""

    recipe: str
    eval_run: int  # the evaluation whose gate verdict released it
    teachers: list[TeacherLineage]
    data: DataLineage
    # the weights training started from (its licence carries over); None for a student trained
    # from scratch and in releases made before it was recorded
    pretrained_start: TeacherLineage | None = None


class EvalSummary(Contract):
    """The headline figures of that evaluation (the full ones stay in the run's metrics.json)."""

    bpb: dict[str, float]  # model -> held-out bits per byte
    domain_bpb: dict[str, dict[str, float]]  # model -> domain -> bits per byte
    tasks: dict[str, float]  # task -> student accuracy over all items
    contamination_rate: float


class ReleaseManifest(Contract):
    """The whole of ``release.json``."""

    schema_version: Literal[1] = RELEASE_SCHEMA_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    created: str
    avokit_version: str
    context_length: int = Field(ge=0)  # 0: the model config states none
    license: str | None
    weights: dict[str, str] = Field(min_length=1)  # *.safetensors file -> sha256
    weights_sha256: str  # combined_weights_sha256(weights)
    files: dict[str, str]  # every other shipped file (config, tokenizer, card) -> sha256
    tokenizer: TokenizerInfo
    lineage: Lineage
    gate: GateVerdict
    eval: EvalSummary

    @model_validator(mode="after")
    def _consistent(self) -> ReleaseManifest:
        if combined_weights_sha256(self.weights) != self.weights_sha256:
            raise ValueError("weights_sha256 is not the digest of the weights listed in `weights`")
        missing = [f for f in self.tokenizer.files if f not in self.files]
        if missing:
            raise ValueError(f"tokenizer.files {missing} have no checksum in `files`")
        return self

    def write(self, directory: Path) -> Path:
        """Write ``directory/release.json``; returns its path."""
        path = directory / MANIFEST_NAME
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def digest_files(directory: Path, names: list[str]) -> dict[str, str]:
    """``{name: sha256}`` of the named files of ``directory``."""
    return {n: file_sha256(directory / n) for n in sorted(names)}


def read_release_manifest(directory: Path) -> ReleaseManifest:
    """Read ``directory/release.json``; :class:`~avokit.contracts.ContractError` names the file
    and says how to regenerate it where it is missing, old or invalid."""
    return read_versioned(directory / MANIFEST_NAME, ReleaseManifest, RELEASE_SCHEMA_VERSION,
                          REGENERATE)


def verify_release_files(directory: Path, manifest: ReleaseManifest) -> None:
    """Check every file ``manifest`` lists against its sha256, and that no weights file it does
    not list lies beside them (a loader would read it too).

    Raises:
        ContractError: names the first file that is missing, changed or unlisted.
    """
    listed = {**manifest.weights, **manifest.files}
    for name, want in sorted(listed.items()):
        path = directory / name
        if not path.is_file():
            raise ContractError(f"{path}: listed in {directory / MANIFEST_NAME} but missing; "
                                f"the release is incomplete: {REGENERATE}")
        got = file_sha256(path)
        if got != want:
            raise ContractError(f"{path}: sha256 {got} does not match {want} recorded in "
                                f"{directory / MANIFEST_NAME}: the file changed after release; "
                                "refusing to serve it (restore the file or release the run again)")
    extra = sorted(p.name for p in directory.glob("*.safetensors") if p.name not in manifest.weights)
    if extra:
        raise ContractError(f"{directory / extra[0]}: weights file not listed in "
                            f"{directory / MANIFEST_NAME}; refusing to serve a release with "
                            "unrecorded weights")
