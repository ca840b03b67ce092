"""``index.html``: a page to find the people of a ``pedattr track`` output folder.

One self-contained file (its CSS, JavaScript and the tracks' data inline) that opens from disk
without a server; the images stay files of the folder, referenced by relative paths, so the
folder is the unit to copy or share. Each track is a card with its best crop, its attributes
as chips and the time it was seen; a filter box takes the queries of
:mod:`pedattr.video.query` (implemented again in ``assets/query.js``), with an optional
confidence cut-off and sorting by time or confidence; clicking a card shows the track's crops
over time with their ALM boxes.

Examples:
    >>> write_index("tracks/")  # (re)writes tracks/index.html from tracks/tracks.jsonl
"""

from __future__ import annotations

import html
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from pedattr.inference.visualize import level_colour
from pedattr.utils.io import atomic_write_text
from pedattr.video.search import read_folder

#: The keys of a track record the page uses (``boxes`` per frame is left out: it is large).
PAGE_KEYS = (
    "id", "first_frame", "last_frame", "first_time", "last_time", "probabilities",
    "attributes", "frames_used", "best_frame", "best_region", "best_boxes", "thumbnail",
    "gallery",
)  # fmt: skip


def _asset(name: str) -> str:
    return resources.files("pedattr.video").joinpath("assets", name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no ``</script>`` or ``<!--`` can end it early."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _hex(colour: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in colour)


def _read_summary(folder: Path) -> dict[str, Any]:
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # the page does without it (a run still going, or killed)
    return summary if isinstance(summary, dict) else {}


def page_data(folder: str | os.PathLike) -> dict[str, Any]:
    """What the page shows: the tracks (the keys in :data:`PAGE_KEYS`), the attribute names
    and thresholds, the colours of the ALM levels, and the run's summary."""
    tracks = read_folder(folder)
    thresholds = next((t["thresholds"] for t in tracks.tracks if t.get("thresholds")), {})
    return {
        "names": tracks.names,
        "thresholds": thresholds,
        "levels": {f"level{k + 1}": _hex(level_colour(k)) for k in range(3)},
        "summary": _read_summary(tracks.path),
        "tracks": [{k: t.get(k) for k in PAGE_KEYS} for t in tracks.tracks],
    }


def render_index(data: dict[str, Any], title: str) -> str:
    """The page's HTML for :func:`page_data`'s ``data``."""
    page = _asset("index.html")
    for marker, text in (
        ("/*STYLE*/", _asset("page.css")),
        ("/*QUERY_JS*/", _asset("query.js")),
        ("/*PAGE_JS*/", _asset("page.js")),
        ("/*DATA*/", _script_json(data)),
        ("<!--TITLE-->", html.escape(title)),
    ):
        page = page.replace(marker, text)
    return page


def write_index(folder: str | os.PathLike) -> Path:
    """Write ``folder/index.html`` from the folder's ``tracks.jsonl`` (and ``summary.json``,
    when there is one), atomically; returns its path.

    Raises:
        ValueError: ``tracks.jsonl`` is missing or not track records (the line is named).
        OutputError: the page cannot be written.
    """
    folder = Path(folder)
    data = page_data(folder)
    source = data["summary"].get("source") or folder.resolve().name
    path = folder / "index.html"
    atomic_write_text(path, render_index(data, f"{source}: people"))
    return path
