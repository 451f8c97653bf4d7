"""Logging setup for every process: text for people, or one JSON object a line (LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from da.config import ConfigError

# Attributes every LogRecord has; anything else was passed with `extra=` and is structured data.
STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        data.update({k: v for k, v in vars(record).items() if k not in STANDARD_ATTRIBUTES})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(env: Mapping[str, str], *, default_level: str = "INFO") -> None:
    """Called once in main(); LOG_LEVEL and LOG_FORMAT (text or json)."""
    level_name = (env.get("LOG_LEVEL") or default_level).upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise ConfigError(f"LOG_LEVEL={level_name!r} is not a level; use DEBUG, INFO, WARNING or ERROR.")
    style = (env.get("LOG_FORMAT") or "text").lower()
    if style not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={style!r} is not valid; use text or json.")
    handler = logging.StreamHandler()
    if style == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = __import__("time").gmtime
        handler.setFormatter(formatter)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO; the worker's own lines say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
