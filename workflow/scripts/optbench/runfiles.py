"""Run files: the per-step loss TSV and its JSON sidecar, written atomically, read strictly.

Standard library only (the writer runs inside lean training jobs); the reader
returns plain lists that the summary code turns into arrays.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

HEADER = "step\tloss"


class RunFileError(ValueError):
    """A run TSV is not in the pipeline's format; the message gives file and line."""


@contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary path beside ``path`` that replaces it only when the block succeeds.

    A job killed mid-write leaves a hidden temporary file, never a truncated
    file under the final name. The file gets the mode any new file would get
    (0666 less the umask, or the directory's default ACL), and its data reaches
    the disk before the rename, so a crash of the machine cannot leave an empty
    file under the final name either.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*.part"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    temporary = _new_temporary(final)
    try:
        yield temporary
        _sync(temporary)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _new_temporary(final: Path) -> Path:
    # Not tempfile.mkstemp: it creates mode 0600 whatever the umask, and the
    # rename keeps that mode, so colleagues could not read the results.
    for _ in range(100):
        candidate = final.with_name(f".{final.name}.{secrets.token_hex(6)}.part")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {final}")


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="\n")


def format_losses(losses) -> str:
    """TSV text; repr() gives the shortest text that reads back as the same float."""
    rows = [HEADER] + [f"{step}\t{float(value)!r}" for step, value in enumerate(losses)]
    return "\n".join(rows) + "\n"


def write_run(tsv_path, losses, sidecar_path, metadata: dict) -> None:
    # The sidecar is written first: a TSV under its final name then always has one.
    write_text_atomic(sidecar_path, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    write_text_atomic(tsv_path, format_losses(losses))


def first_nonfinite_step(losses) -> int | None:
    return next((step for step, value in enumerate(losses) if not math.isfinite(value)), None)


def read_run(path: str | os.PathLike, steps: int | None = None) -> list[float]:
    """The losses of one run TSV, checked line by line."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != HEADER:
        found = lines[0] if lines else "an empty file"
        raise RunFileError(
            f"{path}:1: expected the header 'step<TAB>loss', found {found!r}. "
            "Delete the file so that the pipeline regenerates it."
        )
    losses = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        step = number - 2
        if len(fields) != 2 or fields[0] != str(step):
            raise RunFileError(
                f"{path}:{number}: expected step {step} and a loss separated by a tab, "
                f"found {line!r}. Delete the file so that the pipeline regenerates it."
            )
        try:
            losses.append(float(fields[1]))
        except ValueError:
            raise RunFileError(
                f"{path}:{number}: loss {fields[1]!r} is not a number. "
                "Delete the file so that the pipeline regenerates it."
            ) from None
    if steps is not None and len(losses) != steps:
        raise RunFileError(
            f"{path}:{len(lines) + 1}: expected {steps} steps, found {len(losses)}. "
            "Delete the file so that the pipeline regenerates it."
        )
    return losses
