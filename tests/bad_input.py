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


def cases() -> list[Case]:
    rows = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| ") or line.startswith("| case") or line.startswith("| ---"):
            continue
        cells = [cell for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"malformed row in {TABLE}: {line}"
        messages = tuple(re.findall(r"`([^`]+)`", cells[2])) or (cells[2].strip(),)
        rows.append(Case(cells[0].strip(), _cell(cells[1]), messages))
    return rows
