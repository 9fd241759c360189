"""A logging filter that removes API keys from every log record, whatever logger emits it."""

from __future__ import annotations

import logging
import re

KEY_PATTERN = re.compile(r"sk-avo-[A-Za-z0-9_\-]{4,}")
REDACTED = "sk-avo-[REDACTED]"


def redact(text: str) -> str:
    """Replace anything that looks like an avokit key."""
    return KEY_PATTERN.sub(REDACTED, text)


UNLOGGABLE = "[avokit: a log message could not be formatted; dropped]"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a broken format string or argument: fall back to the bare msg
        pass
    try:
        return str(record.msg)
    except Exception:  # msg itself cannot be turned into text
        return UNLOGGABLE


class RedactKeysFilter(logging.Filter):
    """Rewrites the formatted message (args included) and any exception text.

    A filter that raises breaks the logging call, and so the request that logged: this one
    never raises. What it cannot read is replaced by a fixed text, never passed on unredacted.
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
        message = _message(record)
        # the record is rewritten to its formatted text: handlers then format nothing that
        # could raise again (or hold a key the check above did not see)
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
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
