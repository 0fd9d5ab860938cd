"""Logging for the long-running processes: one JSON object per line when stderr is not a
terminal (what log collectors read), plain lines when a person watches. Messages carry
counts and tenants as fields; never keys, passwords or event payloads."""

from __future__ import annotations

import logging.config
import sys
from typing import Any

_LIBRARIES = ("aiokafka", "faust", "mode", "uvicorn", "httpx", "httpcore", "asyncio")


def logging_config(level: str = "INFO") -> dict[str, Any]:
    formatter = "plain" if sys.stderr.isatty() else "json"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"levelname": "level", "asctime": "time", "name": "logger"},
            },
            "plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
            },
        },
        "root": {"level": level, "handlers": ["stderr"]},
        # Libraries speak up only when something is wrong.
        "loggers": {name: {"level": "WARNING"} for name in _LIBRARIES},
    }


def configure(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
