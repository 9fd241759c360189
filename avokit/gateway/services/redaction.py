"""A logging filter that removes API keys from every log record, whatever logger emits it."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

KEY_PATTERN = re.compile(r"sk-avo-[A-Za-z0-9_\-]{4,}")
REDACTED = "sk-avo-[REDACTED]"


def redact(text: str) -> str:
    """Replace anything that looks like an avokit key."""
    return KEY_PATTERN.sub(REDACTED, text)


UNLOGGABLE = "[avokit: a log message could not be formatted; dropped]"


def _redacted_args(args: tuple[object, ...] | Mapping[str, object] | None
                   ) -> tuple[object, ...] | Mapping[str, object] | None:
    # keep the args' shape: formatters such as uvicorn's access log unpack them
    if isinstance(args, tuple):
        return tuple(redact(a) if isinstance(a, str) else a for a in args)
    if isinstance(args, dict):
        return {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
    return args


class RedactKeysFilter(logging.Filter):
    """Removes keys from the message, its args and any exception text.

    A filter that raises breaks the logging call, and so the request that logged: this one
    never raises. A record it cannot read is replaced by a fixed text, never passed on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; always keeps the record."""
        try:
            self._redact(record)
        except Exception:  # e.g. an exception whose __str__ raises
            record.msg, record.args = UNLOGGABLE, None
            record.exc_info, record.exc_text = None, None
        return True

    @staticmethod
    def _redact(record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string or argument: log the bare text
            record.msg, record.args = redact(str(record.msg)), None
            message = record.msg
        if "sk-avo-" in message:
            if isinstance(record.msg, str):
                record.msg = redact(record.msg)
            record.args = _redacted_args(record.args)
            if KEY_PATTERN.search(record.getMessage()):  # formed only by formatting: flatten
                record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if "sk-avo-" in text:
                record.exc_info = None
                record.exc_text = redact(text)


def install_redaction() -> None:
    """Attach the filter to every handler of the root and uvicorn loggers (idempotent)."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "avokit"]
    for name in names:
        logger = logging.getLogger(name)
        targets: list[logging.Filterer] = [logger, *logger.handlers]
        for target in targets:
            if not any(isinstance(f, RedactKeysFilter) for f in target.filters):
                target.addFilter(RedactKeysFilter())
