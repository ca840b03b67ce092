"""``pedattr search``: a bad folder, tracks file, query or option is one line naming it, exit 2."""

from __future__ import annotations

import json

import pytest

from pedattr.cli import main
from tests.video.records import make_records, write_folder


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "out", make_records(6))


def refused(capsys, *argv) -> str:
    assert main(["search", *map(str, argv)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pedattr search: error: ")
    return lines[0]


def test_unknown_attribute_says_where_and_lists_the_names(folder, capsys):
    line = refused(capsys, folder, "Female & Hatt")
    assert line == (
        "pedattr search: error: query 'Female & Hatt': unknown attribute 'Hatt' at character 10; "
        'the attributes are Female, Backpack, Hat, Glasses, "Skirt&Dress", "Long hair"'
    )


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("Female &", "expected an attribute name, '!' or '(' at character 9, found the end"),
        ("(Female | Hat", "expected ')' to close the '(' at character 1"),
        ("Skirt&Dress", "unknown attribute 'Skirt' at character 1"),  # unquoted: two names
        ("'Long hair", "the quote at character 1 is not closed"),
        (" ", "the query is empty"),
    ],
)
def test_malformed_query(folder, capsys, query, said):
    assert said in refused(capsys, folder, query)


def test_missing_folder_or_tracks_file(tmp_path, capsys):
    assert refused(capsys, tmp_path / "nope", "Hat").endswith(
        f"{tmp_path / 'nope'}: no such folder"
    )
    (tmp_path / "empty").mkdir()
    line = refused(capsys, tmp_path / "empty", "Hat")
    assert line.endswith(f"{tmp_path / 'empty' / 'tracks.jsonl'}: no such file "
                         "(not a `pedattr track` output folder)")  # fmt: skip


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("{broken\n", "line 1 is not JSON"),
        ("[1, 2]\n", "line 1: not a track record (a JSON object)"),
        ('{"id": 1}\n', "line 1: not a track record (no 'first_time')"),
    ],
)
def test_corrupt_tracks_file_names_the_line(folder, capsys, content, said):
    tracks = folder / "tracks.jsonl"
    good = json.dumps(make_records(1)[0])
    tracks.write_text(good + "\n" + content, encoding="utf-8")
    said = said.replace("line 1", "line 2")
    assert f"{tracks}: {said}" in refused(capsys, folder, "Hat")


def test_tracks_file_not_utf8(folder, capsys):
    (folder / "tracks.jsonl").write_bytes(b"\xff\xfe\x00junk\n")
    assert "tracks.jsonl: cannot be read" in refused(capsys, folder, "Hat")


@pytest.mark.parametrize("value", ["2", "-0.1", "high"])
def test_min_prob_out_of_range(folder, capsys, value):
    assert "--min-prob" in refused(capsys, folder, "Hat", "--min-prob", value)


def test_sort_must_be_time_or_confidence(folder, capsys):
    assert "--sort" in refused(capsys, folder, "Hat", "--sort", "size")
