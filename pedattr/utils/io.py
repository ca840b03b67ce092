"""Small file helpers shared by checkpoints, reports and dataset descriptions (no torch here)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash never leaves half a file.

    The temporary file lives beside ``path`` (same file system, so the rename is atomic) under a
    unique name, is removed on failure, and gets the permissions a plain ``open`` would give.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the file private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def remove_temporaries(folder: str | os.PathLike, names: list[str]) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` for the files ``names``
    when its process was killed mid-write; returns them. Call it only while no other process
    writes the folder (it cannot tell a dead writer's file from a live one's)."""
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
