"""One process trains in a run directory at a time.

Two commands on one run directory (a script started twice, a job launched twice) would both
resume from the same backup and commit epochs over each other. The process that trains holds
an exclusive `flock` on the directory itself: no lock file to leave behind, and the kernel
releases it however the process ends, a kill included. A second command is refused with
`RunDirInUse`. Object stores (gs://) have no locks and go unlocked; so do file systems without
`flock` on directories (NFS among them), with a warning.
"""

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator

from tfresnet import files

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

log = logging.getLogger(__name__)

_RETRY_S = 1.0  # a concurrent `ensure_free` holds a shared lock for an instant


class RunDirInUse(RuntimeError):
    """Another process is training in this run directory (it holds the directory's lock)."""


@dataclasses.dataclass(frozen=True)
class Hold:
    """This process's hold of a directory (`exclusive`): pass it to an inner `exclusive` or
    `ensure_free` of the same directory, which then reuse it instead of refusing it."""

    path: str  # the real path of the directory held

    def covers(self, run_dir: str) -> bool:
        return self.path == os.path.realpath(run_dir)


@contextlib.contextmanager
def exclusive(run_dir: str, held: Hold | None = None) -> Iterator[Hold]:
    """Hold `run_dir` (it must exist) for this process while the block runs, yielding the `Hold`;
    `RunDirInUse` if another holds it. With `held` (the caller's hold) nothing more is locked."""
    if held is not None and held.covers(run_dir):
        yield held
        return
    with _locked(run_dir):
        yield Hold(os.path.realpath(run_dir))


def serialized(directory: str) -> contextlib.AbstractContextManager[None]:
    """Wait for, then hold, `directory`'s lock while the block runs: for a short read-modify-write
    (export's models.config) that concurrent processes must take turns at. Like `exclusive`,
    it leaves no file behind; a no-op where there are no locks."""
    return _locked(directory, wait=True)


@contextlib.contextmanager
def _locked(directory: str, wait: bool = False) -> Iterator[None]:
    fd = _lock(directory, shared=False, wait=wait)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def ensure_free(run_dir: str, held: Hold | None = None) -> None:
    """`RunDirInUse` if another process is training in `run_dir` (this process's `held` is
    no refusal); for a refusal before the data loads. Takes a shared lock for an instant, so
    two checks never refuse each other."""
    if (held is not None and held.covers(run_dir)) or not files.exists(run_dir):
        return
    fd = _lock(run_dir, shared=True)
    if fd is not None:
        os.close(fd)


def _lock(run_dir: str, shared: bool, wait: bool = False) -> int | None:
    """An fd of `run_dir` holding the lock, or None where the file system has no locks. With
    `wait`, blocks until the lock is free instead of refusing."""
    if fcntl is None or files.is_remote(run_dir):
        return None
    fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    deadline = time.monotonic() + (0 if shared else _RETRY_S)
    while True:
        try:
            fcntl.flock(fd, mode)
            return fd
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            os.close(fd)
            raise RunDirInUse(
                f"Run directory {run_dir!r} is in use: another process is training in it. Run "
                "the same command again once it has ended (it continues the run), or use "
                "another --run_dir."
            ) from None
        except OSError as err:  # e.g. NFS, where flock needs a file open for writing
            os.close(fd)
            log.warning(
                "%s: no lock on this file system (%s); a second command on this run directory "
                "would not be refused.",
                run_dir,
                err.strerror,
            )
            return None
