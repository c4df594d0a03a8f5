"""RunLock: a real second process is refused at once; a lock left by a killed process is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medseg_weak.errors import ConfigError
from medseg_weak.lock import LOCK_NAME, RunLock

HOLDER = """
import sys, time
from medseg_weak.lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.readline()  # hold until told (or killed)
lock.release()
"""


def _holder(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_is_refused_at_once_with_pid_and_host(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        start = time.monotonic()
        with pytest.raises(ConfigError) as info, RunLock(tmp_path / "run"):
            pass
        assert time.monotonic() - start < 1.0  # refused, not waited for
        message = str(info.value)
        assert str(tmp_path / "run") in message and f"PID {proc.pid}" in message
        assert socket.gethostname() in message
    finally:
        proc.communicate("\n", timeout=30)
    assert proc.returncode == 0 and not (tmp_path / "run" / LOCK_NAME).exists()  # released cleanly
    with RunLock(tmp_path / "run"):  # and free again afterwards
        pass


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
    proc = _holder(tmp_path / "run")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert left == {"pid": proc.pid, "host": socket.gethostname()}  # the dead holder's record stays
    with caplog.at_level("WARNING", logger="medseg_weak.lock"), RunLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"taking over the lock left by PID {proc.pid}" in caplog.text and "(dead)" in caplog.text
    assert not lock.path.exists()


def test_same_process_twice_is_refused(tmp_path):
    with RunLock(tmp_path), pytest.raises(ConfigError, match=f"PID {os.getpid()}"), RunLock(tmp_path):
        pass


def test_record_from_another_host_is_refused_not_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "node-17"}))
    with pytest.raises(ConfigError, match=f"PID 4242 on host node-17.*delete {tmp_path / LOCK_NAME}"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).exists()
