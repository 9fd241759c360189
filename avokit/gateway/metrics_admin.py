"""``avokit serve``'s side of the metrics: where the values live, and the admin listener that
serves them on a separate address (``--metrics-bind HOST:PORT``).

One worker keeps its values in the process and the listener serves that process's registry;
several workers write theirs to a multiprocess directory, and the listener sums every worker's
files. Nothing here imports prometheus-client at module level: it decides between per-process
and multiprocess values when first imported, so the environment must be settled first.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from avokit.gateway.settings import split_bind

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("avokit.gateway")


def prepare_multiprocess_dir() -> str:
    """``$PROMETHEUS_MULTIPROC_DIR`` (created) or a fresh temporary directory, emptied of a
    previous run's files and exported for this process and the workers it starts."""
    path = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="avokit-metrics-")
    Path(path).mkdir(parents=True, exist_ok=True)
    # values of a previous run (dead pids) would be summed into this one's counters
    for stale in Path(path).glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = path
    return path


def single_process_values() -> None:
    """One worker: keep the metrics in the process, even when ``$PROMETHEUS_MULTIPROC_DIR``
    is set (files summed across processes are only needed with several workers, and each
    value written to one costs a lock and a system call on every request)."""
    if os.environ.pop(MULTIPROC_ENV, None) is not None:
        # a warning: a setting the operator made is not used (and this runs before uvicorn
        # configures logging, where only warnings reach stderr)
        log.warning("one worker: metrics kept in the process; %s is used with --workers > 1 "
                    "only", MULTIPROC_ENV)


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry summing the metrics of every process writing to ``path``."""
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def serve_admin_metrics(bind: str, registry: CollectorRegistry) -> None:
    """Serve ``registry`` at ``bind`` (``HOST:PORT``), from a daemon thread of this process,
    without a token: bind it to an admin network."""
    from prometheus_client import start_http_server

    host, port = split_bind(bind)
    start_http_server(port, addr=host, registry=registry)
