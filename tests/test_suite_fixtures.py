"""The suite's shared end-to-end runs: made once per session whatever the xdist workers do."""

import threading
import time
from pathlib import Path

import pytest

from conftest import made_once_per_session


class WorkerTemp:
    """Stands in for a worker's tmp_path_factory: its own folder below the session's."""

    def __init__(self, session: Path, worker: str):
        self.folder = session / f"popen-{worker}"
        self.folder.mkdir(parents=True, exist_ok=True)

    def getbasetemp(self) -> Path:
        return self.folder


def counting_make(calls: list, pause: float = 0.3):
    def make(folder: Path):
        calls.append(folder)
        time.sleep(pause)  # long enough for the other workers to arrive meanwhile
        (folder / "result.txt").write_text("made\n")

    return make


def test_workers_asking_at_once_share_one_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    calls, found = [], {}

    def worker(name):
        factory = WorkerTemp(tmp_path, name)
        found[name] = made_once_per_session(factory, "run", counting_make(calls))

    threads = [threading.Thread(target=worker, args=(f"gw{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(calls) == 1
    assert set(found.values()) == {tmp_path / "run"}
    assert (tmp_path / "run/result.txt").read_text() == "made\n"
    # A later request in the same session reuses it too.
    made_once_per_session(WorkerTemp(tmp_path, "gw3"), "run", counting_make(calls))
    assert len(calls) == 1


def test_a_failed_attempt_is_made_again_from_scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    factory = WorkerTemp(tmp_path, "gw0")

    def failing(folder: Path):
        (folder / "half.txt").write_text("half\n")
        raise RuntimeError("snakemake failed")

    with pytest.raises(RuntimeError, match="snakemake failed"):
        made_once_per_session(factory, "run", failing)
    calls = []
    folder = made_once_per_session(factory, "run", counting_make(calls, pause=0))
    assert len(calls) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["result.txt"]


def test_without_xdist_the_session_folder_is_the_base(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    factory = WorkerTemp(tmp_path, "gw0")
    folder = made_once_per_session(factory, "run", counting_make([], pause=0))
    assert folder == factory.getbasetemp() / "run"
