"""The rows of docs/bad-input.md: each bad-input case, its change and its message."""

import re
from dataclasses import dataclass

from conftest import REPO

TABLE = REPO / "docs" / "bad-input.md"


@dataclass(frozen=True)
class Case:
    name: str
    change: str  # YAML text merged over the default config
    messages: tuple[str, ...]  # every one appears in the error


def _cell(text: str) -> str:
    text = text.strip()
    match = re.fullmatch(r"`(.*)`", text)
    return match.group(1) if match else text


# The heading of the second table: values torch refuses when a job starts.
RUNTIME_HEADING = "## Refused by torch when the training job starts"


def _rows(text: str) -> list[Case]:
    rows = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| case") or line.startswith("| ---"):
            continue
        cells = [cell for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"malformed row in {TABLE}: {line}"
        messages = tuple(re.findall(r"`([^`]+)`", cells[2])) or (cells[2].strip(),)
        rows.append(Case(cells[0].strip(), _cell(cells[1]), messages))
    return rows


def _sections() -> tuple[str, str]:
    text = TABLE.read_text(encoding="utf-8")
    assert text.count(RUNTIME_HEADING) == 1, f"{TABLE} lacks the heading {RUNTIME_HEADING!r}"
    before, after = text.split(RUNTIME_HEADING)
    return before, after


def cases() -> list[Case]:
    """Rows of the first table: refused when Snakemake starts, before any job."""
    return _rows(_sections()[0])


def runtime_cases() -> list[Case]:
    """Rows of the second table: refused by torch in the training job."""
    return _rows(_sections()[1])
