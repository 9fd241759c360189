"""The usage API's response shapes (``GET /v1/usage``, ``GET /v1/admin/usage``).

Money is integer micro-units, as everywhere in the gateway; times are Unix seconds (UTC).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

GroupBy = Literal["day", "model", "key"]


class UsageTotals(BaseModel):
    """Billed usage summed over a window (every charge in it, or one group's)."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_micros: int


class UsageBucket(BaseModel):
    """One group's billed usage: a UTC day (``YYYY-MM-DD``), a model or a key id."""

    object: Literal["usage.bucket"] = "usage.bucket"
    group: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_micros: int


class UsageReport(BaseModel):
    """Billed usage of an account (or of every account, admin only) in ``[start_time,
    end_time)``, grouped; the same ledger rows as the console's usage page and CSV."""

    object: Literal["usage"] = "usage"
    account_id: int | None
    start_time: int
    end_time: int
    group_by: GroupBy
    data: list[UsageBucket]
    total: UsageTotals
