"""May the batched engine train a class from a package or a file? The one answer.

torch.optim's classes are judged by name (planning/batch_policy.py, torch-free).
A class from a package or a file (``module.Class``) is judged by what it needs
from the loop and by the run-independence probe (probe.py). The config check
(planning/settings.py, under ``engine: batched``, before any job) and the
training job (train.py, before a group trains) both ask ``class_verdict``, and
both word a refusal with ``batch_policy.batched_refusal``.
"""

from __future__ import annotations

from optbench.engines import probe, training


def class_verdict(entry: dict, optimizers_dir, kwargs_list) -> tuple[bool, str]:
    """(whether the batched engine may train optimizer ``entry``'s class with each
    of ``kwargs_list``, why): the protocols the engine does not implement send
    it to the loop, else the probe decides. The reason is the probe's verdict
    where it passed, else one sentence saying that it runs in the per-run loop."""
    cls = training.optimizer_class(entry, optimizers_dir)
    base = training.base_class(entry, optimizers_dir)
    # None: a protocol the batched engine does not implement (not probed).
    passed, verdict = probe.independent(cls, kwargs_list, base)
    if passed:
        return True, verdict
    return False, f"optimizer {entry['class']} runs in the per-run loop: {verdict}"
