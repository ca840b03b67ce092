"""Find tracks by their attributes in ``pedattr track`` output folders (``pedattr search``).

Examples:
    >>> folders = [read_folder("tracks/")]
    >>> for match in search(folders, "Female & Backpack & !Hat", sort="confidence"):
    ...     print(match.folder, match.record["id"], match.confidence)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pedattr.video.query import Query, QueryError, names_in, parse
from pedattr.video.query import matches as query_matches

SORTS = ("time", "confidence")
#: Keys every track record must have, with their JSON types.
_REQUIRED = {
    "id": int,
    "first_time": (int, float),
    "last_time": (int, float),
    "probabilities": dict,
    "attributes": list,
}


@dataclass
class TrackFolder:
    """One output folder of ``pedattr track``: its track records and attribute names."""

    path: Path
    tracks: list[dict[str, Any]]
    names: list[str]


def _check_record(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: not a track record (a JSON object)")
    for key, kind in _REQUIRED.items():
        if key not in record:
            raise ValueError(f"{where}: not a track record (no '{key}')")
        if not isinstance(record[key], kind) or isinstance(record[key], bool):
            raise ValueError(f"{where}: not a track record ('{key}' has the wrong type)")
    if not all(isinstance(v, (int, float)) for v in record["probabilities"].values()):
        raise ValueError(f"{where}: not a track record (a probability is not a number)")
    return record


def read_tracks(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``tracks.jsonl``. A last line without its newline that is not JSON is
    a track still being written (``pedattr track`` is running) and is left out.

    Raises:
        ValueError: the file is missing, unreadable, or a line is not a track record (named).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (not a `pedattr track` output folder)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read ({err})") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: still being written
                continue
            raise ValueError(f"{path}: line {number} is not JSON ({err.msg})") from None
        records.append(_check_record(record, f"{path}: line {number}"))
    return records


def read_folder(folder: str | os.PathLike) -> TrackFolder:
    """The tracks of a ``pedattr track`` output folder (its ``tracks.jsonl``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    tracks = read_tracks(folder / "tracks.jsonl")
    names: dict[str, None] = {}
    for record in tracks:  # thresholds name every attribute, even of a track never predicted
        names.update(dict.fromkeys(record.get("thresholds") or {}))
        names.update(dict.fromkeys(record["probabilities"]))
    return TrackFolder(folder, tracks, list(names))


def attribute_names(folders: Sequence[TrackFolder]) -> list[str]:
    """Every attribute name of the folders, each once, in the order first met."""
    names: dict[str, None] = {}
    for folder in folders:
        names.update(dict.fromkeys(folder.names))
    return list(names)


@dataclass
class Match:
    """A track that matches a query, with the query's confidence on it."""

    folder: Path
    record: dict[str, Any]
    confidence: float
    queried: list[str]

    def thumbnail(self) -> str | None:
        name = self.record.get("thumbnail")
        return None if not name else str(self.folder / name)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` line: where, when, the queried attributes' probabilities."""
        record = self.record
        return {
            "folder": str(self.folder),
            "id": record["id"],
            "first_frame": record.get("first_frame"),
            "last_frame": record.get("last_frame"),
            "first_time": record["first_time"],
            "last_time": record["last_time"],
            "confidence": round(self.confidence, 6),
            "probabilities": {n: record["probabilities"][n] for n in self.queried},
            "attributes": record["attributes"],
            "thumbnail": self.thumbnail(),
        }

    def line(self) -> str:
        """One line for people: folder, id, time range, probabilities, thumbnail."""
        record = self.record
        shown = "  ".join(f"{n} {record['probabilities'][n]:.2f}" for n in self.queried)
        when = f"{record['first_time']:.1f}-{record['last_time']:.1f} s"
        parts = [str(self.folder), f"#{record['id']}", when, shown, self.thumbnail() or "-"]
        return "  ".join(p for p in parts if p)


def search(
    folders: Sequence[TrackFolder],
    query: str | Query | None,
    *,
    min_prob: float | None = None,
    sort: str = "time",
) -> list[Match]:
    """The tracks of ``folders`` that match ``query`` (:mod:`pedattr.video.query`; None: every
    track), sorted by ``time`` (folder by folder, first seen first) or by
    ``confidence`` (highest first over all folders).

    Raises:
        QueryError: the query is malformed or names an attribute no folder has.
    """
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    if min_prob is not None and not 0.0 <= min_prob <= 1.0:
        raise ValueError(f"min_prob must be from 0 to 1, got {min_prob}")
    names = attribute_names(folders)
    if isinstance(query, str):
        query = parse(query, names if names else None)
    queried = [] if query is None else names_in(query)
    found = []
    for order, folder in enumerate(folders):
        for record in folder.tracks:
            value = query_matches(query, record, min_prob)
            if value is not None:
                found.append((order, Match(folder.path, record, value, queried)))

    def by_time(entry: tuple[int, Match]) -> tuple:
        order, match = entry
        return (order, match.record["first_time"], match.record["id"])

    found.sort(key=by_time)
    if sort == "confidence":
        found.sort(key=lambda entry: -entry[1].confidence)  # stable: ties stay in time order
    return [match for _, match in found]


__all__ = [
    "Match",
    "QueryError",
    "TrackFolder",
    "attribute_names",
    "read_folder",
    "read_tracks",
    "search",
]
