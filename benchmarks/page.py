"""Benchmark: index.html with many tracks in headless Chromium (Playwright).

For each count of generated tracks (the tests' records: 6 attributes, 2 crops each), writes the
page and prints its size, the seconds until it is ready (all cards built), until a pasted query
is applied (60 ms of it the page's wait for more keys) and until sorting by confidence is done.
Needs playwright and Debian's chromium (``--browser``).

Usage:
    python benchmarks/page.py                    # 300 and 3000 tracks
    python benchmarks/page.py --tracks 300 10000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

from pedattr.video.page import write_index  # noqa: E402
from tests.video.records import make_records, write_folder  # noqa: E402

QUERY = "Female & !Hat"


def measure(browser, folder: Path) -> dict[str, float]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    started = time.perf_counter()
    page.goto((folder / "index.html").as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
    ready = time.perf_counter() - started
    started = time.perf_counter()
    page.fill("#query", QUERY)
    page.wait_for_function(
        "q => JSON.parse(document.getElementById('count').dataset.state)[0] === q",
        arg=QUERY,
        timeout=120_000,
    )
    query = time.perf_counter() - started
    started = time.perf_counter()
    page.select_option("#sort", "confidence")
    page.wait_for_function(
        "() => JSON.parse(document.getElementById('count').dataset.state)[2] === 'confidence'"
    )
    sort = time.perf_counter() - started
    page.close()
    return {"ready": ready, "query": query, "sort": sort}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--browser", default="/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.browser, args=["--no-sandbox"])
        print("tracks  page KiB  ready s  query s  sort s")
        for count in args.tracks:
            folder = write_folder(Path(tmp) / str(count), make_records(count, seed=5))
            size = write_index(folder).stat().st_size / 1024
            times = measure(browser, folder)
            print(
                f"{count:6d}  {size:8.0f}  {times['ready']:7.2f}  {times['query']:7.2f}  "
                f"{times['sort']:6.2f}"
            )
        browser.close()


if __name__ == "__main__":
    main()
