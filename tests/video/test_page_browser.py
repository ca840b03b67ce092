"""index.html in a real browser (Playwright driving Debian's Chromium): the page's parser agrees
with pedattr's, a query shows exactly the tracks ``pedattr search`` finds, in its order, with
300 tracks; a click shows a track's crops and ALM boxes.

``PEDATTR_PAGE_SCREENSHOT=DIR`` (an output folder of ``pedattr track``) also writes the
documentation's pictures of DIR/index.html into docs/video/.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pedattr.video.page import write_index
from pedattr.video.query import QueryError, parse, to_json
from pedattr.video.search import read_folder, search
from tests.video.records import NAMES, make_records, write_folder

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "video"
TRACKS = 300
#: Generous bound for one page load or one filter (a functional bound, not a speed goal).
WAIT_MS = 15_000

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"no browser: {CHROMIUM} is missing (Debian's `chromium` package)", allow_module_level=True
    )

pytestmark = pytest.mark.slow

#: Valid queries (precedence, negation, quoted names) and malformed ones.
QUERIES = [
    "Female",
    "Female & Backpack & !Hat",
    "Female | Backpack & Hat",
    "Female & Backpack | Hat",
    "!Female & Glasses",
    "!(Female & Glasses)",
    "!!Hat",
    "(Female | Hat) & !(Backpack | Glasses)",
    "\"Skirt&Dress\" | 'Long hair' & !Female",
    "  Hat   &\tGlasses ",
    "",
    "Female &",
    "& Female",
    "(Female | Hat",
    "Female)",
    "Female Hat",
    "()",
    "!",
    "'Long hair",
    '""',
    "Hatt",
    "Female & female",
    "Skirt&Dress",
    "Hat & \U0001f600x",  # a character outside the BMP: counted as one by both parsers
]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = write_folder(tmp_path_factory.mktemp("page") / "out", make_records(TRACKS, seed=5))
    write_index(folder)
    return folder


def open_page(browser, folder: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto((folder / "index.html").as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    page.errors = errors
    return page


@pytest.fixture(scope="module")
def page(browser, folder):
    page = open_page(browser, folder)
    yield page
    assert page.errors == []
    page.close()


def set_controls(page, query: str, cut_off: float | None, sort: str, typed: bool = True) -> None:
    """Set the sort and cut-off, then type the query (``typed``: key by key, as a person
    would; else pasted at once), and wait until the cards show it."""
    page.select_option("#sort", sort)
    page.evaluate(
        """([cutOff]) => {
            const box = document.getElementById("use-cutoff");
            const slider = document.getElementById("cutoff");
            if (cutOff !== null) slider.value = String(cutOff);
            box.checked = cutOff !== null;
            box.dispatchEvent(new Event("change"));
        }""",
        [cut_off],
    )
    if typed:
        page.fill("#query", "")
        page.type("#query", query)
    else:
        page.fill("#query", query)
    state = json.dumps([query, cut_off, sort], separators=(",", ":"), ensure_ascii=False)
    page.wait_for_function(
        "(state) => document.getElementById('count').dataset.state === state",
        arg=state,
        timeout=WAIT_MS,
    )


def shown_ids(page) -> list[int]:
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('.card:not([hidden])'), c => +c.dataset.id)"
    )


def python_answer(query: str, names: list[str]) -> dict:
    try:
        return {"form": to_json(parse(query, names))}
    except QueryError as err:
        return {"error": str(err), "position": err.position}


def test_the_pages_parser_agrees_with_pedattrs(page):
    names = [*NAMES, "</script>"]
    for query in QUERIES:
        in_page = page.evaluate(
            """([q, names]) => {
                try { return {form: PedattrQuery.parse(q, names)}; }
                catch (e) { return {error: e.message, position: e.position}; }
            }""",
            [query, names],
        )
        assert in_page == python_answer(query, names), query


@pytest.mark.parametrize(("cut_off", "sort"), [(None, "time"), (0.7, "confidence")])
def test_a_query_shows_exactly_the_tracks_search_finds(page, folder, cut_off, sort):
    tracks = read_folder(folder)
    for query in QUERIES:
        set_controls(page, query, cut_off, sort, typed=cut_off is None)
        error = page.text_content("#error")
        try:
            expected = search([tracks], query or None, min_prob=cut_off, sort=sort)
        except QueryError as err:
            assert error == str(err), query
            assert len(shown_ids(page)) == TRACKS  # every track stays shown
            continue
        assert error == ""
        assert shown_ids(page) == [m.record["id"] for m in expected], query
        assert page.text_content("#count").startswith(f"{len(expected)} of {TRACKS} tracks")


def test_three_hundred_tracks_load_and_filter(browser, folder):
    started = time.perf_counter()
    page = open_page(browser, folder)
    loaded = time.perf_counter() - started
    assert page.locator(".card").count() == TRACKS
    started = time.perf_counter()
    set_controls(page, "Female & !Hat", None, "confidence")
    filtered = time.perf_counter() - started
    print(
        f"{TRACKS} tracks: page loaded in {loaded:.2f} s, typed query filtered in {filtered:.2f} s"
    )
    assert page.errors == []
    page.close()


def test_a_click_shows_the_tracks_crops_and_boxes(page, folder):
    record = read_folder(folder).tracks[7]
    set_controls(page, "", None, "time")
    page.click(f".card[data-id='{record['id']}']")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.text_content("#detail-title") == f"Track #{record['id']}"
    assert page.locator("#gallery figure").count() == len(record["gallery"])
    boxes = sum(len(levels) for g in record["gallery"] for levels in g["boxes"].values())
    assert page.locator("#gallery rect").count() == boxes
    chosen = next(iter(record["gallery"][0]["boxes"]))
    page.click(f"#detail-attributes tr:has(td:text-is('{chosen}'))")
    only = sum(len(g["boxes"].get(chosen, {})) for g in record["gallery"])
    assert page.locator("#gallery rect").count() == only
    page.keyboard.press("Escape")
    assert page.locator("#detail").is_hidden()


@pytest.mark.skipif(
    not os.environ.get("PEDATTR_PAGE_SCREENSHOT"),
    reason="set PEDATTR_PAGE_SCREENSHOT=DIR (a `pedattr track` output) to redo the docs' pictures",
)
def test_screenshots_for_the_docs(browser):
    folder = Path(os.environ["PEDATTR_PAGE_SCREENSHOT"])
    query = os.environ.get("PEDATTR_PAGE_QUERY", "Front & !Female")
    write_index(folder)
    page = open_page(browser, folder)
    set_controls(page, query, None, "time")
    page.wait_for_load_state("networkidle")
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / "index_page.png"))
    page.click(".card:not([hidden])")
    page.wait_for_selector("#detail:not([hidden])")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(DOCS / "index_track.png"))
    assert page.errors == []
    page.close()
