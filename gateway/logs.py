"""structlog set up once, at the entry point: JSON lines, or console style on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

from gateway.ops.log_events import FieldLimiter, RepeatLimiter, add_operator_hints

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_operator_hints,  # component and action on warnings and errors
            RepeatLimiter(),  # bounded volume under a flood of identical warnings
            FieldLimiter(),  # bounded size of each line, whatever a peer sent
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.ERROR)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
