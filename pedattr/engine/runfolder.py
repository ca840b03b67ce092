"""One writer per run folder: an OS lock that ``pedattr train`` and ``pedattr experiment`` hold
while they write a folder, so that a second command started into it is refused at once.

The lock is ``fcntl.flock`` on ``<folder>/.pedattr.lock``: the kernel releases it when the
holder ends in any way, SIGKILL included, so a killed run never leaves a stale lock behind. The
file (kept between runs, since deleting it would let two processes lock different files) holds
the holder's pid and command line, which the refusal names. On systems without ``fcntl``
(Windows) folders are not locked.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pedattr.utils.io import make_folder, remove_temporaries

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_NAME = ".pedattr.lock"


class RunFolderInUse(ValueError):
    """Another process writes the folder; the message names it and the holder."""


def _holder_line() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    if program in ("cli.py", "__main__.py"):  # python -m pedattr, torchrun -m pedattr.cli
        program = "pedattr"
    return f"pid {os.getpid()} on {socket.gethostname()}: {shlex.join([program, *sys.argv[1:]])}\n"


def _describe_holder(fd: int) -> str:
    text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    return f" ({text})" if text else ""


@contextmanager
def locked_run_folder(folder: str | os.PathLike, *, enabled: bool = True) -> Iterator[None]:
    """Hold the folder's lock for the block, creating the folder if needed.

    ``enabled=False`` (a process other than the main one of a distributed job, which writes
    nothing) takes no lock, so that the job's own processes never refuse each other.

    Raises:
        RunFolderInUse: another process holds the lock; it is not waited for.
    """
    if not enabled or fcntl is None:
        yield
        return
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    make_folder(root)  # a file in the way is named in one line
    # Not truncated on open: the holder's line must survive the refused process's attempt.
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderInUse(
                f"{root} is in use by another pedattr process{_describe_holder(fd)}; wait for "
                "it to end or choose another folder"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder_line().encode("utf-8"), 0)
            yield
        finally:
            # Explicitly: data-loader workers forked meanwhile share the lock until they exit.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)  # the kernel releases the lock the same way when the process is killed


@contextmanager
def claimed_folder(root: Path, names: list[str], *, main: bool = True) -> Iterator[None]:
    """Hold ``root``'s lock for the block, after removing the temporary files of ``names`` that
    a killed save left there. Only the main process of a distributed job (``main``) locks and
    writes."""
    with locked_run_folder(root, enabled=main):
        if main:
            for tmp in remove_temporaries(root, names):
                logger.info("removed %s, left by an interrupted save", tmp)
        yield
