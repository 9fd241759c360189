"""A logging filter that removes API keys from every log record, whatever logger emits it."""

from __future__ import annotations

import logging
import re

KEY_PATTERN = re.compile(r"sk-avo-[A-Za-z0-9_\-]{4,}")
REDACTED = "sk-avo-[REDACTED]"


def redact(text: str) -> str:
    """Replace anything that looks like an avokit key."""
    return KEY_PATTERN.sub(REDACTED, text)


class RedactKeysFilter(logging.Filter):
    """Rewrites the formatted message (args included) and any exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            message = str(record.msg)
        if "sk-avo-" in message:
            record.msg = redact(message)
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if "sk-avo-" in text:
                record.exc_info = None
                record.exc_text = redact(text)
        return True


def install_redaction() -> None:
    """Attach the filter to every handler of the root and uvicorn loggers (idempotent)."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "avokit"]
    for name in names:
        logger = logging.getLogger(name)
        targets: list[logging.Filterer] = [logger, *logger.handlers]
        for target in targets:
            if not any(isinstance(f, RedactKeysFilter) for f in target.filters):
                target.addFilter(RedactKeysFilter())
