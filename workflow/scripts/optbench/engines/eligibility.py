"""May the batched engine train a class from a package or a file? The one answer.

torch.optim's classes are judged by name (planning/batch_policy.py, torch-free).
A class from a package or a file (``module.Class``) is judged by what it needs
from the loop and by the run-independence probe (probe.py). The config check
(planning/settings.py, under ``engine: batched``, before any job) and the
training job (train.py, before a group trains) both ask ``class_verdict``, and
both word a refusal with ``batch_policy.batched_refusal``.
"""

from __future__ import annotations

from optbench.engines import optimizers, probe, training


def class_verdict(entry: dict, optimizers_dir, kwargs_list) -> tuple[bool, str]:
    """(whether the batched engine may train optimizer ``entry``'s class with each
    of ``kwargs_list``, why): the protocols the engine does not implement send
    it to the loop, else the probe decides. The reason is the probe's verdict
    where it passed, else one sentence saying that it runs in the per-run loop."""
    cls = training.optimizer_class(entry, optimizers_dir)
    needs = [
        what
        for what, needed in (
            ("a closure", optimizers.needs_closure(cls)),
            ("train() and eval() modes", optimizers.has_train_eval(cls)),
            ("backward(create_graph=True)", optimizers.needs_create_graph(cls)),
        )
        if needed
    ]
    if needs:
        return False, f"optimizer {entry['class']} runs in the per-run loop: it needs {needs[0]}"
    passed, verdict = probe.independent(cls, kwargs_list)
    if passed:
        return True, verdict
    return False, f"optimizer {entry['class']} runs in the per-run loop: {verdict}"
