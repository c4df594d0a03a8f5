"""Log routing: library tracebacks stay off the terminal and go to the log file; the rest is kept."""

from __future__ import annotations

import logging

import pytest

from medseg_weak.logs import installed_handlers, reset_logging, setup_logging


def _raise_and_log(logger: logging.Logger, message: str) -> None:
    try:
        raise RuntimeError("inner failure")
    except RuntimeError:
        logger.exception(message)


@pytest.fixture
def restore_logging():
    level = logging.getLogger().level
    yield
    reset_logging()
    logging.getLogger().setLevel(level)


def test_library_tracebacks_go_to_the_file_only(tmp_path, capsys, restore_logging):
    log_file = tmp_path / "logs" / "run.log"
    assert setup_logging(log_file=log_file) == log_file
    library = logging.getLogger("pydicom.pixels.decoders.base")
    _raise_and_log(library, "Error decoding the J2K data")
    library.warning("a library warning without a traceback")
    _raise_and_log(logging.getLogger("medseg_weak.data.io"), "our own failure")
    logging.getLogger("medseg_weak.x").debug("debug detail")
    err = capsys.readouterr().err
    assert "Error decoding the J2K data" not in err
    assert "WARNING pydicom.pixels.decoders.base: a library warning without a traceback" in err
    assert "ERROR medseg_weak.data.io: our own failure" in err and err.count("Traceback") == 1
    assert "debug detail" not in err
    text = log_file.read_text()
    assert "Error decoding the J2K data" in text and text.count("Traceback") == 2
    assert "RuntimeError: inner failure" in text and "debug detail" not in text  # INFO without --debug


def test_debug_logs_everything_and_calling_again_replaces_our_handlers(tmp_path, capsys, restore_logging):
    setup_logging()
    setup_logging(debug=True, log_file=tmp_path / "debug.log")
    assert len(installed_handlers()) == 2  # one terminal handler and the file, not two terminal handlers
    logging.getLogger("medseg_weak.x").debug("debug detail")
    logging.getLogger("medseg_weak.x").info("once")
    assert capsys.readouterr().err.count("once") == 1
    assert "debug detail" in (tmp_path / "debug.log").read_text()
