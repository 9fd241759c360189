"""GET /v1/usage (the calling key's own account) and GET /v1/admin/usage (any account, for
admin-scoped keys): billed usage from the ledger, grouped by day, model or key.

Both read the ledger with the function behind the console's usage pages and CSV downloads
(:func:`avokit.gateway.services.metering.usage`) and group it with the console's daily
totals, so the numbers are the same wherever they are read.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from avokit.gateway.db.models import Account
from avokit.gateway.db.session import session_factory
from avokit.gateway.errors import BadRequestError, NotFoundError, PermissionDeniedError
from avokit.gateway.protocol import ERROR_RESPONSES
from avokit.gateway.protocol_usage import GroupBy, UsageBucket, UsageReport, UsageTotals
from avokit.gateway.routes.deps import current_key, gateway
from avokit.gateway.services import metering, usage
from avokit.gateway.services.keys import KeyInfo

router = APIRouter()
_RESPONSES: dict[int | str, dict[str, Any]] = {status: ERROR_RESPONSES[status] for status in (400, 401, 403, 404)}


def report(request: Request, account_id: int | None, start_time: str | None,
           end_time: str | None, group_by: str) -> UsageReport:
    """The usage report of one account (None: every account) for a query (blocking)."""
    window = usage.parse_window(start_time, end_time)
    group = usage.parse_group_by(group_by)
    with session_factory(gateway(request).db)() as s:
        if account_id is not None and s.get(Account, account_id) is None:
            raise NotFoundError(f"account_id: no account {account_id}", param="account_id",
                                code="not_found")
        rows = metering.usage(s, since=window.start, until=window.end, account_id=account_id)
    every = usage.Totals()
    for row in rows:
        every.add(row)
    return UsageReport(
        account_id=account_id, start_time=int(window.start.timestamp()),
        end_time=int(window.end.timestamp()), group_by=cast(GroupBy, group),
        data=[UsageBucket(group=name, requests=t.requests, prompt_tokens=t.prompt_tokens,
                          completion_tokens=t.completion_tokens, total_tokens=t.tokens,
                          cost_micros=t.cost_micros)
              for name, t in usage.grouped_totals(rows, group)],
        total=UsageTotals(requests=every.requests, prompt_tokens=every.prompt_tokens,
                          completion_tokens=every.completion_tokens, total_tokens=every.tokens,
                          cost_micros=every.cost_micros))


@router.get("/v1/usage", response_model=UsageReport, responses=_RESPONSES)
async def own_usage(request: Request, key: Annotated[KeyInfo, Depends(current_key)],
                    start_time: str | None = None, end_time: str | None = None,
                    group_by: str = "day") -> UsageReport:
    """The calling key's account: every key of it, ``[start_time, end_time)`` (Unix seconds;
    default the last 30 days, at most 366), grouped by ``day``, ``model`` or ``key``."""
    return await run_in_threadpool(report, request, key.account_id, start_time, end_time,
                                   group_by)


@router.get("/v1/admin/usage", response_model=UsageReport, responses=_RESPONSES)
async def admin_usage(request: Request, key: Annotated[KeyInfo, Depends(current_key)],
                      account_id: str | None = None, start_time: str | None = None,
                      end_time: str | None = None, group_by: str = "day") -> UsageReport:
    """Any account's usage (``account_id``; every account when it is left out), for keys of
    scope ``admin`` only; the same query and answer as ``/v1/usage``."""
    if key.scope != "admin":
        raise PermissionDeniedError("/v1/admin/usage needs a key of scope admin.")
    account = None
    if account_id is not None:
        if not account_id.isdigit() or len(account_id) > 18:
            raise BadRequestError(f"account_id: expected an account id (a whole number), not "
                                  f"{account_id[:40]!r}", param="account_id")
        account = int(account_id)
    return await run_in_threadpool(report, request, account, start_time, end_time, group_by)
