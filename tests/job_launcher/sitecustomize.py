"""The suite's job launcher (tests/fork_server.py, ``serve_jobs``).

On the PYTHONPATH of the suite's processes (tests/conftest.py), this module
is imported by every Python start. It acts only in a start of
``python .../workflow/scripts/train.py ...`` (a training job) or of
``python .../.snakemake/scripts/tmp*.py`` (the script Snakemake writes for a
`script:` job) whose environment names a server for it
(OPTBENCH_TEST_JOB_SERVER, OPTBENCH_TEST_SCRIPT_SERVER, which conftest gives
its Snakemake starts): it hands the server its interpreter, command line,
working folder, environment, umask and stdin/stdout/stderr, relays the
signals it gets to the job the server forked, and ends as the job ends (its
exit status, or killed by the same signal). If the server is gone, or
refuses (a job the warm-up would start differently), the start goes on here
as a plain `python SCRIPT`. Any other start only continues to the next
sitecustomize on the path, if there is one.
"""

import os
import sys


def _server_for(script: str):
    """The socket of the server for a start of ``script``, if any."""
    if script.endswith(os.sep + "train.py"):
        return os.environ.get("OPTBENCH_TEST_JOB_SERVER")
    folder, name = os.path.split(os.path.abspath(script))
    in_scripts = folder.endswith(os.sep + os.path.join(".snakemake", "scripts"))
    if in_scripts and name.startswith("tmp") and name.endswith(".py"):
        return os.environ.get("OPTBENCH_TEST_SCRIPT_SERVER")
    return None


def _hand_over_job() -> None:
    argv = getattr(sys, "orig_argv", [])
    server = _server_for(argv[1]) if len(argv) >= 2 else None
    if not server:
        return
    import json
    import signal
    import socket

    umask = os.umask(0)
    os.umask(umask)
    request = {"argv": argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}
    request["executable"] = sys.executable
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        connection.connect(server)
        socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
        reply = json.loads(connection.recv(65536))
    except (OSError, ValueError):
        connection.close()
        return
    if "pid" not in reply:
        connection.close()
        return
    job = reply["pid"]

    def relay(signum, _frame):
        try:  # noqa: SIM105 (no contextlib: this runs in every Python start of the suite)
            os.kill(job, signum)
        except ProcessLookupError:
            pass

    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCONT"):
        signal.signal(getattr(signal, name), relay)
    ended = connection.recv(65536)  # retried across the relayed signals (PEP 475)
    code = json.loads(ended)["returncode"] if ended else -signal.SIGKILL
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


def _next_sitecustomize() -> None:
    """Run the sitecustomize this one shadows on the path, as Python would have."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_hand_over_job()
_next_sitecustomize()
