"""The FastAPI application factory. Nothing is created at import time."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy import Engine as DbEngine

from avokit.gateway.bodylimit import BodyLimit
from avokit.gateway.console import install_console
from avokit.gateway.db.session import checkpoint, is_sqlite, make_db_engine
from avokit.gateway.engines.base import Engine, ServedModel, scan_registry
from avokit.gateway.errors import ConfigError, install_error_handler
from avokit.gateway.metrics import GatewayMetrics, RequestMetrics
from avokit.gateway.requestid import RequestIds, install_request_id_logging, model_of
from avokit.gateway.routes import completions, health, models, usage
from avokit.gateway.routes import metrics as metrics_route
from avokit.gateway.routes.deps import COMPONENT_REF
from avokit.gateway.services import leases, prompts
from avokit.gateway.services.ratelimit import Limiter, RateLimiter
from avokit.gateway.services.readiness import Readiness
from avokit.gateway.services.redaction import install_redaction
from avokit.gateway.services.serving import Gateway
from avokit.gateway.services.webhooks import AlertDelivery
from avokit.gateway.settings import GatewaySettings, load_settings

log = logging.getLogger("avokit.gateway")


def build_engine(settings: GatewaySettings, served: dict[str, ServedModel]) -> Engine:
    """The configured generation engine."""
    if settings.engine == "vllm":
        if not settings.upstream:
            raise ConfigError("engine 'vllm' needs --upstream URL (AVOKIT_UPSTREAM)")
        from avokit.gateway.engines.vllm import VLLMEngine

        return VLLMEngine(served, settings.upstream)
    from avokit.gateway.engines.transformers_engine import TransformersEngine

    return TransformersEngine(served, settings.device, settings.max_batch_size,
                              settings.batch_wait_ms, dtype=settings.dtype)


async def build_limiter(settings: GatewaySettings) -> Limiter:
    """Per-process limits, or limits shared through Redis when ``redis_url`` is set."""
    if not settings.redis_url:
        return RateLimiter()
    from avokit.gateway.services.shared_limits import RedisRateLimiter

    limiter = RedisRateLimiter(settings.redis_url)
    if await asyncio.to_thread(limiter.ping):
        log.info("rate limits shared through Redis at %s", limiter.where)
    return limiter


def _load_tokenizers(engine: Engine, served: dict[str, ServedModel]) -> None:
    """Load every served model's tokenizer; one that fails is logged and retried by its requests."""
    for name in served:
        try:
            # and its literal copy for chat text (see services/prompts.py), built once here
            prompts.max_token_bytes(engine.tokenizer(name))
        except Exception:  # one broken registry entry must not keep the others offline
            log.exception("could not load the tokenizer of %r", name)


async def _every(interval_s: float, what: str, job: Callable[[], object]) -> None:
    """Run a blocking database job in a thread every ``interval_s``; a failure is logged, not fatal."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(job)
        except Exception:  # a transient database error must not end the loop for good
            log.exception("background job failed: %s", what)


def _background_jobs(settings: GatewaySettings, db: DbEngine, secret: str, owner: str,
                     reclaim: Callable[[], int]) -> list[asyncio.Task[None]]:
    """Start the jobs a serving process runs besides renewing its lease."""
    tasks = [asyncio.create_task(_every(settings.reconcile_interval_s,
                                        "reclaim reservations of stopped processes", reclaim))]
    if settings.alert_delivery:
        delivery = AlertDelivery(db, secret, owner, settings.delivery_policy())
        tasks.append(asyncio.create_task(delivery.run(settings.alert_poll_s)))
    if is_sqlite(db):
        tasks.append(asyncio.create_task(_every(
            settings.checkpoint_interval_s, "checkpoint the WAL", lambda: checkpoint(db))))
    return tasks


def create_app(settings: GatewaySettings, engine: Engine | None = None) -> FastAPI:
    """An app serving the registry's released models; state is built in the lifespan."""
    secret = settings.require_secret()
    served = scan_registry(settings.registry)
    # a key of its own for the account label's hash: the key HMAC secret is never reused
    salt = (hmac.new(secret.encode(), b"avokit metrics account label", hashlib.sha256)
            .hexdigest() if settings.metrics_account_labels else None)
    metrics = GatewayMetrics(served, account_salt=salt) if settings.metrics_enabled else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_redaction()
        install_request_id_logging()
        db = make_db_engine(settings.db_url)
        gen = engine or build_engine(settings, served)
        limiter = await build_limiter(settings)
        lease = await asyncio.to_thread(leases.register, db)
        # renewed from now on, not after start-up: loading tokenizers may take longer than
        # lease_s, and another host would take this process for dead
        tasks = [asyncio.create_task(_every(settings.lease_s / 3, "renew the process lease",
                                            lambda: leases.heartbeat(db, lease)))]
        try:
            app.state.gateway = Gateway(secret, db, gen, served, limiter,
                                        settings.max_tokens_default, owner=lease.id,
                                        metrics=metrics)
            app.state.readiness = Readiness(db, gen, list(served), getattr(limiter, "ping", None),
                                            timeout_s=settings.ready_timeout_s,
                                            engine_interval_s=settings.ready_engine_interval_s)
            # tokenizers now, in a thread: loaded by the first request, they would block the event
            # loop (and every other request) for seconds
            await asyncio.to_thread(_load_tokenizers, gen, served)

            def reclaim() -> int:
                return leases.reclaim(db, settings.lease_s, settings.reservation_stale_s, lease)

            # reservations of a process that died (on this host: known now, not after a delay)
            settled = await asyncio.to_thread(reclaim)
            if settled:
                log.warning("settled %d reservations left open by a stopped process", settled)

            tasks += _background_jobs(settings, db, secret, lease.id, reclaim)
            yield
        finally:
            for task in tasks:
                task.cancel()
            await gen.aclose()
            await asyncio.to_thread(limiter.close)
            await asyncio.to_thread(leases.unregister, db, lease)
            db.dispose()
            if metrics is not None:
                metrics.close()

    # no docs or schema routes: the only keyless API routes are /health, /health/live and
    # /health/ready (the console's pages need a console session, but its sign-in pages and
    # static files; /metrics needs the metrics token)
    app = FastAPI(title="avokit gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.metrics = metrics
    app.state.metrics_token = settings.metrics_token.get_secret_value() or None
    install_error_handler(app)
    _include_routes(app)
    install_console(app, settings)
    # each added one wraps the ones before: an oversized body is refused before anything
    # reads or parses it, and is still counted and answered with its request id
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if metrics is not None:
        app.add_middleware(RequestMetrics, metrics=metrics, model_of=model_of)
    app.add_middleware(RequestIds)
    app.openapi = _true_openapi(app)  # type: ignore[method-assign]
    return app


def _include_routes(app: FastAPI) -> None:
    """The API's routes, the generation routes first: a request is matched against the
    routes in order (each costs a regular-expression match and scope copies; the health and
    metrics routes ahead of them cost the chat route ~8 matches), and no two share a path."""
    for router in (completions.router, models.router, usage.router, health.router,
                   metrics_route.router):
        app.include_router(router)


def _true_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema without the 422 it adds to every route: validation errors are
    answered 400 in OpenAI's error shape (declared on each route), never 422."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    op.get("responses", {}).pop("422", None)
                    _hoist_body_schema(op, components)
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema
    return openapi


def _hoist_body_schema(op: dict[str, Any], components: dict[str, Any]) -> None:
    """A body declared with :func:`~avokit.gateway.routes.deps.json_body` carries its model's
    schema inline: move it and its ``$defs`` to ``components``, as FastAPI does for a
    declared body, and refer to it there."""
    content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    inline = content.get("schema", {})
    if "title" not in inline or "$ref" in inline:
        return
    defs = {**inline.pop("$defs", {}), inline["title"]: inline}
    for name, sub in defs.items():
        if components.setdefault(name, sub) != sub:
            raise ConfigError(f"two OpenAPI schemas are named {name!r}")
    content["schema"] = {"$ref": COMPONENT_REF + inline["title"]}


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` workers: settings from ``AVOKIT_*``."""
    return create_app(load_settings())
