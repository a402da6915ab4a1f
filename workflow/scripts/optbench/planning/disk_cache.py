"""A small JSON cache on disk, shared by every process of every study: facts
that are slow to work out from files and that each ``snakemake`` start and
training job would otherwise work out again (the imports of the library's
modules, commands.code_digest; the catalogue of torch's classes,
torch_catalog.load).

Each entry is keyed or checked by the SHA-256 of the bytes it was worked out
from, never by a file's size or time, so an entry can only be used where the
same bytes would give the same answer: it can never be stale. The cache is an
optimisation only: a missing, unreadable or corrupt file is an empty cache,
and one that cannot be written is not written.

Where: ``$OPTBENCH_CACHE`` (an empty value turns the cache off), else
``$XDG_CACHE_HOME/optbench``, else ``~/.cache/optbench``. Standard library
only (every ``snakemake`` start imports it).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

# Past this many entries a file keeps its newest ones: old code's entries are
# never asked for again once it is edited.
MAX_ENTRIES = 4096


def folder() -> Path | None:
    """The cache folder, or None where the cache is turned off."""
    chosen = os.environ.get("OPTBENCH_CACHE")
    if chosen is not None:
        return Path(chosen) if chosen else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "optbench"


def read(name: str) -> dict:
    """The entries of cache file ``name`` (an empty dict where there is none)."""
    where = folder()
    if where is None:
        return {}
    try:
        with open(where / name, encoding="utf-8") as handle:
            entries = json.load(handle)
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def add(name: str, new: dict) -> None:
    """Adds ``new`` entries to cache file ``name``, atomically (a reader sees the
    old file or the new one, never a part). Processes writing at once may lose
    each other's entries: a later process only works them out again."""
    where = folder()
    if where is None or not new:
        return
    entries = read(name)
    for key in new:  # the newest last: they are kept when the file is trimmed
        entries.pop(key, None)
    entries.update(new)
    kept = dict(list(entries.items())[-MAX_ENTRIES:])
    with contextlib.suppress(OSError):
        where.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=where, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(kept, out, separators=(",", ":"))
            os.replace(temporary, where / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
