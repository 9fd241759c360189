"""``avokit serve``'s side of the metrics: the multiprocess directory, and the admin listener
that serves every worker's metrics on a separate address (``--metrics-bind HOST:PORT``).

Nothing here imports prometheus-client at module level: it decides between per-process and
multiprocess values when first imported, so the directory must be in the environment first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from avokit.gateway.settings import split_bind

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


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


def serve_admin_metrics(bind: str, path: str) -> None:
    """Serve the metrics of every process writing to ``path`` at ``bind`` (``HOST:PORT``),
    from a daemon thread of this process, without a token: bind it to an admin network."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    host, port = split_bind(bind)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    start_http_server(port, addr=host, registry=registry)
