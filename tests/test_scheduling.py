"""The suite's own order of work under pytest-xdist (tests/scheduling.py)."""

import scheduling

IDS = [
    "tests/test_a.py::test_one",
    "tests/test_a.py::test_two",
    "tests/test_checkpoints.py::test_a_checkpoint_of_these_settings_is_taken",
    "tests/test_checkpoints.py::test_killed_jobs_resume_to_the_same_bytes[torch-loop]",
    "tests/test_checkpoints.py::test_a_misspelt_key",
    "tests/test_b.py::test_three[x]",
]


def test_long_tests_are_units_of_their_own_and_the_rest_go_by_file():
    units = [scheduling.unit_of(nodeid) for nodeid in IDS]
    assert units == [
        "tests/test_a.py",
        "tests/test_a.py",
        "tests/test_checkpoints.py",
        scheduling.ALONE[0],
        "tests/test_checkpoints.py",
        "tests/test_b.py",
    ]


def test_xdist_hands_out_the_heaviest_unit_first(monkeypatch):
    """The scheduler itself, given two workers' collections: its queue of units."""
    from types import SimpleNamespace

    weights = {"tests/test_b.py": 50.0, scheduling.ALONE[0]: 300.0}
    monkeypatch.setattr(scheduling, "WEIGHTS", weights)
    option = SimpleNamespace(loadscopereorder=True, dist="loadfile", numprocesses=2, tx=[])
    config = SimpleNamespace(
        option=option, getvalue=lambda name: ["2*popen"] if name == "tx" else None
    )
    scheduler = scheduling.make_scheduler(config, None)
    assert option.loadscopereorder is False
    sent = {}

    class Worker:
        shutting_down = False

        def __init__(self, name):
            self.gateway = SimpleNamespace(id=name)
            sent[name] = []

        def send_runtest_some(self, indices):
            sent[self.gateway.id] += [IDS[i] for i in indices]  # the worker's own order

        def shutdown(self):
            self.shutting_down = True

    workers = [Worker("gw0"), Worker("gw1")]
    for worker in workers:
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, IDS)
    scheduler.schedule()
    # gw0 took the heaviest unit (a kill test alone), gw1 the next
    # (test_b.py); then each took one more unit, in collection order.
    assert sent["gw0"][0] == IDS[3]
    assert sent["gw1"][0] == IDS[5]
    assert sorted(sum(sent.values(), [])) == sorted(IDS)  # every test once
