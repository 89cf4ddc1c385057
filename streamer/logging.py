"""structlog set up once, by the CLI, for the whole process.

JSON lines (one object per event, ISO-8601 UTC timestamps) when stderr is not a terminal, so log
shippers parse them; coloured console rendering on a terminal. Context bound with
``structlog.contextvars`` rides along on every event: ``tandem run`` and its fetch process bind
their ``input_topic`` and ``group``, so the logs of several daemons can be told apart.
The standard library's loggers (kafka-python logs through them) are routed through the same
renderer, so one stream carries everything in one format.

Loggers are deliberately not cached on first use: tandem logs once per batch, not per record, so
caching saves nothing measurable, and uncached loggers let tests and embedders reconfigure freely.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import Processor

LogFormat = Literal["auto", "json", "console"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    secrets: Sequence[str] = (),
) -> None:
    """Configure structlog and the standard library's root logger to write to ``stream``.

    ``level`` is one of debug, info, warning, error; ``fmt`` ``auto`` picks JSON unless ``stream``
    is a terminal. kafka-python's own loggers are held at WARNING unless ``level`` is debug.
    Every occurrence of a ``secrets`` value in a standard-library record is written as ``***``
    (``Redactor``): at debug level kafka-python logs its clients' whole configuration,
    passwords included.
    """
    stream = sys.stderr if stream is None else stream
    numeric_level = _LEVELS[level]
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    final: list[Processor] = (
        [structlog.processors.dict_tracebacks, renderer] if as_json else [renderer]
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    if secrets:
        handler.addFilter(Redactor(secrets))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    logging.getLogger("kafka").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


class Redactor(logging.Filter):
    """Writes ``***`` for each secret value in a standard-library record's message (its
    arguments merged in first). structlog's own events pass untouched: tandem never logs a
    secret, and its config is masked where shown (``streamer.config.masked``)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        forms = {form for secret in secrets if secret for form in written_forms(secret)}
        self.secrets = sorted(forms, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            message = record.getMessage()
            if any(secret in message for secret in self.secrets):
                for secret in self.secrets:
                    message = message.replace(secret, "***")
                record.msg, record.args = message, None
        return True


def written_forms(secret: str) -> set[str]:
    """How ``secret`` can appear in a log line: as is, and as Python's ``repr`` writes it in a
    string or in bytes, quotes escaped or not. kafka-python logs a SASL PLAIN exchange at debug
    level as ``auth_bytes=b'user\\x00user\\x00<password>'``, where a non-ASCII character, a
    backslash or a quote of the password is escaped."""
    bodies = {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]}
    quoted = {body.replace(mark, "\\" + mark) for body in bodies for mark in "'\""}
    return {form for form in bodies | quoted if form}


def _orjson_dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
