"""A section of a documentation page that a tool writes from tables, between two markers.

tools/results_text.py, tools/study_text.py and tools/scaling_text.py each own one such section: the
text between the markers is theirs, the rest of the page is hand-written.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


def number(value: float) -> str:
    """Two significant digits: 8.7e-14, 0.64, 12, inf; n/a for NaN."""
    if not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "n/a")
    text = f"{value:.2g}"
    return text.replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


def names(items) -> str:
    """'a', 'a and b', 'a, b and c'; 'none' for no items."""
    items = list(items)
    if not items:
        return "none"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True)
class Section:
    doc: Path
    begin: str
    end: str
    title: str  # how messages name it, e.g. "'What ten seeds say'"
    command: str  # the command that regenerates it

    def replace(self, document: str, text: str) -> str:
        """``document`` with ``text`` between the markers, the rest untouched."""
        if self.begin not in document or self.end not in document:
            raise SystemExit(f"{self.doc}: the markers {self.begin!r} and {self.end!r} are missing")
        head, rest = document.split(self.begin, 1)
        _, tail = rest.split(self.end, 1)
        return f"{head}{self.begin}\n{text}\n{self.end}{tail}"

    def write_or_check(self, text: str, source: Path, check: bool) -> int:
        """Write the section, or with ``check`` only say (exit status 1) whether it is stale."""
        document = self.doc.read_text(encoding="utf-8")
        updated = self.replace(document, text)
        name = self.doc.relative_to(self.doc.parents[1])
        if check:
            if updated != document:
                print(
                    f"{name}: {self.title} differs from the tables in {source}. "
                    f"Regenerate it with {self.command}",
                    file=sys.stderr,
                )
                return 1
            print(f"{name}: {self.title} is what the tables in {source} say")
            return 0
        self.doc.write_text(updated, encoding="utf-8")
        print(f"wrote {name}")
        return 0


def copy_tables(summary: Path, into: Path, tables, run_command: str) -> None:
    """Copy a study's ``tables`` from a run's summary folder into the documentation;
    refused, naming ``run_command``, while any is missing."""
    missing = [name for name in tables if not (summary / name).is_file()]
    if missing:
        raise SystemExit(
            f"{summary}: {', '.join(missing)} missing; run the study first ({run_command})"
        )
    into.mkdir(parents=True, exist_ok=True)
    for name in tables:
        shutil.copyfile(summary / name, into / name)


def study_main(section: Section, render, snapshot, default_tables: Path, description: str, argv):
    """The command line both study-text tools share: --snapshot SUMMARY, --check."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="only say whether it is stale")
    parser.add_argument(
        "--snapshot", type=Path, metavar="SUMMARY", help="first copy the tables of this run"
    )
    parser.add_argument("--tables", type=Path, default=default_tables, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.snapshot is not None:
        snapshot(args.snapshot, args.tables)
    return section.write_or_check(render(args.tables), args.tables, args.check)
