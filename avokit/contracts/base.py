"""What every contract model shares: strict fields, NaN kept in JSON, one versioned reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from avokit.errors import AvokitError

M = TypeVar("M", bound="Contract")


class ContractError(AvokitError):
    """A stage file is missing, corrupt, from an older avokit or does not match its checksums.

    The message names the file (and the field or the file that failed), and says how to
    regenerate it where that is the fix.
    """


class Contract(BaseModel):
    """Base of every file model: unknown fields are errors (a typo is not silently dropped),
    and NaN (an accuracy over zero items) survives the JSON round trip."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


def _where(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{loc}: {first['msg']}"


def read_versioned(path: Path, model: type[M], version: int, regenerate: str) -> M:
    """Read ``path`` as ``model``; its ``schema_version`` must equal ``version``.

    Args:
        path: the JSON file.
        model: the contract model to validate against.
        version: the schema version this avokit writes and reads.
        regenerate: the command that writes a current file (used in every error message).

    Raises:
        ContractError: missing or corrupt file, no or another ``schema_version``, or a field
            that does not validate (the message names the field path).
    """
    if not path.is_file():
        raise ContractError(f"{path}: not found; {regenerate}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ContractError(f"{path}: not valid JSON ({err}); {regenerate}") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: expected a JSON object; {regenerate}")
    found = raw.get("schema_version")
    if found is None:
        # files written before the contracts existed: their fields differ, so guessing would
        # serve or release something nobody checked
        raise ContractError(f"{path}: no schema_version field (written by an older avokit); "
                            f"regenerate it: {regenerate}")
    if found != version:
        raise ContractError(f"{path}: schema_version {found!r}, this avokit reads version "
                            f"{version}; regenerate it: {regenerate}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ContractError(f"{path}: invalid field {_where(err)}; {regenerate}") from None
