"""The study's answer, stated: one headline per (problem, loss), from the tables.

The report's landing page (workflow/report/workflow.rst) quotes it, and the
report's first category holds it as a page of its own. Per (problem, loss)
it says who won (the optimizers that no paired test beats, and the point
leader by median final log10 loss), by how much (the leader's paired median
difference against the runner-up, in decades, with its interval), how sure
(the Holm-adjusted p, and the power note where the analysis gives one), and
the caveats: a tuned setting at the edge of its range, diverged runs.

Every column is read by name and only where it exists: tables that gain
columns (power, interval methods, a point ranking) are quoted once they are
there, and an older table still gives the rest. To quote a new column, add it
to the lookups below (``POWER_COLUMNS``, ``INTERVAL_METHOD_COLUMNS``).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd

from optbench.reporting import scaling

# The significance level of the paired tests (optbench.reporting.comparison).
ALPHA = 0.05

# Power: the power table (outputs name "power") or leaderboard/pairwise columns
# that say, per (problem, loss), what the seeds could show. Each entry: a
# column name the analysis may write -> how the note quotes it. The first
# name found in the block's rows is used. HOOK: extend when the power table's
# columns change; nothing else needs to.
POWER_COLUMNS = {
    "min_p": ("min_p_adjusted", "smallest_reachable_p", "min_adjusted_p"),
    "possible": ("can_be_significant", "significance_possible"),
    "seeds_needed": ("n_needed", "seeds_needed"),
}
# The power table's rows per (problem, loss) are per family of tests; the
# answer quotes the family behind the leaderboard's ranks.
POWER_FAMILY = "pairwise"
# The method of the paired interval, where the pairwise table states it.
INTERVAL_METHOD_COLUMNS = ("ci_method", "interval_method")
# The leaderboard's point ranking (by the median), where it has one.
POINT_RANK_COLUMNS = ("point_rank", "rank_by_median")


@dataclass
class Headline:
    """The answer for one (problem, loss), as sentences."""

    problem: str
    loss: str
    winners: list[str]
    verdict: str
    margin: str = ""
    sureness: str = ""
    warnings: list[str] = field(default_factory=list)
    baseline: list[str] = field(default_factory=list)
    tuning: str = ""

    @property
    def title(self) -> str:
        return f"{self.problem}, {self.loss}"


def _first_column(table: pd.DataFrame | None, names) -> str | None:
    if table is None:
        return None
    return next((name for name in names if name in table.columns), None)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _text(value) -> str:
    """A cell as text; NaN and empty cells as ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _decades(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"  # not "-0": an interval's end can be a negative zero
    return f"{value:.2g}" if abs(value) < 0.01 else f"{value:.2f}"


def _count(text: str) -> str:
    """A count read from a table as text: "8", not "8.0" (a column with blanks
    is read as floats)."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _p(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "n/a"


def _in_block(table: pd.DataFrame | None, problem: str, loss: str) -> pd.DataFrame:
    if table is None or table.empty or "problem" not in table.columns:
        return pd.DataFrame()
    return table[(table["problem"].astype(str) == problem) & (table["loss"].astype(str) == loss)]


def _pair(pairwise: pd.DataFrame, first: str, second: str):
    """The pairwise row of (first, second) oriented so that differences read
    first - second: (median_diff, ci_low, ci_high, p_holm, test, method, share of
    seeds ``first`` wins, ties counting half)."""
    for a, b, sign in ((first, second, 1.0), (second, first, -1.0)):
        rows = pairwise[(pairwise["a"] == a) & (pairwise["b"] == b)] if len(pairwise) else pairwise
        if len(rows):
            row = rows.iloc[0]
            low, high = sign * _number(row.get("ci_low")), sign * _number(row.get("ci_high"))
            method_column = _first_column(pairwise, INTERVAL_METHOD_COLUMNS)
            return (
                sign * _number(row.get("median_diff")),
                min(low, high),
                max(low, high),
                _number(row.get("p_holm")),
                _text(row.get("test")),
                _text(row.get(method_column)) if method_column else "",
                _number(row.get("p_a_better")) if sign > 0 else 1 - _number(row.get("p_a_better")),
            )
    return None


def _power_note(block_tables: list[pd.DataFrame], n_pairs: int | None) -> str:
    """The power note from whichever table carries the power columns (HOOK:
    the stats analysis adds them; until then, nothing is claimed here)."""
    for table in block_tables:
        if table is None or table.empty:
            continue
        found = {key: _first_column(table, names) for key, names in POWER_COLUMNS.items()}
        if not any(found.values()):
            continue
        row = table.iloc[0]
        parts = []
        if found["min_p"]:
            floor = _p(_number(row[found["min_p"]]))
            parts.append(f"the smallest adjusted p these seeds can give is {floor}")
        possible = _text(row[found["possible"]]).lower() if found["possible"] else ""
        if possible in ("false", "0", "no"):
            needed = _count(_text(row[found["seeds_needed"]])) if found["seeds_needed"] else ""
            parts.append(
                "so no difference can be significant at this number of seeds"
                + (f"; {needed} seeds would be needed" if needed else "")
            )
        if parts:
            seeds = f" with {n_pairs} paired seeds" if n_pairs else ""
            return "Power" + seeds + ": " + ", ".join(parts)  # the page adds the full stop
    return ""


def _diverged(board: pd.DataFrame, runs: pd.DataFrame | None, problem: str, loss: str) -> list[str]:
    """One warning per optimizer with diverged evaluation runs: the count and the
    first non-finite step (from the runs table, where it has the column)."""
    lines = []
    if "n_diverged" not in board.columns:
        return lines
    block_runs = _in_block(runs, problem, loss)
    if len(block_runs) and "role" in block_runs.columns:
        block_runs = block_runs[block_runs["role"] == "evaluation"]
    for row in board.itertuples(index=False):
        diverged = int(_number(getattr(row, "n_diverged", 0)) or 0)
        if diverged <= 0:
            continue
        n = int(_number(getattr(row, "n", diverged)))
        first = ""
        if len(block_runs) and "first_nonfinite_step" in block_runs.columns:
            mine = block_runs[
                (block_runs["optimizer"] == row.optimizer)
                & (block_runs.get("variant", row.variant) == row.variant)
            ]
            steps = pd.to_numeric(mine["first_nonfinite_step"], errors="coerce").dropna()
            if len(steps):
                first = f", first non-finite loss at step {int(steps.min())}"
        lines.append(
            f"{row.optimizer} diverged on {diverged} of {n} seeds{first}; a diverged run "
            "counts as the worst result"
        )
    return lines


def _range_edges(selection: pd.DataFrame | None, problem: str, loss: str) -> list[str]:
    rows = _in_block(selection, problem, loss)
    if rows.empty or "range_edge" not in rows.columns:
        return []
    return [
        f"{row.optimizer}'s tuned setting {_text(row.range_edge)} is at the edge of the "
        "range tried: the best setting may lie outside it; widen the range"
        for row in rows.itertuples(index=False)
        if _text(row.range_edge)
    ]


def _tuning_protocol(selection: pd.DataFrame | None, problem: str, loss: str) -> tuple[str, list]:
    """How the compared settings were chosen here, and a warning where the
    optimizers had unequal tuning budgets (trials or tuning seeds)."""
    rows = _in_block(selection, problem, loss)
    if rows.empty or "n_candidates" not in rows.columns:
        return "", []
    trials = pd.to_numeric(rows["n_candidates"], errors="coerce").fillna(0).astype(int)
    seeds = pd.to_numeric(rows.get("n_tuning_seeds", 0), errors="coerce").fillna(0).astype(int)
    tuned = rows[trials > 1]
    if tuned.empty:
        return "", []
    effort = {
        name: (int(trials[i]), int(seeds[i])) for i, name in tuned["optimizer"].astype(str).items()
    }
    where = set()
    if "tuned_at" in rows.columns:
        where = {_text(v) for v in tuned["tuned_at"] if _text(v) and _text(v) != problem}
    place = f"at {', '.join(sorted(where))}, transferred here" if where else f"at {problem}"
    if len(set(effort.values())) == 1:
        n_trials, n_seeds = next(iter(effort.values()))
        return (
            f"Tuning: {', '.join(effort)} each chose from {n_trials} trials on {n_seeds} "
            f"tuning seeds, {place}",
            [],
        )
    budgets = "; ".join(f"{name} {t} trials on {s} seeds" for name, (t, s) in effort.items())
    return (
        f"Tuning: settings chosen {place}",
        [f"unequal tuning budgets ({budgets}): a fair comparison gives each optimizer the same"],
    )


# What a speed-up is measured to (baseline.tsv's measure column).
TARGETS = {
    "steps_to_heldout_target": "steps to the held-out target",
    "steps_to_threshold": "steps to the loss threshold",
}
# What the ranking metric (the leaderboard's ranking_metric column) is called in words.
METRIC_WORDS = {
    "final_loss": "final loss",
    "heldout_loss": "held-out loss",
    "heldout_accuracy": "held-out error rate",
    "steps_to_target": "steps to target",
    "time_to_target": "time to target",
}


def _metric_words(board: pd.DataFrame) -> str:
    """The ranking metric of a leaderboard block, in words (final loss without the column)."""
    if "ranking_metric" not in board.columns or board.empty:
        return "final loss"
    name = _text(board["ranking_metric"].iloc[0])
    return METRIC_WORDS.get(name, name.replace("_", " ") or "final loss")


def _baseline_lines(table: pd.DataFrame | None, problem: str, loss: str) -> list[str]:
    rows = _in_block(table, problem, loss)
    lines = []
    for row in rows.itertuples(index=False):
        speedup = _number(getattr(row, "speedup", math.nan))
        target = TARGETS.get(_text(getattr(row, "measure", "")), "steps to target")
        if speedup == 0 or speedup == math.inf:
            # A ratio of 0 or inf is no factor: say who reached the target and who did not.
            slower, faster = (
                (row.optimizer, row.baseline) if speedup == 0 else (row.baseline, row.optimizer)
            )
            lines.append(
                f"{row.optimizer} vs {row.baseline} in {target}: on the median paired seed "
                f"{faster} reached it and {slower} never did"
            )
            continue
        if not math.isfinite(speedup):
            continue
        low, high = (
            _number(getattr(row, "speedup_low", math.nan)),
            _number(getattr(row, "speedup_high", math.nan)),
        )
        interval = f" [{low:.3g}, {high:.3g}]" if math.isfinite(low) and math.isfinite(high) else ""
        method = _text(getattr(row, "speedup_ci_method", getattr(row, "speedup_method", "")))
        lines.append(
            f"{row.optimizer}: {speedup:.3g}x the speed of {row.baseline} in {target}"
            f"{interval}{f' ({method})' if method else ''}"
        )
    return lines


def headlines(tables: dict[str, pd.DataFrame], alpha: float = ALPHA) -> list[Headline]:
    """One headline per (problem, loss) of the leaderboard, in its order."""
    board_all = tables["leaderboard"]
    pairwise_all = tables.get("pairwise")
    found: list[Headline] = []
    blocks = list(
        dict.fromkeys(
            zip(board_all["problem"].astype(str), board_all["loss"].astype(str), strict=True)
        )
    )
    for problem, loss in blocks:
        board = _in_block(board_all, problem, loss)
        pairwise = _in_block(pairwise_all, problem, loss)
        medians = pd.to_numeric(board["median_log10"], errors="coerce")
        order = board.assign(_median=medians.fillna(math.inf)).sort_values("_median", kind="stable")
        point_column = _first_column(board, POINT_RANK_COLUMNS)
        if point_column:
            order = order.sort_values(point_column, kind="stable")
        names = list(order["optimizer"])
        metric = _metric_words(board)
        ranks = pd.to_numeric(board["rank"], errors="coerce")
        top = list(board.loc[ranks == ranks.min(), "optimizer"])
        leader = names[0]
        n_pairs = int(_number(pairwise["n_pairs"].max())) if "n_pairs" in pairwise else None
        if len(names) == 1:
            verdict = f"only {leader} ran here: nothing to compare"
            found.append(Headline(problem, loss, [leader], verdict))
            continue
        if len(top) == 1:
            verdict = f"{top[0]} wins: the paired tests put it ahead of every other optimizer"
        else:
            verdict = (
                f"no paired test separates {', '.join(top)} (they share rank 1); "
                f"{leader} has the lowest median {metric}"
            )
        runner_up = names[1]
        margin = sureness = ""
        pair = _pair(pairwise, leader, runner_up) if len(pairwise) else None
        if pair is not None:
            diff, low, high, p_holm, test, method, share_won = pair
            interval = (
                f" [{_decades(low)}, {_decades(high)}]"
                if math.isfinite(low) or math.isinf(low)
                else ""
            )
            if interval:
                interval += f" (95 % interval, {method})" if method else " (95 % interval)"
            elif method:
                # the analysis gives no interval here and says why (e.g. n too small)
                interval = f" (no 95 % interval: {method})"
            margin = (
                f"{leader} vs {runner_up}: median paired difference ({leader} - {runner_up}) "
                f"{_decades(diff)} decades of {metric}{interval}"
            )
            if math.isfinite(share_won) and n_pairs:
                won = share_won * n_pairs
                # ties count half, so a count can end in .5, which the text explains
                margin += f"; {leader} is better on {won:g} of {n_pairs} paired seeds"
                if not float(won).is_integer():
                    margin += " (a tie counts half)"
            verdict_p = "significant" if p_holm < alpha else "not significant"
            sureness = (
                f"Holm-adjusted p = {_p(p_holm)} ({test}, n = {n_pairs}): {verdict_p} at {alpha:g}"
            )
        power_rows = _in_block(tables.get("power"), problem, loss)
        if "family" in power_rows.columns:
            power_rows = power_rows[power_rows["family"] == POWER_FAMILY]
        power = _power_note([power_rows, board, pairwise], n_pairs)
        if power:
            sureness = f"{sureness}. {power}" if sureness else power
        elif pair is not None and len(top) > 1:
            sureness += (
                "; no pair here is significant"
                if (pd.to_numeric(pairwise["p_holm"], errors="coerce") >= alpha).all()
                else ""
            )
        warnings = _diverged(board, tables.get("runs"), problem, loss)
        warnings += _range_edges(tables.get("selection"), problem, loss)
        warnings += scaling.truncation_notes(tables.get("rank_flips"), problem, loss)
        tuning, unequal = _tuning_protocol(tables.get("selection"), problem, loss)
        warnings += unequal
        found.append(
            Headline(
                problem,
                loss,
                top,
                verdict,
                margin,
                sureness,
                warnings,
                _baseline_lines(tables.get("baseline"), problem, loss),
                tuning,
            )
        )
    return found


def _rst_escape(text: str) -> str:
    """Plain text that docutils reads as plain text: markup characters escaped."""
    return "".join("\\" + c if c in "\\*`_|[]<>:" else c for c in text)


def to_rst(items: list[Headline]) -> str:
    """The headlines as reStructuredText: what the landing page includes."""
    if not items:
        return "No (problem, loss) pair in the leaderboard: nothing to answer.\n"
    lines = []
    for item in items:
        lines += [f"- **{_rst_escape(item.title)}**: {_rst_escape(item.verdict)}."]
        for text in (item.margin, item.sureness, item.tuning):
            if text:
                lines += ["", f"  - {_rst_escape(text)}."]
        for text in item.baseline:
            lines += ["", f"  - Against the baseline, {_rst_escape(text)}."]
        for text in item.warnings:
            lines += ["", f"  - Warning: {_rst_escape(text)}."]
        lines.append("")
    return "\n".join(lines) + "\n"


PAGE_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:70em;line-height:1.45}"
    "h2{font-size:1.1em;margin:1.2em 0 .3em}.warn{color:#8a4b00}"
    "ul{margin:.2em 0}"
)


def to_html(items: list[Headline], title: str = "The answer") -> str:
    """The headlines as a page of its own (the report's first category)."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    if not items:
        body.append("<p>No (problem, loss) pair in the leaderboard: nothing to answer.</p>")
    for item in items:
        body.append(f"<h2>{html.escape(item.title)}</h2><p>{html.escape(item.verdict)}.</p><ul>")
        for text in (item.margin, item.sureness, item.tuning):
            if text:
                body.append(f"<li>{html.escape(text)}.</li>")
        for text in item.baseline:
            body.append(f"<li>Against the baseline, {html.escape(text)}.</li>")
        for text in item.warnings:
            body.append(f'<li class="warn">Warning: {html.escape(text)}.</li>')
        body.append("</ul>")
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
