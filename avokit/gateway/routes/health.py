"""Health: ``/health/live`` (the process answers), ``/health/ready`` (it can serve: database
reachable and migrated, Redis when configured, engine generating), ``/health`` (= live).

They need no key and say nothing about keys, accounts or models beyond the part that fails.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from avokit.gateway.services.readiness import OK, Readiness

router = APIRouter()
_NOT_A_FAILURE = (OK, "not configured")


@router.get("/health")
@router.get("/health/live")
async def live() -> dict[str, str]:
    """Liveness: the event loop answers."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """200 when every part is ready, else 503 naming the parts that are not."""
    readiness: Readiness = request.app.state.readiness
    checks = await readiness.check()
    failing = [part for part, state in checks.items() if state not in _NOT_A_FAILURE]
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing, "checks": checks},
                            status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})
