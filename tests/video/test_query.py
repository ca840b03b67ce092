"""The query grammar: precedence, quoting, errors with their position, unknown names listing the
names that exist, and what a query means with and without a cut-off."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from pedattr.video.query import QueryError, holds, matches, names_in, parse, quote, to_json

ABC = ["A", "B", "C", "D"]


def as_python(query: str, name: str, negated: str | None = None) -> str:
    """``query`` (one-letter names) as a Python expression: Python's not > and > or is the
    grammar's ! > & > |. ``name`` formats a name; ``negated``, if given, ``!`` before a name."""
    out, tokens = [], re.findall(r"[A-D]|[&|!()]", query)
    k = 0
    while k < len(tokens):
        token = tokens[k]
        if negated and token == "!" and tokens[k + 1] in ABC:
            out.append(negated.format(tokens[k + 1]))
            k += 1
        else:
            out.append({"&": "and", "|": "or", "!": "not"}.get(token) or name.format(token)
                       if token not in "()" else token)  # fmt: skip
        k += 1
    return " ".join(out)


PRECEDENCE = [
    "A | B & C",
    "A & B | C",
    "!A & B",
    "!(A & B)",
    "!A | !B & C",
    "A & (B | C) & !D",
    "!!A",
    "(A | B) & (C | !D)",
    "A | B | C & D",
]


@pytest.mark.parametrize("query", PRECEDENCE)
def test_precedence_is_not_then_and_then_or(query):
    parsed = parse(query)
    expression = as_python(query, "v['{0}']")
    for values in itertools.product([False, True], repeat=len(ABC)):
        v = dict(zip(ABC, values, strict=True))
        assert holds(parsed, [n for n in ABC if v[n]]) == eval(expression, {"v": v})


def test_parsed_form():
    assert to_json(parse("Female & Backpack & !Hat")) == [
        "and", ["name", "Female"], ["name", "Backpack"], ["not", ["name", "Hat"]],
    ]  # fmt: skip
    assert to_json(parse("A | B & C")) == [
        "or",
        ["name", "A"],
        ["and", ["name", "B"], ["name", "C"]],
    ]
    assert to_json(parse(" ( A ) ")) == ["name", "A"]
    assert to_json(parse("!!A")) == ["not", ["not", ["name", "A"]]]


def test_quoted_names_hold_spaces_and_operators():
    query = parse("\"Skirt&Dress\" | 'Long hair' & !'say \"hi\"'")
    assert to_json(query) == [
        "or", ["name", "Skirt&Dress"],
        ["and", ["name", "Long hair"], ["not", ["name", 'say "hi"']]],
    ]  # fmt: skip
    assert names_in(query) == ["Skirt&Dress", "Long hair", 'say "hi"']
    assert [quote(n) for n in ("Hat", "Skirt&Dress", "Long hair", 'say "hi"')] == [
        "Hat", '"Skirt&Dress"', '"Long hair"', "'say \"hi\"'",
    ]  # fmt: skip
    for name in ("Hat", "Skirt&Dress", "Long hair", 'say "hi"', "a(b)", "!x"):
        assert to_json(parse(quote(name))) == ["name", name]


@pytest.mark.parametrize(
    ("query", "position", "message"),
    [
        ("", 1, "the query is empty"),
        ("  \t", 1, "the query is empty"),
        ("A &", 4, "expected an attribute name, '!' or '(' at character 4, found the end"),
        ("& A", 1, "expected an attribute name, '!' or '(' at character 1, found '&'"),
        ("A & | B", 5, "found '|'"),
        ("(A | B", 7, "expected ')' to close the '(' at character 1, found the end"),
        ("A)", 2, "expected '&', '|' or the end of the query at character 2, found ')'"),
        ("A B", 3, "found the name 'B'"),
        ("()", 2, "found ')'"),
        ("!", 2, "found the end of the query"),
        ("A & 'Long hair", 5, "the quote at character 5 is not closed"),
        ('A | ""', 5, "empty name in quotes at character 5"),
    ],
)
def test_malformed_queries_say_what_and_where(query, position, message):
    with pytest.raises(QueryError, match=re.escape(message)) as caught:
        parse(query)
    assert caught.value.position == position


def test_unknown_name_lists_the_names_as_they_are_written():
    names = ["Female", "Hat", "Skirt&Dress", "Long hair"]
    with pytest.raises(QueryError) as caught:
        parse("Female & (Hat | Hatt)", names)
    assert str(caught.value) == (
        "unknown attribute 'Hatt' at character 17; the attributes are "
        'Female, Hat, "Skirt&Dress", "Long hair"'
    )
    assert caught.value.position == 17
    with pytest.raises(QueryError, match="unknown attribute 'female'"):
        parse("female", names)  # names are matched with their case
    assert to_json(parse("'Skirt&Dress' & \"Long hair\"", names))[0] == "and"


def record(probabilities: dict[str, float], thresholds: dict[str, float]) -> dict:
    return {
        "probabilities": probabilities,
        "attributes": [n for n, p in probabilities.items() if p > thresholds[n]],
    }


def test_without_cut_off_the_tracks_yes_no_answers_decide():
    thresholds = {"A": 0.3, "B": 0.7}
    track = record({"A": 0.4, "B": 0.6}, thresholds)  # A yes (0.4 > 0.3), B no (0.6 <= 0.7)
    assert matches(parse("A & !B"), track) is not None
    assert matches(parse("B"), track) is None
    assert matches(parse("A & !B"), track) == pytest.approx(min(0.4, 1 - 0.6))


@pytest.mark.parametrize("query", ["A & !B | C", "!A | B & !C", "(A | !B) & C", "!A & !D"])
def test_cut_off_asks_each_literal_to_be_that_sure(query):
    """Checked against literals written out: A is P(A) >= c, !A is 1 - P(A) >= c."""
    rng = np.random.default_rng(1)
    expression = as_python(query, "(p['{0}'] >= c)", "((1 - p['{0}']) >= c)")
    for _ in range(300):
        p = {n: float(rng.choice([0.05, 0.5, 0.95]) + rng.normal(0, 0.1)) for n in ABC}
        c = float(rng.uniform(0.5, 1.0))
        found = matches(parse(query), record(p, dict.fromkeys(ABC, 0.5)), c)
        assert (found is not None) == eval(expression, {"p": p, "c": c}), (p, c)


def test_cut_off_on_a_negated_group():
    thresholds = {"Hat": 0.5, "Female": 0.5}
    query = parse("!(Hat & Female)")  # confidence 1 - min(P(Hat), P(Female))
    kept = [
        hat
        for hat in (0.9, 0.5, 0.1)
        if matches(query, record({"Hat": hat, "Female": 0.95}, thresholds), 0.8) is not None
    ]
    assert kept == [0.1]
    assert matches(parse("Hat"), record({"Hat": 0.9, "Female": 0.1}, thresholds), 0.8) == 0.9


def test_tracks_without_predictions_or_names_match_no_query():
    assert matches(parse("!Hat"), {"probabilities": {}, "attributes": []}) is None
    assert matches(None, {"probabilities": {}, "attributes": []}) == 0.0  # shown unfiltered
    other_checkpoint = record({"Female": 0.9}, {"Female": 0.5})
    assert matches(parse("!Hat"), other_checkpoint) is None
    assert matches(None, other_checkpoint) == pytest.approx(0.9)  # the certainty
