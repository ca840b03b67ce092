"""Small file helpers shared by checkpoints, reports and dataset descriptions (no torch here)."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class OutputError(OSError):
    """An output that cannot be written: disk full, no permission, a file where a folder should
    be. It names the output the caller asked for, never the temporary file written beside it,
    and keeps the operating system's ``errno``."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _cannot_write(path: Path, err: OSError) -> OutputError:
    reason = err.strerror or str(err)
    return OutputError(err.errno, f"cannot write ({reason})", str(path))


def make_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` and its parents; a file in the way is an :class:`OutputError`
    naming it ("exists and is not a folder"), not a bare ``FileExistsError``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        blocker = next((p for p in (path, *path.parents) if p.exists()), path)
        raise OutputError(errno.ENOTDIR, "exists and is not a folder", str(blocker)) from err
    except OSError as err:
        raise _cannot_write(path, err) from err
    return path


def atomic_write_files(writes: Sequence[tuple[str | os.PathLike, Callable[[str], object]]]) -> None:
    """Write several files so that either all of them are replaced or none is.

    Each ``write(tmp_path)`` fills a temporary file beside its output (same file system, so the
    rename is atomic, under a unique name); only once every one succeeded are they renamed onto
    the outputs, in the order given. On any failure every temporary file is removed, the earlier
    outputs stay as they were, and an :class:`OSError` is raised as :class:`OutputError` naming
    the output (disk full while writing ``x.json`` says ``x.json``, not ``.x.json.abc.tmp``).
    The files get the permissions a plain ``open`` would give.
    """
    done: list[tuple[str, Path]] = []
    try:
        for target, write in writes:
            path = Path(target)
            make_folder(path.parent)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.close(fd)
                done.append((tmp, path))
                write(tmp)
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the file private
            except OutputError:
                raise
            except OSError as err:
                raise _cannot_write(path, err) from err
        for tmp, path in done:
            try:
                os.replace(tmp, path)
            except IsADirectoryError as err:
                raise OutputError(err.errno, "is a folder, not a file to write", str(path)) from err
            except OSError as err:
                raise _cannot_write(path, err) from err
    except BaseException:
        for tmp, _ in done:
            Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash never leaves half a file.

    See :func:`atomic_write_files`: the temporary file is removed on failure, and an
    :class:`OSError` becomes an :class:`OutputError` naming ``path``.
    """
    atomic_write_files([(path, write)])


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path``, a log that grows; an ``OSError`` (a full disk) is an
    :class:`OutputError` naming ``path``. Not atomic: a crash may leave a partial last line."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as err:
        raise _cannot_write(Path(path), err) from err


def _text_writer(text: str) -> Callable[[str], object]:
    return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, _text_writer(text))


def atomic_write_texts(texts: Mapping[str | os.PathLike, str]) -> None:
    """Write each ``{path: text}`` (UTF-8), all or none (:func:`atomic_write_files`), in order."""
    atomic_write_files([(path, _text_writer(text)) for path, text in texts.items()])


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
