"""The README stays an entrance, its links resolve, and no text names one machine's paths.

The documentation site itself is checked by ``mkdocs build --strict`` (``make docs``, part of
``make test``), which fails on broken links and anchors between the pages of ``docs/``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: Absolute paths that only exist on one machine (a home or build directory).
MACHINE_PATH = re.compile(r"/(root|home|work)/|/tmp/[A-Za-z]")


def _text_files() -> list[Path]:
    files = [README, ROOT / "CHANGELOG.md", ROOT / "mkdocs.yml", ROOT / "Makefile"]
    for folder, pattern in (("docs", "*.md"), ("configs", "*.yaml"), ("pedattr", "*.py")):
        files += sorted((ROOT / folder).rglob(pattern))
    files += sorted((ROOT / "benchmarks").glob("*.py"))
    return files


def test_readme_is_an_entrance_with_the_quick_start() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets, "the README links to the documentation pages"
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert missing == []


def test_no_machine_specific_paths() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert found == []


#: Modules that name a README.md because they write one: the model card of the hub layout.
MODEL_CARD_WRITERS = ("pedattr/checkpoint/hub.py", "pedattr/checkpoint/card.py", "pedattr/cli.py")


def test_code_cites_docs_pages_not_readme_sections() -> None:
    citing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "pedattr").rglob("*.py"))
        if "README" in _without_model_card(path)
    ]
    assert citing == []


def _without_model_card(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if path.relative_to(ROOT).as_posix() in MODEL_CARD_WRITERS:
        text = text.replace("README.md", "")
    return text
