"""What the analysis needs from the configuration, without heavy imports.

Made once per Snakemake invocation (common.smk) and passed to the analysis
job as one JSON-able rule param, so this module imports the standard library
only.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

BASE_VARIANT = "base"
# The reference article's problem and losses (docs/reference-experiment.md).
ARTICLE_PROBLEM = "linear"
ARTICLE_LOSS_CLASSES = {"mse_block": "MSELoss", "l1_block": "L1Loss"}


@dataclass
class Context:
    """``order``: variant names from the preferred (smallest swept value) on, for
    ties in the selection; ``swept``: variant -> its swept values (for the
    sensitivity axis); ``mse_block``/``l1_block``: the (problem, loss) of the
    article's linear problem with MSE/L1 (None: not in the grid) and
    ``claims_steps`` the run length of the L1 one (None: none); ``thresholds``:
    "problem/loss" -> the threshold as the cell job takes it (for the captions
    and the tables); ``ranking_metric``: what selection and ranking judge by
    (``optbench.reporting.ranking_metric``)."""

    order: list[str] | None = None
    swept: dict[str, dict] = field(default_factory=dict)
    mse_block: tuple[str, str] | None = None
    l1_block: tuple[str, str] | None = None
    claims_steps: int | None = None
    thresholds: dict[str, str] = field(default_factory=dict)
    baseline: str | None = None  # the optimizer the baseline table compares with
    classes: dict[str, str] = field(default_factory=dict)  # optimizer -> its class
    ranking_metric: str = "auto"
    # Problems on a size or budget axis (optbench.reporting.scaling): problem ->
    # {family, size, budget, parameters, tuned}.
    scaling: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict | None) -> Context:
        data = dict(data or {})
        for key in ("mse_block", "l1_block"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    def as_dict(self) -> dict:
        return asdict(self)


def _sort_key(swept: dict):
    return tuple(
        (key, (0, value) if isinstance(value, int | float) else (1, str(value)))
        for key, value in sorted(swept.items())
    )


def variant_order(experiment) -> list[str]:
    """Every variant name, base first, then by their swept values ascending."""
    swept = {}
    for optimizer in experiment.optimizers.values():
        for name, variant in optimizer.variants.items():
            swept.setdefault(name, variant.swept)
    names = [name for name in swept if name != BASE_VARIANT]
    # Values of different kinds under one key cannot be sorted: keep the config's order.
    with contextlib.suppress(TypeError):
        names.sort(key=lambda name: _sort_key(swept[name]))
    return ([BASE_VARIANT] if BASE_VARIANT in swept else []) + names


def context_for(experiment, thresholds: dict | None = None) -> Context:
    swept = {}
    for optimizer in experiment.optimizers.values():
        for name, variant in optimizer.variants.items():
            swept.setdefault(name, dict(variant.swept))
    blocks, steps = {}, {}
    for problem in experiment.problems.values():
        if problem.problem != ARTICLE_PROBLEM:
            continue
        for key, cls in ARTICLE_LOSS_CLASSES.items():
            for loss in problem.losses:
                component = experiment.losses.get(loss)
                if key not in blocks and component is not None and component.cls == cls:
                    blocks[key] = (problem.name, loss)
                    steps[key] = problem.steps
    return Context(
        order=variant_order(experiment),
        swept=swept,
        mse_block=blocks.get("mse_block"),
        l1_block=blocks.get("l1_block"),
        # The run length the L1 claim names: that of the problem its runs come from.
        claims_steps=steps.get("l1_block"),
        thresholds=dict(thresholds or {}),
        baseline=experiment.baseline if experiment.baseline in experiment.optimizers else None,
        classes={name: optimizer.cls for name, optimizer in experiment.optimizers.items()},
        ranking_metric=experiment.ranking_metric,
        scaling={
            problem.name: {
                "family": problem.family,
                "size": problem.size,
                "budget": problem.steps,
                "parameters": problem.parameter_count,
                "tuned": problem.tuned,
            }
            for problem in experiment.problems.values()
            if problem.family is not None
        },
    )


def power_families(experiment) -> list:
    """The families of tests the analysis of ``experiment`` makes, with their
    power at its evaluation seeds (``optbench.reporting.power``)."""
    from optbench.reporting import power

    blocks = {
        (problem.name, loss): len(experiment.optimizers)
        for problem in experiment.problems.values()
        for loss in problem.losses
    }
    tuned = sum(len(optimizer.variants) > 1 for optimizer in experiment.optimizers.values())
    has_baseline = experiment.baseline in experiment.optimizers
    return power.families_for(
        blocks,
        len(experiment.seeds),
        baseline=has_baseline,
        swept=dict.fromkeys(blocks, tuned) if experiment.tuning_seeds else None,
    )


def power_lines(experiment) -> list[str]:
    """The plan-time summary's lines on power (one per kind of family and size)."""
    from optbench.reporting import power

    return power.plan_lines(power_families(experiment))


# ---------------------------------------------------------------------------
# Config checks of the analysis keys (called by settings.validate).

DEFAULT_THRESHOLD = {"relative": 1.0e-3}
OLD_BANDS = {
    "ci95": "the arithmetic mean's t interval, which goes negative",
    "std": "mean +- one standard deviation, which goes negative",
}


def band_problems(config: dict) -> list[str]:
    """The band values of earlier versions, refused with the new ones."""
    band = config.get("band")
    if isinstance(band, str) and band in OLD_BANDS:
        return [
            f"config key band: {band!r} ({OLD_BANDS[band]}) is no longer drawn: curves and "
            "bands are log-space statistics now. Fix: use geomean_ci95 (geometric mean, 95 % "
            "t-interval on log10; the default), median_ci95 (median, order-statistic 95 % "
            "interval) or none."
        ]
    return []


# A problem's default held-out target is a fact its file declares
# (HELDOUT_TARGET, optbench.problems.Facts), handed to heldout_target_text.


# The built-in problems that evaluate a held-out split (their instance has
# ``heldout``); tests/test_ranking_metric.py builds each built-in to keep this true.
BUILTIN_HELDOUT = frozenset(
    {"digits_mlp", "digits_cnn", "breast_cancer_mlp", "text_transformer", "noisy_quadratic"}
)
HELDOUT_METRICS = ("heldout_loss", "heldout_accuracy")


def ranking_metric_problems(metric, problems: dict[str, tuple[str, bool]]) -> list[str]:
    """A held-out ranking metric needs held-out data: refused for a built-in
    problem without it (a user problem's is checked on its runs).
    ``problems``: entry name -> (registered problem, built in?)."""
    if metric not in HELDOUT_METRICS:
        return []
    lacking = [
        f"{name} ({registered})" if name != registered else name
        for name, (registered, builtin) in problems.items()
        if builtin and registered not in BUILTIN_HELDOUT
    ]
    if not lacking:
        return []
    return [
        f"config key ranking_metric: {metric} needs held-out data, which the problem(s) "
        f"{', '.join(lacking)} do not have. Fix: use auto (held-out loss where there is "
        "held-out data, else the final training loss) or final_loss, or keep only problems "
        f"with a held-out split ({', '.join(sorted(BUILTIN_HELDOUT))})."
    ]


def heldout_target_problems(targets, problem_losses) -> list[str]:
    """``heldout_targets`` keys must be a ``problem/loss`` of the grid."""
    if not isinstance(targets, dict):
        return []  # the schema says what is wrong
    known = None if problem_losses is None else {f"{p}/{loss}" for p, loss in problem_losses}
    return [
        f"config key heldout_targets.{key}: not a problem/loss of the grid. "
        f"Fix: use one of {', '.join(sorted(known)) or '(none)'}."
        for key in targets
        if known is not None and key not in known
    ]


def heldout_target_text(
    targets: dict | None, problem: str, declared: dict | None, loss: str
) -> str:
    """The cell job's --heldout-target for one (problem entry, loss): the config's,
    else ``declared``, the target the problem's file declares (HELDOUT_TARGET;
    None: none), else "" (none)."""
    entry = (targets or {}).get(f"{problem}/{loss}") or declared
    if not entry:
        return ""
    ((metric, value),) = entry.items()
    return f"{metric}:{float(value)!r}"


def baseline_problems(baseline, optimizers) -> list[str]:
    """``baseline`` must name a configured optimizer (None: no baseline)."""
    if baseline is None or not isinstance(optimizers, dict) or baseline in optimizers:
        return []
    return [
        f"config key baseline: {baseline!r} is not a configured optimizer. "
        f"Fix: use one of {', '.join(optimizers)}, or null for no baseline."
    ]


def threshold_problems(thresholds, problem_losses) -> list[str]:
    """``thresholds`` keys must be ``default`` or a ``problem/loss`` of the grid.

    ``problem_losses``: the (problem, loss-name) pairs configured (None: unknown,
    keys are not checked)."""
    if not isinstance(thresholds, dict):
        return []  # the schema says what is wrong
    found = []
    known = None if problem_losses is None else {f"{p}/{loss}" for p, loss in problem_losses}
    for key in thresholds:
        if key != "default" and known is not None and key not in known:
            found.append(
                f"config key thresholds.{key}: not default and not a problem/loss of the grid. "
                f"Fix: use default or one of {', '.join(sorted(known)) or '(none)'}."
            )
    return found


def threshold_text(thresholds: dict | None, problem: str, loss: str) -> str:
    """The cell job's --threshold value for one (problem, loss)."""
    thresholds = thresholds or {}
    entry = thresholds.get(f"{problem}/{loss}") or thresholds.get("default") or DEFAULT_THRESHOLD
    ((kind, value),) = entry.items()
    return f"{kind}:{float(value)!r}"


def candidate_count_problems(optimizers: dict) -> list[str]:
    """Swept optimizers must get the same number of candidates (equal tuning effort).

    ``optimizers``: name -> number of swept variants (0: no sweep, it runs its
    base setting only and is reported as untuned)."""
    swept = {name: count for name, count in optimizers.items() if count}
    if len(set(swept.values())) > 1:
        listed = ", ".join(f"{name} {count}" for name, count in swept.items())
        return [
            f"config key optimizers: the sweeps give different numbers of candidates ({listed}), "
            "so one optimizer would get more tuning effort than another. Fix: sweep the same "
            "number of values for every swept optimizer (e.g. the same lr list)."
        ]
    return []
