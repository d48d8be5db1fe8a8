"""The documentation as the tests read it: README.md, the pages of docs/, and the methods table."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def page(name: str) -> str:
    """The text of ``docs/NAME``."""
    return (REPO / "docs" / name).read_text()


def documents() -> dict[str, str]:
    """README.md, then every page of docs/ (sorted by name): path relative to the checkout -> text."""
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return {path.relative_to(REPO).as_posix(): path.read_text() for path in paths}


def methods_table() -> dict[str, dict[str, str]]:
    """The table of docs/methods.md: each method's name (``model=NAME``) -> {column header: cell}."""
    lines = [line for line in page("methods.md").splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[0] == "`model=`", header
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(header), line  # no cell holds a "|"
        rows[cells[0].strip("`")] = dict(zip(header, cells))
    return rows
