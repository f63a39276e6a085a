"""How Ironflow's processes log: readable lines (the default), or one JSON object a line.

``--log-format json`` (``ironflow worker``, ``ironflow serve``) writes each record as
``{"time", "level", "logger", "message", "run_id", "step_id", "attempt", ...}``, so a log
pipeline can index a run's lines without parsing sentences. The run, step and attempt
come from the record (the worker passes them with its own lines) or, for a line logged
by code running inside a step (a tool's own ``logging`` calls), from the step itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import Any

from ironflow.replay._current import _execution, current_step

__all__ = ["LOG_FORMATS", "JsonFormatter", "add_log_format_argument", "configure_logging"]

LOG_FORMATS = ("text", "json")
_TEXT = logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")
#: Attributes every LogRecord has: anything else on a record was passed in ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--log-format text|json`` on a command that serves."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: readable lines (default); json: one object a line with time, level, "
        "run_id, step_id, attempt and message, for a log pipeline",
    )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, the run's
    ids when the line is about one, any other ``extra`` fields, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        step = current_step()
        execution = _execution.get()
        if step is not None:
            out.update(run_id=step.run_id, step_id=step.step_id, attempt=step.attempt)
        elif execution is not None:
            out.update(run_id=execution.run_id, attempt=execution.attempt)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: int = logging.INFO, *, log_format: str = "text") -> None:
    """Ironflow's logs to stderr, so stdout stays the tools' own output.

    ``json`` also formats the root logger's records (the agents' own ``logging`` calls)
    when nothing else handles them, so every line of the process is one JSON object.
    Calling it again replaces what the last call set up (it never stacks handlers).
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else _TEXT)
    ours = logging.getLogger("ironflow")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    if log_format == "json" and not root.handlers:
        root.addHandler(handler)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on ``sys.stderr`` as it is when each line is written, not as it was
    when logging was configured: a command run in-process (a test under capsys, a
    program calling ``ironflow.run.main``) must not leave the ``ironflow`` logger
    writing to a stream that was swapped out and closed since."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr (StreamHandler.__init__ and setStream assign it)
