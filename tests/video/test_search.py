"""``pedattr search`` end to end over generated output folders, against answers computed
directly from the records."""

from __future__ import annotations

import json

import pytest

from pedattr.cli import main
from pedattr.video.search import read_folder, search
from tests.video.records import make_records, write_folder


@pytest.fixture
def folders(tmp_path):
    return [
        write_folder(tmp_path / "cam1", make_records(40, seed=0)),
        write_folder(tmp_path / "cam2", make_records(25, seed=1)),
    ]


def run_json(capsys, *argv) -> list[dict]:
    assert main(["search", *map(str, argv), "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def expected_by_hand(folders, decide) -> list[tuple[str, int]]:
    """(folder, id) of the records ``decide`` accepts, folder by folder, by first time."""
    out = []
    for folder in folders:
        records = [json.loads(x) for x in (folder / "tracks.jsonl").read_text().splitlines()]
        kept = [r for r in records if r["probabilities"] and decide(r)]
        out += [
            (str(folder), r["id"]) for r in sorted(kept, key=lambda r: (r["first_time"], r["id"]))
        ]
    return out


def test_json_lines_are_the_matching_tracks_in_time_order(folders, capsys):
    query = "Female & !Hat | 'Long hair' & \"Skirt&Dress\""
    found = run_json(capsys, *folders, query)

    def decide(r):
        yes = set(r["attributes"])
        return ("Female" in yes and "Hat" not in yes) or (
            "Long hair" in yes and "Skirt&Dress" in yes
        )

    assert [(m["folder"], m["id"]) for m in found] == expected_by_hand(folders, decide)
    assert found, "the generated tracks hold matches"
    first = found[0]
    assert set(first["probabilities"]) == {"Female", "Hat", "Long hair", "Skirt&Dress"}
    assert first["first_time"] <= first["last_time"]
    assert first["thumbnail"] is None  # the generated records have none


def test_cut_off_and_confidence_order(folders, capsys):
    found = run_json(capsys, *folders, "Female & !Hat", "--min-prob", "0.7", "--sort", "confidence")

    def confidence(r):
        return min(r["probabilities"]["Female"], 1 - r["probabilities"]["Hat"])

    expected = expected_by_hand(folders, lambda r: confidence(r) >= 0.7)
    assert sorted((m["folder"], m["id"]) for m in found) == sorted(expected)
    values = [m["confidence"] for m in found]
    assert values == sorted(values, reverse=True) and values[-1] >= 0.7
    for match in found:
        p = match["probabilities"]
        assert match["confidence"] == pytest.approx(min(p["Female"], 1 - p["Hat"]), abs=1e-6)


def test_text_lines_name_folder_id_time_probabilities_and_thumbnail(tmp_path, capsys):
    records = make_records(3, seed=2)
    records[0].update(attributes=["Hat"], thumbnail="thumbnails/track_000001.png")
    records[0]["probabilities"]["Hat"] = 0.91
    records[1]["attributes"] = records[2]["attributes"] = []
    folder = write_folder(tmp_path / "out", records)
    assert main(["search", str(folder), "Hat"]) == 0
    lines = capsys.readouterr().out.splitlines()
    r = records[0]
    assert lines == [
        f"{folder}  #1  {r['first_time']:.1f}-{r['last_time']:.1f} s  Hat 0.91  "
        f"{folder / 'thumbnails' / 'track_000001.png'}",
        "1 of 3 tracks match in 1 folder(s)",
    ]


def test_a_track_still_being_written_is_left_out(tmp_path):
    records = make_records(5, seed=3)
    folder = write_folder(tmp_path / "live", records)
    with open(folder / "tracks.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(make_records(1, seed=4)[0])[:50])  # half a line, no newline yet
    assert [r["id"] for r in read_folder(folder).tracks] == [r["id"] for r in records]


def test_search_without_query_lists_every_track(folders):
    tracks = [read_folder(f) for f in folders]
    found = search(tracks, None, sort="confidence")
    assert len(found) == sum(len(t.tracks) for t in tracks)
    assert found[-1].confidence == 0.0 and not found[-1].record["probabilities"]


@pytest.mark.slow
def test_a_reader_that_stops_early_is_no_error(tmp_path):
    """``pedattr search ... | head -1``: exit status 0, nothing on stderr."""
    import subprocess
    import sys

    folder = write_folder(tmp_path / "many", make_records(3000))
    process = subprocess.Popen(
        [sys.executable, "-m", "pedattr", "search", str(folder), "Female | !Female"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout.readline().startswith(str(folder).encode())
    process.stdout.close()
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""
