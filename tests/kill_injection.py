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

The hooks see the job from outside its code: a profile function (boundaries)
and os.replace (writes), so train.py imports torch after its numerics pins
exactly as it does alone.
"""

import os
import runpy
import signal
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
_replace = os.replace


def at_step(count: int, signum=signal.SIGKILL) -> None:
    seen = 0

    def profile(frame, event, arg):
        nonlocal seen
        code = frame.f_code
        if (
            event == "call"
            and code.co_name == "boundary"
            and code.co_filename.endswith("checkpoints.py")
            and "self" in frame.f_locals
            and type(frame.f_locals["self"]).__name__ == "JobCheckpoint"
        ):
            seen += 1
            if seen == count:
                # The steps this kill loses: those since the job's last save,
                # the one just finished included (the test reads this line).
                lost = frame.f_locals["self"].steps_since + 1
                print(
                    f"kill_injection: {signum.name} at step boundary {seen}, {lost} step(s) "
                    "since the last save",
                    file=sys.stderr,
                    flush=True,
                )
                sys.setprofile(None)
                os.kill(os.getpid(), signum)

    sys.setprofile(profile)


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
