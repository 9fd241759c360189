"""GET /v1/models: only the models this key may use."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from avokit.gateway.protocol import ERROR_RESPONSES, ModelCard, ModelList
from avokit.gateway.routes.deps import current_key, gateway
from avokit.gateway.services.keys import KeyInfo

router = APIRouter()


@router.get("/v1/models", response_model=ModelList,
            responses={401: ERROR_RESPONSES[401]})
async def list_models(request: Request, key: Annotated[KeyInfo, Depends(current_key)]
                      ) -> ModelList:
    """Served models filtered by the key's allowed models."""
    gw = gateway(request)
    return ModelList(data=[ModelCard(id=m.name, created=m.created)
                           for m in gw.models.values() if key.may_use(m.name)])
