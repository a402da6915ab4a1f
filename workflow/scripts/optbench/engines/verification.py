"""Checking the batched engine against the per-run loop, run by run, after it trained.

The batched engine is bit-exact to the loop only where its optimizer treats
every run by itself. For torch.optim's element-wise classes that is known; for
a class from a package or a file the run-independence probe (probe.py) is
evidence, not proof: an optimizer that couples the runs only after its
probe's steps (one that divides by the whole group's gradient norm from step
11 on) passes it and would be trained batched. So after a group trained
batched, the training job re-trains a small sample of its runs in the per-run
loop and compares what each writes, byte for byte (``first_difference``).
Under ``engine: auto`` any difference sends the whole group to the loop;
under ``engine: batched`` the comparison is logged and recorded, and the
batched runs are kept (the user accepted float32-rounding differences).

The sample (``sample``): the first run of each variant (a variant is one set
of optimizer kwargs and schedule: each has its own optimizer over its rows of
the stacked tensors, so each can couple on its own), plus the run with the
most steps (a coupling that starts late shows there first). Torch-free.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

# What a run writes, by the name of its field in training.RunResult: the TSV's
# columns (losses, evaluations, lrs) and the sidecar's held-out metrics.
COMPARED = ("losses", "evaluations", "lrs", "heldout", "curve")


def variant_key(spec: dict) -> str:
    """Runs with equal keys share one optimizer in a batch: kwargs and schedule."""
    optimizer = spec["optimizer"]
    return json.dumps([optimizer.get("kwargs"), optimizer.get("schedule")], sort_keys=True)


def sample(runs: Sequence) -> list[int]:
    """The positions in ``runs`` (each with ``.spec`` and ``.seed``) to re-train in
    the loop: the lowest seed of each variant, and the first run with the most
    steps; in the order of ``runs``."""
    first: dict[str, int] = {}
    for position, run in enumerate(runs):
        key = variant_key(run.spec)
        if key not in first or run.seed < runs[first[key]].seed:
            first[key] = position
    longest = max(range(len(runs)), key=lambda position: runs[position].spec["steps"])
    return sorted({*first.values(), longest})


def _text(value) -> str:
    # JSON writes a float as repr does, the shortest text that reads back as
    # the same double: equal texts are equal bits (NaN and -0.0 included).
    return json.dumps(value, sort_keys=True)


def first_difference(batched, looped) -> str | None:
    """None where the two results (training.RunResult) would write the same bytes;
    else where they first differ, in words."""
    for name in COMPARED:
        a, b = getattr(batched, name), getattr(looped, name)
        if _text(a) == _text(b):
            continue
        if name == "losses" and len(a) == len(b):
            step = next(
                i for i, (x, y) in enumerate(zip(a, b, strict=True)) if _text(x) != _text(y)
            )
            differing = sum(_text(x) != _text(y) for x, y in zip(a, b, strict=True))
            return (
                f"loss of step {step} {a[step]!r} batched vs {b[step]!r} in the loop "
                f"({differing} of {len(a)} losses differ, largest relative difference "
                f"{max_relative_difference(a, b):.2g})"
            )
        return f"{name} differ"
    return None


def max_relative_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """max |a - b| / max(|a|, |b|) over the steps where both are finite (0 where equal)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x == y or not (math.isfinite(x) and math.isfinite(y)):
            continue
        worst = max(worst, abs(x - y) / max(abs(x), abs(y)))
    return worst


def check_group(trained: list[tuple], retrain, fall_back: bool) -> tuple[list[tuple], str]:
    """Verify a group's trained runs against the loop; (what to write, the log line).

    ``trained``: (run, result, engine, reason, details) per run, as the batched
    orchestration yields them (runs the engine itself sent to the loop say
    ``engine == "loop"`` and are left as they are). ``retrain(run)``: the run
    through the per-run loop (training.train_one), its RunResult. ``fall_back``
    (engine auto): on any difference every batched run is re-trained in the
    loop and says why; else (engine batched) the batched runs are kept and the
    comparison is recorded. Each batched run's details get ``verification``:
    the runs re-trained, the seconds it took (building and evaluating them
    included), and the first difference (None where every sampled run wrote
    the batched engine's bytes).
    """
    positions = [i for i, entry in enumerate(trained) if entry[2] == "batched"]
    if not positions:
        return trained, ""
    runs = [trained[i][0] for i in positions]
    chosen = [positions[p] for p in sample(runs)]
    looped, difference = {}, None
    started = time.perf_counter()
    for i in chosen:
        run, result = trained[i][:2]
        looped[i] = retrain(run)
        found = first_difference(result, looped[i])
        if found and difference is None:
            difference = f"seed {run.seed} of variant {run.spec['variant']}: {found}"
    seconds = time.perf_counter() - started
    names = ", ".join(
        f"seed {trained[i][0].seed} ({trained[i][0].spec['variant']})" for i in chosen
    )
    # One details dict per batch (chunk), shared by its runs.
    batches = {id(trained[i][4]): trained[i][4] for i in positions}
    batch_seconds = sum(details.get("batch_seconds", 0.0) for details in batches.values())
    record = {"runs": names, "seconds": seconds, "difference": difference}
    head = (
        f"verified: {len(chosen)} of {len(positions)} batched run(s) re-trained in the per-run "
        f"loop ({names}) in {seconds:.3f} s, against {batch_seconds:.3f} s batched: "
    )
    written = list(trained)
    if difference is None or not fall_back:
        for i in positions:
            run, result, engine, reason, details = trained[i]
            written[i] = (run, result, engine, reason, {**details, "verification": record})
        if difference is None:
            return written, head + "bit-identical"
        return written, head + f"{difference}; kept batched (engine batched was asked for)"
    reason = (
        "engine auto re-trained the group in the per-run loop: the batched engine's bytes "
        f"differed from the loop's ({difference})"
    )
    for i in positions:
        run = trained[i][0]
        result = looped[i] if i in looped else retrain(run)
        written[i] = (run, result, "loop", reason, {"verification": record})
    return written, head + f"{difference}; re-trained all {len(positions)} in the loop"
