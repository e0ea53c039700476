"""custate's log lines: what the library emits, and how a program may write them.

Library modules only create loggers under `custate.` and emit: one INFO line per HTTP
request (`custate.http.access`: method, route, path, status, duration, request id), one
INFO line per rejected record (`custate.rejects`: where it was, its id, the field and the
reason) and one INFO line per projector catch-up (`custate.projector`: activities,
position, duration), with the same facts as structured extras (`extra=`). Nothing here
changes the process's logging until a program calls `configure` (the `custate` command
does, from `--log-format` / `--log-level` or $CUSTATE_LOG_FORMAT / $CUSTATE_LOG_LEVEL).

`configure` puts one handler on the `custate` logger (not on the root logger, which an
embedding program or a test runner owns): `text` lines for people, or `json` lines, one
JSON object a line with `ts`, `level`, `logger`, `message` and the record's extras.
`uvicorn_config` is the same as a `logging.config.dictConfig` dict, for uvicorn to apply
in each of its worker processes (`serve --workers N`)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

__all__ = [
    "ENV_LOG_FORMAT",
    "ENV_LOG_LEVEL",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JsonFormatter",
    "StderrHandler",
    "TextFormatter",
    "configure",
    "parse_level",
    "uvicorn_config",
]

ENV_LOG_FORMAT = "CUSTATE_LOG_FORMAT"
ENV_LOG_LEVEL = "CUSTATE_LOG_LEVEL"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# The attributes every LogRecord has: anything else on a record came in `extra=`.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_HANDLER_NAME = "custate-cli"


def _ts(record: logging.LogRecord) -> str:
    t = datetime.fromtimestamp(record.created, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: `ts` (UTC, ISO 8601, milliseconds),
    `level`, `logger`, `message`, the record's extras, and `exception` (the traceback
    text) when there is one. A value JSON cannot hold is written as its `str`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in _extras(record).items():
            out.setdefault(k, v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """`<ts> <LEVEL> <logger>: <message>`, then the traceback, if any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _ts(record)


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a record is emitted (not when the handler
    was made), so that a program that swaps stderr (a test runner) keeps its lines."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def parse_level(value: str | None, default: int = logging.WARNING) -> int:
    """A level name (any case) as its number; None or empty: `default`. Raises ValueError
    naming the accepted names."""
    if value is None or not value.strip():
        return default
    name = value.strip().lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"{value!r} is not one of: {', '.join(LOG_LEVELS)}")
    return int(logging.getLevelName(name.upper()))


def _formatter(fmt: str) -> logging.Formatter:
    if fmt not in LOG_FORMATS:
        raise ValueError(f"{fmt!r} is not one of: {', '.join(LOG_FORMATS)}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure(level: int = logging.WARNING, fmt: str = "text") -> None:
    """For a program (never called by the library): the `custate` logger's lines from
    `level` on go to stderr in `fmt` (`text` or `json`). Calling it again replaces what
    the previous call set up."""
    handler = StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(_formatter(fmt))
    log = logging.getLogger("custate")
    for h in list(log.handlers):
        if h.get_name() == _HANDLER_NAME:
            log.removeHandler(h)
    log.addHandler(handler)
    log.setLevel(level)


def uvicorn_config(level: int = logging.WARNING, fmt: str = "text") -> dict[str, Any]:
    """The same set-up as `configure`, as a `logging.config.dictConfig` dict for uvicorn
    (`log_config`), which applies it in each of its processes: custate's lines from
    `level`, uvicorn's own from WARNING (its access log stays off: custate writes one line
    per request)."""
    formatter = {"()": f"{__name__}.{'JsonFormatter' if fmt == 'json' else 'TextFormatter'}"}
    _formatter(fmt)  # refuse an unknown format here, not in a worker process
    handler = {"()": f"{__name__}.StderrHandler", "formatter": "custate"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"custate": formatter},
        "handlers": {"custate": handler},
        "loggers": {
            "custate": {"handlers": ["custate"], "level": logging.getLevelName(level)},
            "uvicorn": {"handlers": ["custate"], "level": "WARNING", "propagate": False},
            "uvicorn.error": {"level": "WARNING"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
