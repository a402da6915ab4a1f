"""How pytest-xdist hands out the suite: the longest work first.

A test file is one unit of work (its module fixtures, such as the private
Slurm cluster, then run once), except the few long tests named in ALONE, each
a unit of its own so that two of them can run at once on two workers. Units
start longest first (WEIGHTS), so that the last minutes are not one long unit
running while the other workers idle: xdist's own order is by number of tests,
which put the Slurm file (8 tests, then about 8 minutes) last. The Slurm file stays
whole: its first test checks that its own cluster leaves no process behind, so
a second cluster of the suite must not start on another worker meanwhile.

The weights only order the work: a stale weight costs minutes at worst, never
a result, and a test renamed out of ALONE runs with its file again.
"""

from __future__ import annotations

# Node id prefixes that form a unit of their own.
ALONE = (
    "tests/test_checkpoints.py::test_killed_jobs_resume_to_the_same_bytes[torch-loop]",
    "tests/test_checkpoints.py::test_killed_jobs_resume_to_the_same_bytes[torch-auto]",
    "tests/test_checkpoints.py::test_killed_jobs_resume_to_the_same_bytes[packages-loop]",
)

# Unit -> seconds (its tests' wall time in one whole run, 3 workers on 2
# cores, 2026-12-07, after the forked starts); a unit not listed (under 8 s)
# weighs nothing and keeps its place after these.
WEIGHTS: dict[str, float] = {
    "tests/test_slurm.py": 387,
    "tests/test_faults.py": 276,
    "tests/test_workflow.py": 268,
    "tests/test_numerics.py": 99,
    "tests/test_scale.py": 79,
    "tests/test_grid_workflow.py": 63,
    "tests/test_browser.py": 54,
    "tests/test_reuse.py": 48,
    "tests/test_jobs.py": 34,
    "tests/test_fork_server.py": 31,
    "tests/test_verification.py": 30,
    "tests/test_heldout_curves.py": 28,
    "tests/test_batched.py": 28,
    "tests/test_studies.py": 27,
    "tests/test_optimizers.py": 26,
    "tests/test_checkpoints.py::test_killed_jobs_resume_to_the_same_bytes[torch-loop]": 23,
    "tests/test_checkpoints.py::test_killed_jobs_resume_to_the_same_bytes[torch-auto]": 22,
    "tests/test_checkpoints.py": 20,
    "tests/test_training.py": 19,
    "tests/test_job_files.py": 17,
    "tests/test_profiles.py": 17,
    "tests/test_configfiles.py": 16,
    "tests/test_batched_lbfgs.py": 15,
    "tests/test_envs.py": 15,
    "tests/test_search.py": 13,
    "tests/test_packed_outputs.py": 11,
    "tests/test_checkpoints.py::test_killed_jobs_resume_to_the_same_bytes[packages-loop]": 11,
    "tests/test_crash_safety.py": 10,
    "tests/test_analysis.py": 9,
    "tests/test_scaling_axes.py": 9,
    "tests/test_bundles.py": 9,
    "tests/test_progress.py": 8,
}


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its own (ALONE) or its file's."""
    for prefix in ALONE:
        if nodeid.startswith(prefix):
            return prefix
    return nodeid.split("::", 1)[0]


def make_scheduler(config, log):
    """A file-per-unit scheduler (xdist's loadfile) with ALONE's units and WEIGHTS' order."""
    from xdist.scheduler import LoadFileScheduling

    class HeaviestFirst(LoadFileScheduling):
        ordered = False

        def __init__(self, config, log=None):
            super().__init__(config, log)
            # The order is ours (WEIGHTS), not xdist's by number of tests.
            config.option.loadscopereorder = False

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            # The queue of units is built in schedule(), just before the first
            # assignment: order it then. (The workers' collections keep their
            # order: xdist sends a worker indices into its own.)
            if not self.ordered:
                self.ordered = True
                units = sorted(self.workqueue.items(), key=lambda unit: -WEIGHTS.get(unit[0], 0))
                self.workqueue.clear()
                self.workqueue.update(units)
            super()._assign_work_unit(node)

    return HeaviestFirst(config, log)
