"""Prometheus metrics of one gateway process (prometheus-client), and their exposition.

Names are in the ``avokit_`` namespace and follow Prometheus conventions: counters end in
``_total``, durations are ``_seconds``, money is integer micro-units. Labels are bounded and
carry no key, secret or prompt text: ``route`` is the matched route's path template,
``model`` is a served model's name (anything else a client sends is counted as ``other``),
``status`` the HTTP status, ``kind`` a fixed refusal kind; ``account`` (spend only, and only
with ``AVOKIT_METRICS_ACCOUNT_LABELS=1``) is a keyed hash of the account id.

One worker keeps its values in the process. Several uvicorn workers: with
``PROMETHEUS_MULTIPROC_DIR`` set before the workers start (``avokit serve --workers N`` does it,
and only then: every value written to a memory-mapped file costs a lock and a system call),
every process writes its values to files there and an exposition sums them (gauges of live
processes only). Replicas: each serves its own ``/metrics``; Prometheus scrapes each and sums
across them (the ``instance`` label tells them apart).

The request path is kept cheap (it runs on every request): the labelled children a request
writes are bound once and kept (``labels()`` costs a validation, a lock and a dictionary lookup
per call), in maps bounded by the label policy above (route templates x served models and
``other`` x HTTP statuses).

Where they are served (never unauthenticated on the customer port): ``/metrics`` on the API
port answers only ``Authorization: Bearer $AVOKIT_METRICS_TOKEN`` (404 without a token
configured), and ``avokit serve --metrics-bind HOST:PORT`` serves them without a token on a
separate admin address.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from avokit.gateway.metrics_admin import MULTIPROC_ENV, multiprocess_registry

OTHER_MODEL = "other"
# refusal kinds (the ``kind`` label of avokit_refusals_total)
REFUSAL_KINDS = ("rate_limit_requests", "rate_limit_tokens", "credit", "spend_cap",
                 "limits_unavailable")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0, 300.0)
_ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                1.0, 2.5)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process writes its metrics to files."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and values.ValueClass is values.MutexValue:
        # prometheus-client chose its value class when first imported, before the variable
        # was set: the files would never be written, and the sums would silently miss us
        from avokit.gateway.errors import ConfigError

        raise ConfigError(f"{MULTIPROC_ENV} was set after prometheus_client was imported; "
                          "set it before the gateway process starts")
    return path


def multiprocess_exposition(path: str) -> bytes:
    """Every process's metrics under ``path``, summed (what the admin listener serves)."""
    return generate_latest(multiprocess_registry(path))


@dataclass(frozen=True, slots=True)
class ModelSeries:
    """The children of one ``model`` label value, bound once (see the module docstring)."""

    prompt_tokens: Counter
    generation_tokens: Counter
    spend: Counter | None  # None with account labels: bound per account when charged
    engine_errors: Counter
    ttft: Histogram
    itl: Histogram
    e2e: Histogram


class GaugeSpan:
    """A reusable context manager: the gauge is one higher while a block runs (no generator
    and no allocation per use, unlike ``contextlib.contextmanager``)."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._gauge.dec()


class GatewayMetrics:
    """The metrics of one process; built by ``create_app``, never at import."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, models: Iterable[str], account_salt: str | None = None) -> None:
        """``models``: the served models (the only ``model`` label values besides ``other``);
        ``account_salt``: when given, spend is also labelled by a keyed hash of the account."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.models = frozenset(models)
        self._salt = account_salt.encode() if account_salt is not None else None
        self._multiproc = multiprocess_dir()
        reg = self.registry
        self.requests = Counter("avokit_requests", "HTTP requests answered, by route, model "
                                "and status", ["route", "model", "status"], registry=reg)
        self.prompt_tokens = Counter("avokit_prompt_tokens", "Prompt tokens billed",
                                     ["model"], registry=reg)
        self.generation_tokens = Counter("avokit_generation_tokens",
                                         "Completion tokens billed", ["model"], registry=reg)
        spend_labels = ["model", "account"] if self._salt is not None else ["model"]
        self.spend = Counter("avokit_spend_micros", "Charged to accounts, micro-units",
                             spend_labels, registry=reg)
        self.refusals = Counter("avokit_refusals", "Requests refused by a rate limit, credit, "
                                "a spend cap, or an unreachable limit store", ["kind"],
                                registry=reg)
        self.engine_errors = Counter("avokit_engine_errors", "Generations the engine failed",
                                     ["model"], registry=reg)
        self.ttft = Histogram("avokit_time_to_first_token_seconds", "Streamed requests: "
                              "admission to the first token", ["model"],
                              buckets=_LATENCY_BUCKETS, registry=reg)
        self.itl = Histogram("avokit_inter_token_latency_seconds", "Streamed requests: time "
                             "between successive token events", ["model"],
                             buckets=_ITL_BUCKETS, registry=reg)
        self.e2e = Histogram("avokit_e2e_request_latency_seconds", "Generation requests: "
                             "arrival to the last byte sent", ["model"],
                             buckets=_LATENCY_BUCKETS, registry=reg)
        self.waiting = Gauge("avokit_requests_waiting", "Requests being admitted (key check, "
                             "tokenisation, limits, reservation)", registry=reg,
                             multiprocess_mode="livesum")
        self.running = Gauge("avokit_requests_running", "Requests in the engine",
                             registry=reg, multiprocess_mode="livesum")
        self.open_reservations = Gauge("avokit_open_reservations", "Credit reservations held "
                                       "by live requests of this process", registry=reg,
                                       multiprocess_mode="livesum")
        self.in_engine = GaugeSpan(self.running)  # ``with metrics.in_engine:`` a running request
        # created at zero, so a dashboard sees every kind before the first refusal
        self._refusal = {kind: self.refusals.labels(kind) for kind in REFUSAL_KINDS}
        for model in self.models:
            self.engine_errors.labels(model)
        self._series: dict[str, ModelSeries] = {}
        self._answered: dict[tuple[str, str, int], Counter] = {}

    def model_label(self, model: str | None) -> str:
        """A served model's name, else ``other`` (clients must not grow the label set)."""
        return model if model in self.models else OTHER_MODEL

    def series(self, model: str | None) -> ModelSeries:
        """The bound children of ``model``'s label (``other`` for a model not served)."""
        label = self.model_label(model)
        found = self._series.get(label)
        if found is None:
            # two threads may both get here: labels() hands both the same children
            found = self._series[label] = ModelSeries(
                self.prompt_tokens.labels(label), self.generation_tokens.labels(label),
                self.spend.labels(label) if self._salt is None else None,
                self.engine_errors.labels(label), self.ttft.labels(label),
                self.itl.labels(label), self.e2e.labels(label))
        return found

    def account_label(self, account_id: int) -> str:
        """A keyed hash of the account id (12 hex digits)."""
        assert self._salt is not None
        return hmac.new(self._salt, str(account_id).encode(), hashlib.sha256).hexdigest()[:12]

    def billed(self, model: str, account_id: int, prompt: int, completion: int,
               charge: int) -> None:
        """One settled request: its tokens and its charge (exactly what the ledger got)."""
        series = self.series(model)
        series.prompt_tokens.inc(prompt)
        series.generation_tokens.inc(completion)
        if series.spend is not None:
            series.spend.inc(charge)
        else:  # opt-in, and one child per account: bound here, not kept by this class
            self.spend.labels(self.model_label(model), self.account_label(account_id)).inc(charge)

    def refused(self, kind: str) -> None:
        """One admission refused, by kind (one of :data:`REFUSAL_KINDS`)."""
        self._refusal[kind].inc()

    def engine_failed(self, model: str) -> None:
        """The engine failed one generation of ``model``."""
        self.series(model).engine_errors.inc()

    def answered(self, route: str, model: str | None, status: int, seconds: float) -> None:
        """One HTTP request answered: counted by route, model and status; a generation
        request (``model`` given) is also timed end to end."""
        label = "" if model is None else self.model_label(model)
        key = (route, label, status)
        counter = self._answered.get(key)
        if counter is None:
            counter = self._answered[key] = self.requests.labels(route, label, str(status))
        counter.inc()
        if model is not None:
            self.series(label).e2e.observe(seconds)

    def stream_timer(self, model: str) -> StreamTimer:
        """Times one streamed generation from now (right after its admission)."""
        return StreamTimer(self.series(model))

    def exposition(self) -> bytes:
        """The text format: every worker's values when multiprocess, else this process's."""
        if self._multiproc:
            return multiprocess_exposition(self._multiproc)
        return generate_latest(self.registry)

    def close(self) -> None:
        """At a clean stop: drop this process's live gauges from the multiprocess sums."""
        if self._multiproc:
            multiprocess.mark_process_dead(os.getpid(), self._multiproc)


class StreamTimer:
    """Time to first token and inter-token latency of one stream."""

    def __init__(self, series: ModelSeries) -> None:
        self._ttft = series.ttft
        self._itl = series.itl
        self._last: float | None = None
        self._start = time.perf_counter()

    def event(self, tokens: int) -> None:
        """A token event of ``tokens`` tokens arrived: the gap since the last, per token."""
        now = time.perf_counter()
        if self._last is None:
            self._ttft.observe(now - self._start)
        elif tokens > 0:
            gap = (now - self._last) / tokens
            for _ in range(tokens):
                self._itl.observe(gap)
        self._last = now


class RequestMetrics:
    """ASGI middleware counting every HTTP request by route, model and status, and timing
    the generation routes end to end (to the last body byte of a stream)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics,
                 model_of: Callable[[Scope], str | None]) -> None:
        self.app = app
        self._metrics = metrics
        self._model_of = model_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through; record when the response is complete (or the app failed)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self._metrics
        start = time.perf_counter()
        status = 500  # an app that raises before answering is answered 500 by the server

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            metrics.answered(getattr(route, "path", None) or "unmatched", self._model_of(scope),
                             status, time.perf_counter() - start)
