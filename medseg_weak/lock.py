"""One process per run directory: ``with RunLock(run_dir): ...`` around everything that writes there.

Why ``fcntl.flock`` and not ``os.open(O_CREAT | O_EXCL)``: the kernel releases a flock when its holder
dies, however it dies (``kill -9``, out of memory, a power cut on a local disk), so "is the holder
alive?" is answered by the lock itself, atomically. With O_EXCL a dead holder's file stays, and taking
it over means reading a PID, deciding it is dead and deleting the file, a check-then-act race that two
newcomers can both win. The lock file still records the holder's PID and host: for the message that
refuses a second process, and to warn when a lock left by a process that died is taken over.

A flock on a network filesystem may be local to each client, so a record naming another host cannot be
judged from here: it is refused, with the file to delete if that run is known to be over.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from types import TracebackType

from medseg_weak.errors import ConfigError

_log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class RunLock:
    """An exclusive, non-blocking lock on the run directory ``root`` (created if missing).

    A second process (or a second ``RunLock`` in this one) fails at once with a :class:`ConfigError`
    naming the folder and the holder's PID and host; it does not wait.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise ConfigError(
                    f"run directory {self.root} is in use by PID {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')} (lock {self.path}); wait for it to finish or use another "
                    "--run-dir"
                ) from None
            # The previous holder may have unlinked the file between our open and our flock: then we
            # locked an orphan that nobody else will ever see, and must start again on the new file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            self._take_over(self._read(fd))
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _take_over(self, left: dict) -> None:
        """We hold the flock; a record still in the file was left by a holder that never released."""
        if not left:
            return
        pid, host = left.get("pid", "?"), left.get("host", "?")
        if host not in (socket.gethostname(), "?"):
            raise ConfigError(
                f"run directory {self.root} was locked by PID {pid} on host {host}, which this host cannot "
                f"check; if no process there still uses it, delete {self.path}"
            )
        state = (
            "still running, but not holding the lock" if isinstance(pid, int) and _pid_alive(pid) else "dead"
        )
        _log.warning(
            "run directory %s: taking over the lock left by PID %s on %s (%s)", self.root, pid, host, state
        )

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            text = os.pread(fd, 4096, 0).decode()
            record = json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {"pid": "?", "host": "?"}  # garbage: still a lock someone left
        return record if isinstance(record, dict) else {"pid": "?", "host": "?"}

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so a newcomer never reads our record as a stale one;
        # acquire() detects the orphaned inode it may have opened just before.
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
