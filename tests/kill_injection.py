"""SIGKILL a training job at a chosen moment (tests/test_checkpoints.py, never the pipeline).

    python kill_injection.py step N -- TRAIN_ARGS...
        Run workflow/scripts/train.py with TRAIN_ARGS and SIGKILL it as its
        N-th step boundary begins (checkpoints.JobCheckpoint.boundary), before
        any save that boundary would make.

    python kill_injection.py signal N -- TRAIN_ARGS...
        Run it and send it SIGTERM as its N-th step boundary begins (it is
        expected to save there and exit with checkpoints.EXIT_PREEMPTED).

    python kill_injection.py write N -- TRAIN_ARGS...
        Run it and SIGKILL it during its N-th checkpoint write: the temporary
        file holds half the bytes and has not been renamed into place.

The hooks see the job from outside its code: JobCheckpoint.boundary wrapped
once optbench.engines.checkpoints is imported (at once in a start forked from
tests/fork_server.py, which imported it; else right after train.py imports
it, so that torch is imported after its numerics pins exactly as alone) and
os.replace (writes). A wrapper costs nothing between boundaries, where a
profile function (this file's earlier hook) slowed every call of the job by
about a fifth.
"""

import importlib.abc
import importlib.util
import os
import runpy
import signal
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
CHECKPOINTS = "optbench.engines.checkpoints"
_replace = os.replace


def when_imported(name: str, patch) -> None:
    """``patch(module)`` once the module ``name`` is imported: now if it is, else
    just after its code has run (an import hook that removes itself)."""
    if name in sys.modules:
        patch(sys.modules[name])
        return

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())


def at_step(count: int, signum=signal.SIGKILL) -> None:
    seen = 0

    def patch(checkpoints) -> None:
        boundary = checkpoints.JobCheckpoint.boundary

        def counted(self, *args, **kwargs):
            nonlocal seen
            seen += 1
            if seen == count:
                # The steps this kill loses: those since the job's last save,
                # the one just finished included (the test reads this line).
                lost = self.steps_since + 1
                print(
                    f"kill_injection: {signum.name} at step boundary {seen}, {lost} step(s) "
                    "since the last save",
                    file=sys.stderr,
                    flush=True,
                )
                os.kill(os.getpid(), signum)
            return boundary(self, *args, **kwargs)

        checkpoints.JobCheckpoint.boundary = counted

    when_imported(CHECKPOINTS, patch)


def during_write(count: int) -> None:
    seen = 0

    def replace(src, dst, *args, **kwargs):
        nonlocal seen
        if os.fspath(dst).endswith(".checkpoint"):
            seen += 1
            if seen == count:
                size = os.path.getsize(src)
                os.truncate(src, size // 2)
                print(
                    f"kill_injection: SIGKILL during checkpoint write {seen}",
                    file=sys.stderr,
                    flush=True,
                )
                os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)

    os.replace = replace


if __name__ == "__main__":
    mode, count, separator, *train_args = sys.argv[1:]
    assert separator == "--", sys.argv
    if mode == "signal":
        at_step(int(count), signal.SIGTERM)
    else:
        {"step": at_step, "write": during_write}[mode](int(count))
    sys.path.insert(0, str(SCRIPTS))
    sys.argv = [str(SCRIPTS / "train.py"), *train_args]
    runpy.run_path(str(SCRIPTS / "train.py"), run_name="__main__")
