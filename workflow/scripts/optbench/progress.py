"""How far a training job is: written by the job as it goes, read by workflow/scripts/progress.py.

A training job keeps one small JSON file beside its log (``<log>.progress.json``)
with its planned and finished runs and steps, when it started and when it
last wrote. It rewrites the file atomically at most once per ``INTERVAL``
seconds while it trains (and when it starts and ends), so the cost is one
clock read per training step (a step of all runs, in the batched engine).
Standard library only: training jobs import it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from optbench import runfiles

INTERVAL = 1.0  # seconds between rewrites while a job trains
SUFFIX = ".progress.json"
RUNNING, DONE, FAILED = "running", "done", "failed"


def path_for(log: str | os.PathLike) -> Path:
    """The progress file of the job whose log is ``log``."""
    return Path(f"{log}{SUFFIX}")


class Progress:
    """A job's progress, written to ``path`` (None: kept in memory only)."""

    def __init__(self, path, runs: int, steps: int, clock=time.time, log=None):
        self.path = None if path is None else Path(path)
        self.clock = clock
        self.log = log  # also said there in a plain line at each write
        self.record = {
            "runs_planned": runs,
            "runs_done": 0,
            "steps_planned": steps,
            "steps_done": 0,
            "started": clock(),
            "updated": clock(),
            "state": RUNNING,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        self.next_write = 0.0
        self.write(force=True)

    def steps(self, count: int) -> None:
        """``count`` run-steps finished (one step of ``count`` runs, or of one run)."""
        self.record["steps_done"] += count
        if "rate_from" not in self.record:
            # The rate is measured from the first finished step on, so that the
            # job's start-up (imports, building, calibrating) does not count.
            self.record["rate_from"] = [self.clock(), self.record["steps_done"]]
        self.write()

    def runs(self, count: int = 1) -> None:
        self.record["runs_done"] += count
        self.write()

    def finish(self, state: str = DONE) -> None:
        self.record["state"] = state
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        now = self.clock()
        if self.path is None or (not force and now < self.next_write):
            return
        self.next_write = now + INTERVAL
        self.record["updated"] = now
        runfiles.write_text_atomic(self.path, json.dumps(self.record, sort_keys=True) + "\n")
        if self.log is not None:
            print(f"progress: {describe(self.record, now)}", file=self.log, flush=True)


def describe(record: dict, now: float) -> str:
    """One line: runs and run-steps done of planned, elapsed and remaining time
    (the run-steps still to do at the rate since the first step finished)."""
    done, planned = record["steps_done"], record["steps_planned"]
    # A job that ended stopped its clock when it last wrote.
    ended = record["state"] != RUNNING
    elapsed = (float(record.get("updated", now)) if ended else now) - record["started"]
    since, done_then = record.get("rate_from") or (now, done)
    if record["state"] != RUNNING:
        remaining = ""
    elif done <= done_then or now <= since:
        remaining = ", remaining unknown"
    else:
        rate = (done - done_then) / (now - since)  # run-steps per second
        remaining = f", about {format_seconds((planned - done) / rate)} left"
    return (
        f"{record['runs_done']:,} of {record['runs_planned']:,} runs, {done:,} of "
        f"{planned:,} run-steps ({share(done, planned):.0%}), "
        f"{format_seconds(elapsed)} elapsed{remaining}, {record['state']}"
    )


def share(done: int, planned: int) -> float:
    return done / planned if planned else 1.0


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def read(path) -> dict | None:
    """A progress record, or None when the file is missing or not one (being replaced)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    needed = {"runs_planned", "runs_done", "steps_planned", "steps_done", "started", "state"}
    return record if isinstance(record, dict) and needed <= set(record) else None


def stalled(record: dict, now: float, quiet: float = 60.0) -> bool:
    """A running job that cannot be running: its process is gone from this host,
    or (on another host) it has not written for ``quiet`` seconds."""
    if record.get("state") != RUNNING:
        return False
    if record.get("host") == socket.gethostname():
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, TypeError, ValueError, OverflowError):
            pass
        return False
    return now - float(record.get("updated", record["started"])) > quiet
