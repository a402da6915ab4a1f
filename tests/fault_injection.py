"""Faults injected into a child process at the moments where writing can go wrong.

Run by tests/test_crash_safety.py, never by the pipeline. Two modes:

    python fault_injection.py crash N ROOT RUNS_JSON
        Write the runs of RUNS_JSON ([[tsv, losses, sidecar, metadata], ...])
        with runfiles.write_run, and die by SIGKILL at the N-th write event
        under ROOT: in the middle of a write (half the data on disk), just
        before a rename into place, or just after it. Exits 0 when the writes
        have fewer than N events.

    python fault_injection.py pause K PATTERN MARKER -- TRAIN_ARGS...
        Run workflow/scripts/train.py with TRAIN_ARGS, and before the K-th
        rename into a path whose name contains PATTERN, create MARKER and wait
        (up to a minute) for the test to send a signal.

The hooks wrap the standard library's own entry points (io.open, os.open,
os.write, os.replace, os.rename), so they see whatever way the code writes.
"""

import builtins
import io
import json
import os
import runpy
import signal
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
_open, _os_open, _os_write, _os_close = io.open, os.open, os.write, os.close
_replace, _rename = os.replace, os.rename


def _die(event: str) -> None:
    print(f"killed at {event}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class _Events:
    """Counts write events under a root and kills the process at the chosen one."""

    def __init__(self, crash_at: int, root: Path):
        self.crash_at, self.count = crash_at, 0
        self.root = os.path.join(str(root), "")  # a trailing separator: no sibling prefixes
        self.fds: dict[int, str] = {}

    def under_root(self, path) -> bool:
        if isinstance(path, int):
            return path in self.fds
        return os.path.realpath(os.fspath(path)).startswith(self.root)

    def next(self, event: str) -> bool:
        """True when this event is the one to crash at."""
        self.count += 1
        print(f"event {self.count}: {event}", file=sys.stderr, flush=True)
        return self.count == self.crash_at


class _HalfWritingFile:
    """A file whose write at the crash point puts half its data on disk, then dies."""

    def __init__(self, real, events: _Events, name: str):
        self._real, self._events, self._name = real, events, name

    def write(self, data):
        if self._events.next(f"write {self._name}"):
            self._real.write(data[: len(data) // 2])
            self._real.flush()
            _die(f"half of a write to {self._name}")
        return self._real.write(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __enter__(self):
        self._real.__enter__()
        return self

    def __exit__(self, *exc):
        return self._real.__exit__(*exc)

    def __iter__(self):
        return iter(self._real)

    def __getattr__(self, name):
        return getattr(self._real, name)


def install_crash_hooks(events: _Events) -> None:
    def hooked_open(file, mode="r", *args, **kwargs):
        real = _open(file, mode, *args, **kwargs)
        if any(flag in mode for flag in "wax+") and events.under_root(file):
            return _HalfWritingFile(real, events, os.path.basename(str(file)))
        return real

    def hooked_os_open(path, flags, *args, **kwargs):
        fd = _os_open(path, flags, *args, **kwargs)
        if flags & (os.O_WRONLY | os.O_RDWR) and events.under_root(path):
            events.fds[fd] = os.path.basename(os.fspath(path))
        return fd

    def hooked_os_write(fd, data):
        if fd in events.fds and events.next(f"os.write {events.fds[fd]}"):
            _os_write(fd, data[: len(data) // 2])
            _die(f"half of an os.write to {events.fds[fd]}")
        return _os_write(fd, data)

    def hooked_os_close(fd):
        events.fds.pop(fd, None)  # the number may be reused for another file
        return _os_close(fd)

    def hooked(real_rename):
        def rename(src, dst, *args, **kwargs):
            name = os.path.basename(os.fspath(dst))
            if events.under_root(dst) and events.next(f"before rename to {name}"):
                _die(f"before rename to {name}")
            result = real_rename(src, dst, *args, **kwargs)
            if events.under_root(dst) and events.next(f"after rename to {name}"):
                _die(f"after rename to {name}")
            return result

        return rename

    io.open = builtins.open = hooked_open
    os.open, os.write, os.close = hooked_os_open, hooked_os_write, hooked_os_close
    os.replace, os.rename = hooked(_replace), hooked(_rename)


def crash(crash_at: int, root: str, runs_json: str) -> int:
    sys.path.insert(0, str(SCRIPTS))
    from optbench import runfiles

    install_crash_hooks(_Events(crash_at, Path(os.path.realpath(root))))
    for tsv, losses, sidecar, metadata in json.loads(runs_json):
        runfiles.write_run(tsv, losses, sidecar, metadata)
    return 0


def pause(count: int, pattern: str, marker: str, train_args: list[str]) -> None:
    seen = 0

    def hooked(real_rename):
        def rename(src, dst, *args, **kwargs):
            nonlocal seen
            if pattern in os.path.basename(os.fspath(dst)):
                seen += 1
                if seen == count:
                    Path(marker).touch()
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:  # short sleeps: signals act at once
                        time.sleep(0.05)
            return real_rename(src, dst, *args, **kwargs)

        return rename

    os.replace, os.rename = hooked(_replace), hooked(_rename)
    sys.path.insert(0, str(SCRIPTS))
    sys.argv = [str(SCRIPTS / "train.py"), *train_args]
    runpy.run_path(str(SCRIPTS / "train.py"), run_name="__main__")


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "crash":
        sys.exit(crash(int(rest[0]), rest[1], rest[2]))
    if mode == "pause":
        separator = rest.index("--")
        count, pattern, marker = rest[:separator]
        pause(int(count), pattern, marker, rest[separator + 1 :])
    else:
        sys.exit(f"unknown mode {mode!r}")
