"""A script job's log, and its failure's reason on the console.

The rules' Python scripts (summarize.py, plot.py) write their errors and
warnings to the rule's log. When one fails, Snakemake's console shows only
``CalledProcessError ... line N``; the reason would stay in the log. Inside
``logged_job`` the traceback still goes to the log, and the job's one-line
reason (the exception's message) and the log's path go to the console's
stderr too, before the job exits with status 1.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import traceback


def reason(error: BaseException) -> str:
    """The one-line reason of ``error``: its message's last non-empty line, else its type."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


@contextlib.contextmanager
def logged_job(log_path, job: str):
    """Errors and warnings to ``log_path``; on failure, the reason on the console too.
    Yields the console's stream, for lines a user must see (warnings).

    Entered once the job's imports are done, it also freezes what they left
    alive (gc.freeze): pandas', matplotlib's and scipy's objects stay alive for
    the whole job anyway, and each full collection would walk them again
    (about 0.5 s of a tiny study's 3.5 s plot job)."""
    gc.freeze()
    console = sys.stderr
    with open(log_path, "w", encoding="utf-8") as log:
        sys.stderr = log
        try:
            yield console
        except Exception as error:  # noqa: BLE001 - every failure is reported, then exits 1
            traceback.print_exc(file=log)
            log.flush()
            print(f"{job} job failed: {reason(error)}", file=console)
            print(f"  (full traceback in {log_path})", file=console)
            sys.stderr = console
            sys.exit(1)
        finally:
            sys.stderr = console
