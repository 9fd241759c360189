"""The scalar field types every API shape shares (strings checked for valid Unicode, OpenAI's
integer and float ranges)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("invalid Unicode: contains a lone UTF-16 surrogate") from None
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]
# function and schema names: OpenAI's pattern and length
Name = Annotated[Text, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
# token counts fit a signed 32-bit column; anything above is over every context anyway
TokenCount = Annotated[int, Field(ge=0, le=2**31 - 1)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
