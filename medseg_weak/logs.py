"""Where log records go: the terminal, and a log file when one is asked for.

Libraries log the exceptions they recover from or re-raise: pydicom logs a full traceback for every
decoder plugin that fails on a corrupt JPEG 2000 file, before raising the error that our reader turns
into one clear message. On the terminal those tracebacks bury that message, so the terminal handler
drops library records that carry exception output (the message a user needs comes from our own
error); every other record keeps its one line. The log file (``--log-file``, or ``--debug``) keeps
everything, tracebacks included, for the bug report.

Worker processes have no handlers of their own: :func:`forwarded_logs` gives a process pool an
initializer that sends their records to this process's handlers, so the same rules apply to them.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import multiprocessing
import sys
import tempfile
from collections.abc import Iterator
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import Any

PROJECT = "medseg_weak"
# Where --debug writes when no --log-file is given: not the current folder, which may be a repository.
DEBUG_LOG = Path(tempfile.gettempdir()) / "medseg-weak-debug.log"
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def is_project_record(record: logging.LogRecord) -> bool:
    return record.name == PROJECT or record.name.startswith(PROJECT + ".")


class NoLibraryTracebacks(logging.Filter):
    """Drops records from other packages that carry a traceback or stack (``exc_info``/``exc_text``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if is_project_record(record):
            return True
        return not (record.exc_info or record.exc_text or record.stack_info)


# A no-op filter on the handlers setup_logging added, so that calling it again replaces only those.
_tag = logging.Filter()


def _mark(handler: logging.Handler) -> logging.Handler:
    handler.addFilter(_tag)
    return handler


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (pytest and rich swap it), not at setup."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def installed_handlers() -> list[logging.Handler]:
    """The root handlers :func:`setup_logging` added (and nobody else's)."""
    return [h for h in logging.getLogger().handlers if _tag in h.filters]


def reset_logging() -> None:
    """Remove and close what :func:`setup_logging` added."""
    for handler in installed_handlers():
        logging.getLogger().removeHandler(handler)
        handler.close()


def setup_logging(debug: bool = False, log_file: Path | None = None) -> Path | None:
    """Terminal handler on stderr (INFO, no library tracebacks); file handler when asked; returns its path.

    Calling it again (tests run ``cli.main`` many times in one process) replaces what it added before
    and leaves other handlers (pytest's) alone.
    """
    reset_logging()
    root = logging.getLogger()
    console = _mark(_StderrHandler())
    console.setLevel(logging.INFO)
    console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    console.addFilter(NoLibraryTracebacks())
    root.addHandler(console)
    path = log_file if log_file is not None else (DEBUG_LOG if debug else None)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = _mark(logging.FileHandler(path, encoding="utf-8"))
        to_file.setLevel(logging.DEBUG if debug else logging.INFO)
        to_file.setFormatter(logging.Formatter(FILE_FORMAT))
        root.addHandler(to_file)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return path


class _Forward(QueueHandler):
    """Sends records to the parent with the traceback as text, still apart from the message.

    The stock ``prepare`` folds the traceback into the message, after which the parent's filter could
    no longer tell a library traceback from a message.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args, record.exc_info = record.getMessage(), None, None
        return record


def _init_worker(queue: Any, level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Forward(queue))
    root.setLevel(level)


@contextlib.contextmanager
def forwarded_logs() -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """``(initializer, initargs)`` for a spawn process pool whose workers log through our handlers."""
    root = logging.getLogger()
    queue = multiprocessing.get_context("spawn").Queue()
    # No handlers (an API caller that never set logging up): what this process would do, lastResort.
    handlers = root.handlers or [logging.lastResort]
    listener = QueueListener(queue, *[h for h in handlers if h is not None], respect_handler_level=True)
    listener.start()
    try:
        yield _init_worker, (queue, root.getEffectiveLevel())
    finally:
        listener.stop()  # processes what the workers sent before it returns
        queue.close()
        queue.join_thread()
