"""Shared base for recipe models: unknown keys are errors, values are validated on assignment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every recipe section."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
