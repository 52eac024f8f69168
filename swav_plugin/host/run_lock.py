"""One run per directory: an exclusive lock on ``run.output_dir`` for the run's lifetime.

Two processes on one run directory (the same command started twice, or a requeued job while
the old one still runs) would delete each other's temporary checkpoints, set each other's
newer checkpoints aside and both append to ``metrics.csv``. :class:`RunLock` takes an
exclusive ``flock`` on ``RUN/.swav-train.lock`` before anything in the directory is read or
written; a second process is refused in one line naming the holder. The kernel releases the
lock when its process ends however it ends, so the lock of a killed process is never stale.
A run removes the file when it ends; a process that locked a file that was removed or
replaced meanwhile takes the lock again on the file now there, so two processes never hold
locks on two different files. Only the run's rank 0 takes it: the other ranks of a DDP run
work for the same run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from swav_plugin.host.errors import ConfigError, storage_problem

LOCK_FILE = ".swav-train.lock"


class RunLock:
    """The exclusive lock of run directory ``directory`` (a context manager).

    Raises:
        ConfigError: When another process holds it, or the directory cannot be created or
            written (a file in the way, read-only, no permission): checked before any work.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`ConfigError` in one line."""
        where = f"run.output_dir '{self.directory}'"
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"{where} is a file; choose a directory for the run")
        while self._fd is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(
                    f"run.output_dir {storage_problem(exc, self.directory)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(
                    f"{where} is in use by another swav-train process ({holder}); wait for it "
                    "to end, or choose another run.output_dir"
                ) from None
            except OSError as exc:
                os.close(fd)
                raise ConfigError(f"run.output_dir {storage_problem(exc, self.path)}") from None
            if self._still_there(fd):
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
                self._fd = fd
            else:  # the holder ended and removed it between our open and our lock: again
                os.close(fd)

    def _still_there(self, fd: int) -> bool:
        """Whether the locked file is the one at :attr:`path` (not removed or replaced)."""
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and let the lock go (closing the file releases the ``flock``);
        removed first, so that no process locks it after the release."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
