"""Queries over tracks' attributes: ``Female & Backpack & !Hat`` (``pedattr search`` and the
``index.html`` page).

Grammar (``!`` binds tightest, then ``&``, then ``|``; parentheses group)::

    query := and ("|" and)*
    and   := not ("&" not)*
    not   := "!" not | atom
    atom  := NAME | '"' any text but '"' '"' | "'" any text but "'" "'" | "(" query ")"

A bare NAME is a run of characters other than white space and ``& | ! ( ) " '``; a name that
holds any of them (``Skirt&Dress``, ``Long hair``) is written in double or single quotes. Names
are the checkpoint's attribute names, matched exactly (case included).

Meaning, for a track with probability P(A) of each attribute A:

* without a cut-off, ``A`` holds when A is among the track's attributes (P(A) above the
  attribute's threshold, the yes/no answer of ``pedattr track``), ``!`` ``&`` ``|`` are not,
  and, or;
* with a cut-off c, a query holds when its confidence is at least c, where the confidence of
  ``A`` is P(A), of ``!q`` 1 - confidence(q), of ``q & r`` the smaller and of ``q | r`` the
  larger of the two. So ``Hat`` at 0.8 asks P(Hat) >= 0.8 and ``!Hat`` P(Hat) <= 0.2.

The confidence also orders matches (``--sort confidence``). A track without predictions, or
from a checkpoint without one of the query's names, matches no query.

The page (``index.html``) implements the same grammar in JavaScript (``assets/query.js``);
the tests check that both give the same parsed form, errors and matches.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Characters that end a bare name.
SPECIAL = "&|!()\"'"
QUOTES = "\"'"
#: White space between names and operators (the same set in query.js).
WHITESPACE = " \t\n\r\f\v"


class QueryError(ValueError):
    """A query that cannot be parsed or names an unknown attribute. ``position`` counts the
    query's characters from 1; the message says what is wrong, where, and which names exist."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Not:
    operand: Query


@dataclass(frozen=True)
class And:
    operands: tuple[Query, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Query, ...]


Query = Name | Not | And | Or


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "&", "|", "!", "(", ")", "end"
    text: str
    position: int  # from 1


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the query"
    if token.kind == "name":
        return f"the name '{token.text}'"
    return f"'{token.text}'"


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    k = 0
    while k < len(text):
        char = text[k]
        if char in WHITESPACE:
            k += 1
        elif char in "&|!()":
            tokens.append(_Token(char, char, k + 1))
            k += 1
        elif char in QUOTES:
            end = text.find(char, k + 1)
            if end < 0:
                raise QueryError(f"the quote at character {k + 1} is not closed", k + 1)
            if end == k + 1:
                raise QueryError(f"empty name in quotes at character {k + 1}", k + 1)
            tokens.append(_Token("name", text[k + 1 : end], k + 1))
            k = end + 1
        else:
            start = k
            while k < len(text) and text[k] not in WHITESPACE and text[k] not in SPECIAL:
                k += 1
            tokens.append(_Token("name", text[start:k], start + 1))
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.k = 0

    def peek(self) -> _Token:
        return self.tokens[self.k]

    def take(self) -> _Token:
        token = self.tokens[self.k]
        self.k += 1
        return token

    def query(self) -> Query:
        operands = [self.conjunction()]
        while self.peek().kind == "|":
            self.take()
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def conjunction(self) -> Query:
        operands = [self.negation()]
        while self.peek().kind == "&":
            self.take()
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def negation(self) -> Query:
        if self.peek().kind == "!":
            self.take()
            return Not(self.negation())
        return self.atom()

    def atom(self) -> Query:
        token = self.take()
        if token.kind == "name":
            return Name(token.text)
        if token.kind == "(":
            inner = self.query()
            closing = self.take()
            if closing.kind != ")":
                raise QueryError(
                    f"expected ')' to close the '(' at character {token.position}, found "
                    f"{_describe(closing)} at character {closing.position}",
                    closing.position,
                )
            return inner
        raise QueryError(
            f"expected an attribute name, '!' or '(' at character {token.position}, found "
            f"{_describe(token)}",
            token.position,
        )


def _names_with_positions(text: str) -> list[_Token]:
    return [t for t in _tokens(text) if t.kind == "name"]


def quote(name: str) -> str:
    """``name`` as a query writes it: bare, or in quotes when it holds a special character."""
    if name and not any(c in WHITESPACE or c in SPECIAL for c in name):
        return name
    return f"'{name}'" if '"' in name else f'"{name}"'


def parse(text: str, names: Collection[str] | None = None) -> Query:
    """The parsed form of ``text``; with ``names``, every name in it must be one of them.

    Raises:
        QueryError: the query is empty or malformed, or names an attribute not in ``names``.
    """
    if not text.strip(WHITESPACE):
        raise QueryError("the query is empty", 1)
    parser = _Parser(text)
    query = parser.query()
    extra = parser.peek()
    if extra.kind != "end":
        raise QueryError(
            f"expected '&', '|' or the end of the query at character {extra.position}, found "
            f"{_describe(extra)}",
            extra.position,
        )
    if names is not None:
        known = set(names)
        for token in _names_with_positions(text):
            if token.text not in known:
                listed = ", ".join(quote(n) for n in names) if known else "none (no tracks)"
                raise QueryError(
                    f"unknown attribute '{token.text}' at character {token.position}; "
                    f"the attributes are {listed}",
                    token.position,
                )
    return query


def to_json(query: Query) -> list:
    """The parsed form as nested lists, ``["and", ["name", "A"], ["not", ["name", "B"]]]``:
    the form the page's parser gives too."""
    if isinstance(query, Name):
        return ["name", query.name]
    if isinstance(query, Not):
        return ["not", to_json(query.operand)]
    tag = "and" if isinstance(query, And) else "or"
    return [tag, *(to_json(q) for q in query.operands)]


def names_in(query: Query) -> list[str]:
    """The attribute names of ``query``, each once, in the order written."""
    if isinstance(query, Name):
        return [query.name]
    operands: Sequence[Query] = (query.operand,) if isinstance(query, Not) else query.operands
    seen: dict[str, None] = {}
    for operand in operands:
        seen.update(dict.fromkeys(names_in(operand)))
    return list(seen)


def confidence(query: Query, probabilities: Mapping[str, float]) -> float:
    """Fuzzy truth of ``query``: P(A) for a name, 1 - x for ``!``, min for ``&``, max for ``|``."""
    if isinstance(query, Name):
        return probabilities[query.name]
    if isinstance(query, Not):
        return 1.0 - confidence(query.operand, probabilities)
    values = [confidence(q, probabilities) for q in query.operands]
    return min(values) if isinstance(query, And) else max(values)


def holds(query: Query, attributes: Collection[str]) -> bool:
    """Whether ``query`` is true of a track whose yes answers are ``attributes``."""
    if isinstance(query, Name):
        return query.name in attributes
    if isinstance(query, Not):
        return not holds(query.operand, attributes)
    results = (holds(q, attributes) for q in query.operands)
    return all(results) if isinstance(query, And) else any(results)


def certainty(probabilities: Mapping[str, float]) -> float:
    """How sure a track's answer is, for sorting without a query: the mean of max(P, 1 - P)."""
    if not probabilities:
        return 0.0
    total = 0.0
    for p in probabilities.values():  # a plain loop: sum() compensates, the page's JS does not
        total += max(p, 1.0 - p)
    return total / len(probabilities)


def matches(
    query: Query | None, record: Mapping[str, Any], min_prob: float | None = None
) -> float | None:
    """The confidence with which ``record`` (a ``tracks.jsonl`` object) matches ``query``, or
    None when it does not. Without a query every track matches, its confidence being
    :func:`certainty` (0 for a track without predictions). ``min_prob`` None: the track's
    yes/no answers decide."""
    probabilities = record.get("probabilities") or {}
    if query is None:
        return certainty(probabilities)
    if not probabilities:
        return None
    if any(name not in probabilities for name in names_in(query)):
        return None
    value = confidence(query, probabilities)
    if min_prob is None:
        return value if holds(query, record.get("attributes") or []) else None
    return value if value >= min_prob else None
