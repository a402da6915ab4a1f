"""Per-cell aggregation: the runs of one grid cell -> its per-step statistics and per-run finals.

A cell is one point of the grid without the seed: a (problem, loss,
optimizer, variant). Its identity is read from each run file's path, matched against
the pipeline's run-path pattern, and never from the position of a file in a
list: a run that belongs to another cell is refused, and the order in which
the runs are given does not change the result (runs are sorted by seed).

Divergence rule: a run counts as diverged from the first step at which its
loss is not finite (inf or NaN) onwards, because its weights are no longer
meaningful after that. At each step the statistics use the runs that have not
diverged yet; ``n`` counts all runs, ``n_finite`` the ones used and
``n_diverged`` the rest. A step where no run is left has NaN statistics.

The cell job also reads each run's sidecar (``seed{N}.json`` beside the TSV)
and computes the run's metrics once (``optbench.reporting.runmetrics``: final and best
loss, area under the log10-loss curve, steps and evaluations to the
threshold, first non-finite step; plus the oscillation of ``claims`` and the
held-out loss/accuracy of the sidecar), so nothing after it reads a run again.
Per step it adds the log-space statistics of ``optbench.reporting.statistics`` (geometric
mean, median and its order-statistic interval) beside the arithmetic ones.

numpy only (no pandas, no scipy): one job per cell runs on the submitting
host, so its start-up is kept short. For the same reason the t quantiles of
the two t intervals (arithmetic mean, geometric mean) are left to the combine
step (optbench.reporting.summary), which imports scipy once for all cells.
"""

from __future__ import annotations

import functools
import json
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np

from optbench import runfiles
from optbench.reporting import downsample, logscale, resolution, runmetrics

# Per-step statistics of a cell summary, in the column order of the step
# summary table, where the combine step adds ci95_low and ci95_high after sem
# and geo_low and geo_high after geo_mean. ``median`` and its interval are
# taken in log space (logscale.log_parts).
CELL_STATISTICS = [
    "n",
    "n_finite",
    "n_diverged",
    "n_floored",
    "mean",
    "var",
    "std",
    "sem",
    "log10_mean",
    "log10_sd",
    "geo_mean",
    "median",
    "median_low",
    "median_high",
    "median_coverage",
    "min",
    "max",
]
INTEGER_STATISTICS = {"n", "n_finite", "n_diverged", "n_floored"}
SEED_FIELD = "seed"
# Per run, after the seed: runmetrics.METRIC_COLUMNS, then these.
EXTRA_RUN_COLUMNS = [
    "oscillation",
    "heldout_loss",
    "heldout_accuracy",
    "heldout_target_loss",
    "heldout_target_accuracy",
    "steps_to_heldout_target",
    "seconds_per_step",
    "time_to_threshold",
    "time_to_heldout_target",
]
RUN_COLUMNS = [SEED_FIELD, *runmetrics.METRIC_COLUMNS, *EXTRA_RUN_COLUMNS]
# Columns that hold floats (the others hold integers or, for a step, None).
FLOAT_COLUMNS = {
    "steps": [name for name in CELL_STATISTICS if name not in INTEGER_STATISTICS],
    "runs": RUN_COLUMNS[1:],
}


@dataclass(frozen=True)
class Threshold:
    """The level a run must reach: ``value`` x its initial loss (relative) or ``value``."""

    value: float = 1e-3
    relative: bool = True

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """``relative:0.001`` or ``absolute:1e-6`` (the command-line form)."""
        kind, _, value = text.partition(":")
        if kind not in ("relative", "absolute"):
            raise CellError(f"threshold {text!r}: expected relative:VALUE or absolute:VALUE")
        return cls(float(value), kind == "relative")

    def __str__(self) -> str:
        return f"{'relative' if self.relative else 'absolute'}:{self.value!r}"


@dataclass(frozen=True)
class HeldoutTarget:
    """A held-out level a run must reach: its held-out ``loss`` at most ``value``, or
    its held-out ``accuracy`` at least ``value``; ``metric`` None: no target."""

    metric: str | None = None
    value: float = math.nan

    @classmethod
    def parse(cls, text: str) -> HeldoutTarget:
        """``loss:2.5``, ``accuracy:0.9`` or "" (none): the command-line form."""
        if not text:
            return cls()
        metric, _, value = text.partition(":")
        if metric not in ("loss", "accuracy"):
            raise CellError(f"held-out target {text!r}: expected loss:VALUE or accuracy:VALUE")
        return cls(metric, float(value))

    def __str__(self) -> str:
        return "" if self.metric is None else f"{self.metric}:{self.value!r}"

    def reached(self, point: dict) -> bool:
        value = point.get(f"heldout_{self.metric}")
        if value is None or not math.isfinite(value):
            return False
        return value <= self.value if self.metric == "loss" else value >= self.value

    def steps_to(self, curve: list[dict], final: dict | None, steps: int) -> float:
        """The first evaluated step count at which the run meets the target: from its
        held-out curve (eval_every), else its final held-out values (at ``steps``);
        NaN when it never does (censored) or there is no target."""
        if self.metric is None:
            return math.nan
        points = curve or ([{"step": steps, **final}] if final else [])
        return next((float(p["step"]) for p in points if self.reached(p)), math.nan)


class CellError(ValueError):
    """Runs that do not make one cell; the message names the file and the fix."""


@functools.cache
def path_regex(pattern: str) -> re.Pattern:
    """A regex for a path pattern such as ``results/runs/{loss}/{optimizer}/seed{seed}.tsv``.

    Each ``{name}`` matches one path component's worth of characters (no ``/``).
    """
    parts = re.split(r"\{(\w+)\}", pattern)
    regex = ""
    for index, part in enumerate(parts):
        regex += re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)"
    return re.compile(regex)


def parse_run_path(pattern: str, path: str) -> dict[str, str]:
    """The fields of ``path`` named in ``pattern`` (e.g. loss, optimizer, seed)."""
    match = path_regex(pattern).fullmatch(str(path))
    if match is None:
        raise CellError(
            f"{path}: not a run file of the pattern {pattern!r}. "
            "Pass only run files that the pipeline wrote."
        )
    return match.groupdict()


# A sidecar without a loss entry: the loss's class is not known.
UNKNOWN_LOSS = "?"


@dataclass(frozen=True)
class CellRuns:
    """The runs of one cell (settings.Cell names a cell; this holds its data)."""

    identity: dict[str, str]  # field -> value, in the order of the pattern (e.g. loss, optimizer)
    seeds: list[int]  # ascending
    losses: np.ndarray  # runs x steps, rows in the order of seeds
    evaluations: np.ndarray | None = None  # runs x steps loss evaluations (None: one per step)
    heldout: list[dict | None] | None = None  # per run, the sidecar's heldout (None: none)
    # The loss's class (None: an objective), which sets the resolution floor;
    # UNKNOWN_LOSS (runs without sidecars): no floor but float64's smallest.
    loss_class: str | None = UNKNOWN_LOSS
    curves: list[list[dict]] | None = None  # per run, the sidecar's heldout_curve
    # Per run, its (problem, loss, optimizer)'s seconds per step (sidecar step_timing).
    step_seconds: list[float | None] | None = None
    # The loss's keyword arguments: some change its order, so its floor (resolution.power).
    loss_kwargs: dict | None = None

    def resolution_floors(self) -> np.ndarray | None:
        """Each run's resolution floor (optbench.reporting.resolution), None when unknown."""
        if self.loss_class == UNKNOWN_LOSS:
            return None
        return resolution.floors(self.losses[:, 0], self.loss_class, kwargs=self.loss_kwargs)


def sidecar_path(run_path) -> str:
    """The run's JSON sidecar: the TSV's path with ``.json`` for ``.tsv``."""
    text = str(run_path)
    return (text[:-4] if text.endswith(".tsv") else text) + ".json"


def read_sidecar(run_path) -> dict | None:
    """The run's sidecar (None when there is none)."""
    try:
        with open(sidecar_path(run_path), encoding="utf-8") as handle:
            metadata = json.load(handle)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise CellError(
            f"{sidecar_path(run_path)}: not valid JSON ({error}). Delete the run's TSV and "
            "sidecar so that the pipeline trains it again."
        ) from None
    return metadata if isinstance(metadata, dict) else None


def read_heldout(run_path) -> dict | None:
    """The sidecar's ``heldout`` entry (None when it has none, or there is no sidecar)."""
    heldout = (read_sidecar(run_path) or {}).get("heldout")
    return heldout if isinstance(heldout, dict) else None


def loss_class_of(metadata: dict | None) -> str | None:
    """The class of the run's loss; None for an objective, UNKNOWN_LOSS without a sidecar."""
    if metadata is None or "loss" not in metadata:
        return UNKNOWN_LOSS
    loss = metadata["loss"]
    return None if loss is None else str(loss.get("class", UNKNOWN_LOSS))


def loss_kwargs_of(metadata: dict | None) -> dict:
    """The keyword arguments of the run's loss ({} for an objective or without a sidecar)."""
    loss = (metadata or {}).get("loss")
    kwargs = loss.get("kwargs") if isinstance(loss, dict) else None
    return kwargs if isinstance(kwargs, dict) else {}


def read_cell(paths, pattern: str, identity: dict[str, str], steps: int) -> CellRuns:
    """The runs at ``paths``, checked to belong to the cell ``identity``, sorted by seed."""
    fields_in_order = list(path_regex(pattern).groupindex)
    if set(fields_in_order) != set(identity) | {SEED_FIELD}:
        raise CellError(
            f"the run-path pattern {pattern!r} names {fields_in_order}, but the cell "
            f"is given as {list(identity)} plus {SEED_FIELD!r}. Give one value per field."
        )
    identity = {key: identity[key] for key in fields_in_order if key != SEED_FIELD}
    by_seed: dict[int, str] = {}
    for path in paths:
        fields = parse_run_path(pattern, path)
        other = {key: fields[key] for key in identity if fields[key] != identity[key]}
        if other:
            raise CellError(
                f"{path}: a run of {other}, not of the cell {identity}. "
                "Pass only the runs of this cell."
            )
        seed = int(fields[SEED_FIELD])
        if seed in by_seed:
            raise CellError(f"{path}: seed {seed} is given twice (also {by_seed[seed]}).")
        by_seed[seed] = str(path)
    if not by_seed:
        raise CellError(f"no run files given for the cell {identity}.")
    seeds = sorted(by_seed)
    columns = [runfiles.read_run_columns(by_seed[seed], steps) for seed in seeds]
    sidecars = [read_sidecar(by_seed[seed]) for seed in seeds]
    heldout = [(sidecar or {}).get("heldout") for sidecar in sidecars]
    curves = [(sidecar or {}).get("heldout_curve") or [] for sidecar in sidecars]
    step_seconds = [
        ((sidecar or {}).get("step_timing") or {}).get("seconds_per_step") for sidecar in sidecars
    ]
    loss_classes = {loss_class_of(sidecar) for sidecar in sidecars}
    # Compared as JSON text: kwargs are mappings, which a set cannot hold.
    loss_kwargs = {json.dumps(loss_kwargs_of(sidecar), sort_keys=True) for sidecar in sidecars}
    if len(loss_classes) > 1 or len(loss_kwargs) > 1:
        named = sorted(map(str, loss_classes)) if len(loss_classes) > 1 else sorted(loss_kwargs)
        raise CellError(
            f"the runs of the cell {identity} name different losses in their sidecars "
            f"({', '.join(named)}). Delete the runs of this cell "
            "so that the pipeline trains them again."
        )
    return CellRuns(
        identity,
        seeds,
        np.array([losses for losses, _ in columns], dtype=np.float64),
        np.array([counts for _, counts in columns], dtype=np.float64),
        [h if isinstance(h, dict) else None for h in heldout],
        loss_classes.pop(),
        [c if isinstance(c, list) else [] for c in curves],
        [s if isinstance(s, int | float) else None for s in step_seconds],
        json.loads(loss_kwargs.pop()),
    )


def surviving(losses: np.ndarray) -> np.ndarray:
    """The losses with every value from a run's first non-finite step on replaced by NaN."""
    diverged = np.logical_or.accumulate(~np.isfinite(losses), axis=1)
    return np.where(diverged, np.nan, losses)


def describe(losses: np.ndarray) -> dict[str, np.ndarray]:
    """Column statistics of a runs x steps array (NaN marks a diverged run).

    ``sem`` is the sample standard deviation over the square root of
    ``n_finite`` (NaN below two runs); the log-space ones are those of
    ``logscale.log_parts``."""
    used = np.isfinite(losses)
    n_finite = used.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN or single-run steps
        low, high = np.nanmin(losses, axis=0), np.nanmax(losses, axis=0)
    parts = logscale.log_parts(losses, losses.shape[0])
    std = np.sqrt(parts["var"])
    sem = std / np.sqrt(np.maximum(n_finite, 1))
    return parts | {"std": std, "sem": sem, "min": low, "max": high}


def first_nonfinite_steps(losses: np.ndarray) -> list[int | None]:
    """Per run, the first step whose loss is inf or NaN (None: every loss is finite)."""
    bad = ~np.isfinite(losses)
    first = np.argmax(bad, axis=1)
    return [int(step) if bad[run, step] else None for run, step in enumerate(first)]


def _json_number(value):
    """Integers stay integers; floats are exact (repr) and non-finite ones become strings,
    so the file is strict JSON and float(text) reads every value back."""
    if value is None or isinstance(value, int | np.integer):
        return None if value is None else int(value)
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def run_table(
    cell: CellRuns, threshold: Threshold = Threshold(), target: HeldoutTarget = HeldoutTarget()
) -> dict[str, list]:
    """Per run (``RUN_COLUMNS``): seed, runmetrics' metrics, oscillation, held-out
    values and the steps to the held-out target."""
    metrics = runmetrics.metric_arrays(
        cell.losses,
        cell.evaluations,
        threshold=threshold.value,
        relative=threshold.relative,
        resolution=cell.resolution_floors(),
    )
    heldout = cell.heldout or [None] * len(cell.seeds)
    curves = cell.curves or [[] for _ in cell.seeds]
    steps = cell.losses.shape[1]
    runs = len(cell.seeds)
    extra = {
        "oscillation": runmetrics.oscillation(cell.losses),
        "heldout_loss": [(h or {}).get("heldout_loss") for h in heldout],
        "heldout_accuracy": [(h or {}).get("heldout_accuracy") for h in heldout],
        "heldout_target_loss": [target.value if target.metric == "loss" else None] * runs,
        "heldout_target_accuracy": [target.value if target.metric == "accuracy" else None] * runs,
        "steps_to_heldout_target": [
            target.steps_to(curve, final, steps)
            for curve, final in zip(curves, heldout, strict=True)
        ],
    }
    seconds = [math.nan if s is None else s for s in (cell.step_seconds or [None] * runs)]
    # Time to a target: its steps at the step time measured alone (engines/timing.py).
    extra["seconds_per_step"] = seconds
    extra["time_to_threshold"] = [
        float(steps) * s for steps, s in zip(metrics["steps_to_threshold"], seconds, strict=True)
    ]
    extra["time_to_heldout_target"] = [
        steps * s for steps, s in zip(extra["steps_to_heldout_target"], seconds, strict=True)
    ]
    columns = {SEED_FIELD: list(cell.seeds)} | metrics | extra
    return {
        name: [
            _json_number(math.nan if value is None else value) if name != SEED_FIELD else value
            for value in columns[name]
        ]
        for name in RUN_COLUMNS
    }


def cell_summary(
    cell: CellRuns, threshold: Threshold = Threshold(), target: HeldoutTarget = HeldoutTarget()
) -> dict:
    """The cell's per-step statistics and per-run metrics, ready to be written as JSON."""
    logscale.check_non_negative(cell.losses)
    statistics = describe(surviving(cell.losses))
    steps = cell.losses.shape[1]
    summary = {
        "cell": cell.identity,
        "threshold": str(threshold),
        "steps": {"step": list(range(steps))}
        | {name: [_json_number(v) for v in statistics[name]] for name in CELL_STATISTICS},
        "runs": run_table(cell, threshold, target),
    }
    curves = curve_points(cell)
    if curves["step"]:  # only where runs recorded held-out curves (eval_every)
        summary["curves"] = curves
    summary["lines"] = seed_lines(cell)
    return summary


def seed_lines(cell: CellRuns) -> dict[str, list]:
    """Each run's loss at the steps the explorer keeps (optbench.reporting.downsample),
    as columns (seed, step, loss): the explorer's individual seed lines, of the
    cell's lowest ``downsample.MAX_SEED_LINES`` seeds."""
    steps = downsample.kept_steps(cell.losses.shape[1])
    columns: dict[str, list] = {"seed": [], "step": [], "loss": []}
    kept = downsample.MAX_SEED_LINES  # seeds are ascending: the lowest ones
    for seed, losses in zip(cell.seeds[:kept], cell.losses[:kept], strict=True):
        columns["seed"] += [seed] * len(steps)
        columns["step"] += steps
        columns["loss"] += [downsample.rounded(losses[step]) for step in steps]
    return columns


def curve_points(cell: CellRuns) -> dict[str, list]:
    """The runs' held-out curves as columns (seed, step, heldout_loss): what the
    rank flips read at intermediate steps (optbench.reporting.scaling)."""
    columns: dict[str, list] = {"seed": [], "step": [], "heldout_loss": []}
    for seed, curve in zip(cell.seeds, cell.curves or [[] for _ in cell.seeds], strict=True):
        for point in curve:
            if isinstance(point, dict) and "step" in point:
                columns["seed"].append(seed)
                columns["step"].append(int(point["step"]))
                loss = point.get("heldout_loss")
                columns["heldout_loss"].append(_json_number(math.nan if loss is None else loss))
    return columns


def format_cell_summary(summary: dict) -> str:
    """Strict JSON with one line per column, so that a person can read it too."""

    def block(columns: dict) -> str:
        lines = [
            f"    {json.dumps(name)}: {json.dumps(values, allow_nan=False)}"
            for name, values in columns.items()
        ]
        return "{\n" + ",\n".join(lines) + "\n  }"

    return (
        f'{{\n  "cell": {json.dumps(summary["cell"])},\n'
        f'  "threshold": {json.dumps(summary.get("threshold", str(Threshold())))},\n'
        f'  "steps": {block(summary["steps"])},\n'
        f'  "runs": {block(summary["runs"])}'
        + (f',\n  "curves": {block(summary["curves"])}' if "curves" in summary else "")
        + (f',\n  "lines": {block(summary["lines"])}' if "lines" in summary else "")
        + "\n}\n"
    )


def write_cell_summary(
    cell: CellRuns,
    path,
    threshold: Threshold = Threshold(),
    target: HeldoutTarget = HeldoutTarget(),
) -> None:
    runfiles.write_text_atomic(path, format_cell_summary(cell_summary(cell, threshold, target)))


def read_cell_summary(path) -> dict:
    """A cell summary with its float columns as floats (NaN and inf restored)."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    for table, names in FLOAT_COLUMNS.items():
        for name in names:
            data[table][name] = [float(value) for value in data[table][name]]
    if "curves" in data:
        data["curves"]["heldout_loss"] = [float(v) for v in data["curves"]["heldout_loss"]]
    if "lines" in data:
        data["lines"]["loss"] = [float(v) for v in data["lines"]["loss"]]
    return data
