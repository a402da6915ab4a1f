"""Issue 11 at the pipeline's level: run files -> cell summaries -> every table, in-process.

The rules run exactly these functions (summarize_cell.py: cells; summarize.py:
analysis.build_tables), so these tests pin what the pipeline reports without
a Snakemake run: selection on tuning seeds only (a planted case), ties in the
ranking, held-out values from the sidecars, the claims check and the tables
the rule files declare.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from conftest import REPO, SCHEMA
from optbench import runfiles
from optbench.planning import settings
from optbench.reporting import analysis, cells, claims, figures, outputs, summary
from optbench.reporting.analysis_context import Context, context_for, threshold_text

PATTERN = "runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv"


def write_runs(root, values, problem="p", loss="mse", heldout=None):
    """values: {(role, optimizer, variant): [run, ...]}, a run being its final loss after
    10.0 (a number) or the whole loss curve (a tuple) -> cell summary paths by role.

    Evaluation seeds are 0, 1, ...; tuning seeds 100, 101, ...; ``heldout``:
    optional {(optimizer, variant): [heldout dict per evaluation seed]} for the sidecars
    (or keyed by (role, optimizer, variant) for either role).
    """
    by_role = {"evaluation": [], "tuning": []}
    for (role, optimizer, variant), runs in values.items():
        first = 100 if role == "tuning" else 0
        paths = []
        for index, run in enumerate(runs):
            path = str(root / PATTERN).format(
                problem=problem, loss=loss, optimizer=optimizer, variant=variant, seed=first + index
            )
            curve = list(run) if isinstance(run, tuple) else [10.0, run]
            sidecar = {"seed": first + index, "heldout": None}
            if heldout and role == "evaluation" and (optimizer, variant) in heldout:
                sidecar["heldout"] = heldout[(optimizer, variant)][index]
            if heldout and (role, optimizer, variant) in heldout:
                sidecar["heldout"] = heldout[(role, optimizer, variant)][index]
            runfiles.write_run(path, curve, cells.sidecar_path(path), sidecar)
            paths.append(path)
        identity = {"problem": problem, "loss": loss, "optimizer": optimizer, "variant": variant}
        cell = cells.read_cell(paths, str(root / PATTERN), identity, len(curve))
        out = summary.cell_summary_path(root / "summary", identity, role)
        cells.write_cell_summary(cell, out)
        by_role[role].append(out)
    return by_role


ORDER = ["base", "lr0.01", "lr0.1", "lr1.0"]


def build(root, values, order=ORDER, **keywords):
    paths = write_runs(root, values, **keywords)
    return analysis.build_tables(paths["evaluation"], paths["tuning"], Context(order=order))


def test_variants_are_picked_on_tuning_seeds_only(tmp_path):
    """A planted case: on the evaluation seeds lr1.0 would win (then lr0.1), on the
    tuning seeds lr0.01 does; every comparison must use lr0.01 (no selection bias)."""
    values = {
        ("tuning", "sgd", "lr0.01"): [1e-4, 1e-4, 1e-3],
        ("tuning", "sgd", "lr0.1"): [1e-2, 1e-3, 1e-2],
        ("tuning", "sgd", "lr1.0"): [math.inf, 1e-9, math.inf],  # diverged twice: +inf
        ("tuning", "sgd", "base"): [1e-12, 1e-12, 1e-12],  # no candidate beside a sweep
        ("evaluation", "sgd", "base"): [5e-3, 5e-3, 5e-3],
        ("evaluation", "sgd", "lr0.01"): [2e-3, 3e-3, 4e-3],
        ("evaluation", "sgd", "lr0.1"): [1e-6, 1e-6, 1e-6],
        ("evaluation", "sgd", "lr1.0"): [1e-9, 1e-9, 1e-9],
        ("evaluation", "adam", "base"): [1e-5, 1e-5, 1e-5],
    }
    tables = build(tmp_path, values)
    choice = tables["selection"].set_index("optimizer")
    assert list(choice.index) == ["sgd", "adam"]  # the order the cells are given
    assert choice.loc["sgd", "variant"] == "lr0.01"
    assert choice.loc["sgd", "score"] == pytest.approx(-4.0)
    assert (choice.loc["sgd", "n_candidates"], choice.loc["sgd", "n_tuning_seeds"]) == (3, 3)
    assert (choice.loc["adam", "variant"], choice.loc["adam", "n_candidates"]) == ("base", 1)
    # chosen on evaluation seeds, the same rule would have picked lr1.0
    evaluation = tables["runs"][tables["runs"]["role"] == "evaluation"]
    medians = evaluation[evaluation["optimizer"] == "sgd"].groupby("variant")["final_loss"]
    assert medians.median().drop("base").idxmin() == "lr1.0"
    board = tables["leaderboard"].set_index("optimizer")
    assert board.loc["sgd", "variant"] == "lr0.01"
    assert board.loc["sgd", "median_log10"] == pytest.approx(np.log10(3e-3), rel=1e-12)
    # the pairwise test and the tuning gain use the chosen variant's evaluation runs
    (pair,) = tables["pairwise"].itertuples()
    expected = np.log10([2e-3, 3e-3, 4e-3]) - np.log10([1e-5] * 3)
    assert pair.median_diff == pytest.approx(np.median(expected), rel=1e-12)
    gain = tables["tuning_gain"].set_index("optimizer").loc["sgd"]
    assert (gain["base_variant"], gain["tuned_variant"]) == ("base", "lr0.01")
    assert gain["median_diff"] == pytest.approx(np.log10(3e-3) - np.log10(5e-3), rel=1e-12)


def test_equal_tuning_scores_go_to_the_smaller_value(tmp_path):
    values = {
        ("tuning", "sgd", "lr0.1"): [1e-3, 1e-3],  # listed first, but the larger rate
        ("tuning", "sgd", "lr0.01"): [1e-3, 1e-3],
        ("evaluation", "sgd", "lr0.1"): [1.0, 1.0],
        ("evaluation", "sgd", "lr0.01"): [1.0, 1.0],
    }
    tables = build(tmp_path / "ordered", values)
    assert list(tables["selection"]["variant"]) == ["lr0.01"]
    assert tables["selection"]["n_tied"].tolist() == [2]
    # without an order the first listed wins: the order is what decides
    assert list(build(tmp_path / "listed", values, order=None)["selection"]["variant"]) == ["lr0.1"]


def test_a_diverged_tuning_run_counts_as_inf_even_when_it_ends_finite(tmp_path):
    # lr1.0 blows up at step 0 on two of three tuning seeds and then ends at 1e-9:
    # scored by its final values it would win (median -9); as +inf it loses.
    values = {
        ("tuning", "sgd", "lr0.1"): [1e-2, 0.0, 1e-3],
        ("tuning", "sgd", "lr1.0"): [(math.inf, 1e-9), (math.nan, 1e-9), 1e-9],
        ("evaluation", "sgd", "lr0.1"): [1.0, 1.0],
        ("evaluation", "sgd", "lr1.0"): [1.0, 1.0],
    }
    tables = build(tmp_path, values)
    assert list(tables["selection"]["variant"]) == ["lr0.1"]
    assert tables["selection"].loc[0, "score"] == pytest.approx(-3.0)
    tuning = tables["runs"][tables["runs"]["role"] == "tuning"].set_index(["variant", "seed"])
    assert math.isnan(tuning.loc[("lr1.0", 100), "final_loss"])
    assert tuning.loc[("lr1.0", 100), "first_nonfinite_step"] == 0


def test_several_variants_without_tuning_runs_are_refused_with_the_fix(tmp_path):
    values = {
        ("evaluation", "sgd", "lr0.1"): [1.0, 2.0],
        ("evaluation", "sgd", "lr0.01"): [0.5, 0.5],
    }
    with pytest.raises(ValueError, match="no tuning-seed runs.*set tuning_seeds"):
        build(tmp_path, values)


def test_the_ranking_has_ties_where_the_corrected_tests_cannot_separate(tmp_path):
    """a beats b and c on every one of 8 seeds (exact Wilcoxon p = 2/256, Holm x3 <
    0.05); b and c alternate, so they share rank 2. c's one outlier makes its mean
    the worst by far: a ranking by the mean would put it last alone."""
    b = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3, 8e-3]
    c = [1.5e-3, 1.5e-3, 3.5e-3, 3.5e-3, 5.5e-3, 5.5e-3, 7.5e-3, 10.0]
    values = {
        ("evaluation", "b", "base"): b,
        ("evaluation", "a", "base"): [value / 100 for value in b],
        ("evaluation", "c", "base"): c,
    }
    tables = build(tmp_path, values)
    board = tables["leaderboard"]
    assert dict(zip(board["optimizer"], board["rank"], strict=True)) == {"a": 1, "b": 2, "c": 2}
    assert board["optimizer"].iloc[0] == "a"  # by rank, then median
    assert board.set_index("optimizer").loc["c", "beaten_by"] == "a"
    pairs = tables["pairwise"].set_index(["a", "b"])
    p = stats.wilcoxon(np.log10(b) - np.log10(c), method="exact").pvalue
    assert pairs.loc[("b", "c"), "p_value"] == pytest.approx(p, rel=1e-12)
    assert pairs.loc[("b", "a"), "p_holm"] == pytest.approx(3 * 2 / 256, rel=1e-12)
    # one block: win probabilities, Friedman note, performance profile shape
    matrix = tables["win_matrix"].set_index("optimizer")
    assert matrix.loc["a", "b"] == 1.0 and matrix.loc["b", "c"] == pytest.approx(5 / 8)
    assert set(tables["friedman"]["note"]) == {
        "Friedman test needs >= 2 complete (problem, loss) blocks"
    }


def test_held_out_values_come_from_the_sidecars(tmp_path):
    heldout = {
        ("sgd", "base"): [
            {"heldout_loss": 0.5, "heldout_accuracy": 0.75},
            {"heldout_loss": 0.25, "heldout_accuracy": 1.0},
            {"heldout_loss": 1.0, "heldout_accuracy": None},
        ]
    }
    values = {("evaluation", "sgd", "base"): [1.0, 2.0, 3.0]}
    tables = build(tmp_path, values, heldout=heldout)
    runs = tables["runs"].set_index("seed")
    assert list(runs["heldout_loss"]) == [0.5, 0.25, 1.0]
    assert runs.loc[0, "heldout_accuracy"] == 0.75 and math.isnan(runs.loc[2, "heldout_accuracy"])
    board = tables["leaderboard"].iloc[0]
    assert board["heldout_loss_median"] == 0.5 and board["heldout_accuracy_median"] == 0.875


def test_steps_to_threshold_follow_the_configured_level(tmp_path):
    curve = (10.0, 1.0, 0.05, 0.009, 0.001)
    paths = {"relative": write_runs(tmp_path / "r", {("evaluation", "sgd", "base"): [curve]})}
    identity = {"problem": "p", "loss": "mse", "optimizer": "sgd", "variant": "base"}
    run = str(tmp_path / "r" / PATTERN).format(**identity, seed=0)
    cell = cells.read_cell([run], str(tmp_path / "r" / PATTERN), identity, 5)
    relative = cells.cell_summary(cell)["runs"]  # default: 1e-3 x initial = 0.01
    absolute = cells.cell_summary(cell, cells.Threshold.parse("absolute:0.05"))["runs"]
    assert (relative["threshold"], relative["steps_to_threshold"]) == ([0.01], [3.0])
    assert (absolute["threshold"], absolute["steps_to_threshold"]) == ([0.05], [2.0])
    assert threshold_text(
        {"default": {"relative": 0.1}, "p/mse": {"absolute": 0.05}}, "p", "mse"
    ) == ("absolute:0.05")
    assert threshold_text({"default": {"relative": 0.1}}, "p", "l1") == "relative:0.1"
    assert threshold_text(None, "p", "l1") == "relative:0.001"
    assert paths["relative"]["evaluation"]


STEPS = 12
# Per optimizer, per seed 0-5: the step at which the run first reaches the loss
# threshold and the held-out target (None: never, a censored run), planted so
# that each share of reached runs occurs: all, most (4), half (3), some (2), none.
CENSORED = {
    "all": ([2, 3, 4, 5, 6, 7], [3, 4, 5, 6, 8, 9]),
    "most": ([2, 3, 5, 7, None, None], [None, 4, 6, 8, 9, None]),
    "half": ([2, None, 4, None, 9, None], [None, 5, None, 7, None, 10]),
    "some": ([None, 3, None, None, 8, None], [6, None, None, None, None, 11]),
    "none": ([None] * 6, [None] * 6),
}


def write_censored_runs(root):
    """Runs of one (problem, loss) as CENSORED plants them -> evaluation cell summaries.

    The loss starts at 10 (threshold: 1e-3 x 10 = 0.01) and drops from 1 to 1e-3 at
    its step; the held-out loss, evaluated at every step, from 2 to 0.1 (target 0.5)."""
    target = cells.HeldoutTarget.parse("loss:0.5")
    summaries = []
    for optimizer, (reach, hit) in CENSORED.items():
        paths = []
        for seed, (at, hit_at) in enumerate(zip(reach, hit, strict=True)):
            curve = [10.0] + [1.0 if at is None or s < at else 1e-3 for s in range(1, STEPS)]
            heldout = [
                {"step": s, "heldout_loss": 2.0 if hit_at is None or s < hit_at else 0.1}
                for s in range(1, STEPS)
            ]
            path = str(root / PATTERN).format(
                problem="p", loss="mse", optimizer=optimizer, variant="base", seed=seed
            )
            sidecar = {"seed": seed, "heldout": heldout[-1], "heldout_curve": heldout}
            runfiles.write_run(path, curve, cells.sidecar_path(path), sidecar)
            paths.append(path)
        identity = {"problem": "p", "loss": "mse", "optimizer": optimizer, "variant": "base"}
        cell = cells.read_cell(paths, str(root / PATTERN), identity, STEPS)
        out = summary.cell_summary_path(root / "summary", identity, "evaluation")
        cells.write_cell_summary(cell, out, target=target)
        summaries.append(out)
    return summaries


def test_median_steps_count_a_run_that_never_reached_the_level_as_never(tmp_path):
    """Both median-steps columns of the leaderboard treat a censored run as infinitely
    slow, so the median is inf ("not reached") unless more than half the runs reached
    the level. By hand, from CENSORED sorted with inf for never (6 runs: the median is
    the mean of the 3rd and 4th): all [2,3,4,5,6,7] -> 4.5; most [2,3,5,7,inf,inf] -> 6;
    half [2,4,9,inf,inf,inf] -> (9 + inf) / 2 = inf. The median over the reached runs
    only would say 4 for half (1 of 3 reaching gives its one step), a false speed."""
    tables = analysis.build_tables(write_censored_runs(tmp_path), [], Context(order=ORDER))
    runs = tables["runs"].set_index("optimizer")
    for optimizer, (reach, hit) in CENSORED.items():  # the runs are planted as intended
        planted = [np.nan if step is None else step for step in reach + hit]
        found = [*runs.loc[optimizer, "steps_to_threshold"]]
        found += [*runs.loc[optimizer, "steps_to_heldout_target"]]
        np.testing.assert_array_equal(found, planted)
    board = tables["leaderboard"].set_index("optimizer")
    inf = math.inf
    by_hand = {
        # optimizer: (median steps to threshold, median steps to held-out target, reached)
        "all": ((4 + 5) / 2, (5 + 6) / 2, 6),
        "most": ((5 + 7) / 2, (8 + 9) / 2, 4),
        "half": (inf, inf, 3),
        "some": (inf, inf, 2),
        "none": (inf, inf, 0),
    }
    for optimizer, (threshold_median, target_median, reached) in by_hand.items():
        row = board.loc[optimizer]
        assert row["median_steps_to_threshold"] == threshold_median, optimizer
        assert row["median_steps_to_heldout_target"] == target_median, optimizer
        assert row["n_reached"] == reached and row["share_reached"] == reached / 6
        assert row["share_heldout_target"] == sum(h is not None for h in CENSORED[optimizer][1]) / 6


def test_claims_from_the_run_table_equal_the_checks_on_the_curves(tmp_path):
    """The pipeline checks the claims from each run's metrics (read once by its cell
    job); the library's curve-based checks, on the same runs, must agree."""
    rng = np.random.default_rng(5)
    steps = 12
    rates = {"sgd": 0.75, "momentum_sgd": 0.7, "adam": 0.8, "rmsprop": 0.3}
    curves_by_loss, values = {}, {}
    for loss, floor in (("mse", 0.0), ("l1", 0.05)):
        for name, rate in rates.items():
            seeds_rates = rate * rng.uniform(0.9, 1.1, size=(6, 1))
            wiggle = 1.0 + 0.05 * np.sin(
                np.arange(steps) * (2.0 if name == "momentum_sgd" else 0.3)
            )
            array = floor + 10.0 * seeds_rates ** np.arange(steps) * wiggle
            curves_by_loss.setdefault(loss, {})[name] = (list(range(6)), array)
            values[(loss, name)] = array
    paths = []
    for (loss, name), array in values.items():
        runs = {("evaluation", name, "base"): [tuple(row) for row in array]}
        paths += write_runs(tmp_path, runs, problem="linear", loss=loss)["evaluation"]
    context = Context(mse_block=("linear", "mse"), l1_block=("linear", "l1"), claims_steps=steps)
    table = analysis.build_tables(paths, (), context)["claims"]
    reference = claims.claims_table(curves_by_loss["mse"], curves_by_loss["l1"])
    columns = ["claim", "statistic", "p_value", "verdict"]
    article = table.iloc[:3].reset_index(drop=True)  # then the published findings' rows
    pd.testing.assert_frame_equal(article[columns], reference[columns])
    assert list(article["data"]) == ["linear/mse", "linear/mse", "linear/l1"]


def test_claims_the_grid_cannot_test_say_why(tmp_path):
    paths = write_runs(tmp_path, {("evaluation", "sgd", "base"): [1.0, 2.0]}, problem="linear")
    table = analysis.build_tables(
        paths["evaluation"], (), Context(mse_block=("linear", "mse"), claims_steps=1)
    )["claims"]
    assert list(table["verdict"]) == [
        "not testable: needs rmsprop and another optimizer",
        "not testable: needs adam and momentum_sgd",
        "not testable: the grid has no linear problem with an L1 loss",
        "not testable: nothing is tuned (every optimizer has one candidate)",
        "not testable: nothing is tuned (every optimizer has one candidate)",
        "not testable: the grid has no size axis (a problem entry with 2+ sizes:)",
        "not testable: the grid has no budget axis (a problem entry with 2+ budgets:)",
    ]


def test_a_tuned_grid_without_the_articles_problem_lists_each_claim_once(tmp_path):
    """docs/studies/modern/claims.tsv listed each article claim twice (the re-check on
    the base variants of claims the grid cannot test) and read "in None steps"."""
    values = {
        ("tuning", "adam", "lr0.01"): [1e-4, 1e-4, 1e-3],
        ("tuning", "adam", "lr0.1"): [1e-2, 1e-3, 1e-2],
        ("evaluation", "adam", "base"): [5e-3, 5e-3, 5e-3],
        ("evaluation", "adam", "lr0.01"): [2e-3, 3e-3, 4e-3],
        ("evaluation", "adam", "lr0.1"): [1e-6, 1e-6, 1e-6],
        ("evaluation", "sgd", "base"): [1e-5, 1e-5, 1e-5],
    }
    table = build(tmp_path, values, problem="quadratic")["claims"]
    assert table["claim"].is_unique
    assert table["claim"].tolist()[:3] == [
        "rmsprop brings the loss to about zero fastest",
        "adam damps oscillation faster than momentum_sgd",
        "no optimizer gets the loss near zero within the run",
    ]
    assert not table.astype(str).apply(lambda column: column.str.contains("None")).any().any()


def test_every_table_and_figure_is_declared_once_and_made_by_the_library(tmp_path):
    """optbench.reporting.outputs is the one list: the library makes exactly its tables and
    figures, each has a caption file, and the rules take the names from it."""
    assert analysis.TABLE_FILES is outputs.TABLE_FILES
    assert figures.ANALYSIS_FIGURES is outputs.ANALYSIS_FIGURES
    names = [table.name for table in outputs.TABLES]
    files = [table.file for table in outputs.TABLES]
    assert len(set(names)) == len(names) and len(set(files)) == len(files)
    for item in (*outputs.TABLES, *outputs.FIGURES):
        assert (REPO / "workflow/report" / f"{item.caption}.rst").is_file(), item
        assert item.category in outputs.CATEGORIES
    for figure in outputs.FIGURES:
        assert set(figure.tables) <= set(names), figure
    for rules in ("summarize.smk", "plot.smk", "common.smk"):
        text = (REPO / "workflow/rules" / rules).read_text()
        assert not any(f'"{file}"' in text for file in files), rules  # no second list


def test_the_context_of_the_configs_finds_the_articles_problem_and_orders_rates():
    default = settings.validate(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)
    context = context_for(default)
    assert (context.mse_block, context.l1_block, context.claims_steps) == (
        ("linear", "mse"),
        ("linear", "l1"),
        40,
    )
    tuned = settings.validate(yaml.safe_load((REPO / "configs/tuned.yaml").read_text()), SCHEMA)
    context = context_for(tuned)
    # Base first, then the trials of every optimizer by their learning rate, ascending
    # (ties in the preference order go to the smaller rate).
    trials = {name for o in tuned.optimizers.values() for name in o.variants if name != "base"}
    assert context.order[0] == "base" and set(context.order[1:]) == trials
    rates = [context.swept[name]["lr"] for name in context.order[1:]]
    assert rates == sorted(rates) and min(rates) >= 1e-4 and max(rates) <= 10.0
    lbfgs = tuned.optimizers["lbfgs"].variants
    assert all(
        context.swept[name] == {"lr": v.kwargs["lr"]} for name, v in lbfgs.items() if name != "base"
    )
    assert context.swept["base"] == {}
    json.dumps(context.as_dict())  # a rule param: JSON-able
    assert Context.from_dict(json.loads(json.dumps(context.as_dict()))) == context


def test_every_comparison_figure_gives_an_optimizer_the_same_colour(tmp_path, monkeypatch):
    import matplotlib.colors
    import matplotlib.pyplot as plt

    rates = {"lr0.01": 1e-3, "lr0.1": 1e-6}
    values = {}
    for name, scale in (("sgd", 1.0), ("adam", 0.1), ("rmsprop", 0.01)):
        for variant, final in rates.items():
            for role in ("tuning", "evaluation"):
                runs = [(10.0, 1.0, final * scale * (1 + seed / 10)) for seed in range(6)]
                values[(role, name, variant)] = runs
    tables = build(tmp_path, values)
    tables["sensitivity"] = analysis._sensitivity(
        tables["runs"],
        analysis.candidate_runs(tables["runs"]),
        Context(swept={v: {"lr": float(v[2:])} for v in rates}),
    )
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, paths: drawn.setdefault(paths[0], fig))
    figures.draw_analysis(tables, {name: [name] for name in figures.ANALYSIS_FIGURES})
    colours = {
        name: matplotlib.colors.to_hex(colour)
        for name, colour in figures.optimizer_colors(tables["runs"]).items()
    }
    assert list(colours) == ["sgd", "adam", "rmsprop"] and len(set(colours.values())) == 3
    checked = 0
    for name in ("sensitivity", "ecdf", "profiles", "best_of_k"):
        for ax in drawn[name].axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
                optimizer = text.get_text().split()[0]
                colour = handle.get_color() if hasattr(handle, "get_color") else None
                if colour is None or isinstance(colour, np.ndarray):
                    colour = handle.get_edgecolor()[0]
                assert matplotlib.colors.to_hex(colour) == colours[optimizer], (name, optimizer)
                checked += 1
    assert checked == 5 * 3  # profiles: one panel per cost (steps, evaluations)
    (finals_axis,) = drawn["finals"].axes
    points = [c for c in finals_axis.collections if len(c.get_offsets())]
    assert {matplotlib.colors.to_hex(c.get_facecolor()[0]) for c in points} == set(colours.values())
    for fig in drawn.values():
        plt.close(fig)


def test_a_cell_job_reads_each_runs_evaluations_and_held_out_values(tmp_path):
    """The per-run table takes the loss evaluations from the TSV's third column and
    the held-out values from the sidecar beside it (none: NaN), seed by seed."""
    pattern = str(
        tmp_path / "{problem}" / "{loss}" / "{optimizer}" / "{variant}" / "seed{seed}.tsv"
    )
    identity = {"problem": "p", "loss": "mse", "optimizer": "lbfgs", "variant": "base"}
    runs = {
        # seed: (losses, evaluations per step, heldout)
        4: (
            [8.0, 4.0, 2.0, 1.0, 0.5],
            [3, 5, 2, 4, 1],
            {"heldout_loss": 0.5, "heldout_accuracy": 0.75},
        ),
        9: ([8.0, 8.0, 8.0, 8.0, 8.0], [1, 1, 1, 1, 1], None),
        2: (
            [6.0, 1.0, 0.5, 0.25, 0.1],
            [2, 2, 7, 1, 1],
            {"heldout_loss": 2.0, "heldout_accuracy": 0.125},
        ),
    }
    paths = []
    for seed, (losses, counts, heldout) in runs.items():
        path = pattern.format(seed=seed, **identity)
        runfiles.write_run(path, losses, path[:-4] + ".json", {"heldout": heldout}, counts)
        paths.append(path)
    cell = cells.read_cell(paths, pattern, identity, steps=5)
    written = cells.run_table(cell, cells.Threshold(0.25, relative=True))
    assert written["seed"] == [2, 4, 9]
    # Strict JSON: NaN is written as the string "nan", read back with float().
    table = {name: np.array(values, dtype=float) for name, values in written.items()}
    nan = math.nan
    # Levels 1.5, 2.0, 2.0: first reached at steps 1, 2 and never.
    np.testing.assert_array_equal(table["steps_to_threshold"], [1.0, 2.0, nan])
    np.testing.assert_array_equal(table["evaluations"], [13.0, 15.0, 5.0])
    # Evaluations of the steps before, plus the one that saw the level.
    np.testing.assert_array_equal(table["evaluations_to_threshold"], [2 + 1.0, 3 + 5 + 1.0, nan])
    np.testing.assert_array_equal(table["heldout_loss"], [2.0, 0.5, nan])
    np.testing.assert_array_equal(table["heldout_accuracy"], [0.125, 0.75, nan])


def test_a_corrupt_sidecar_is_named_with_the_fix(tmp_path):
    path = tmp_path / "seed3.tsv"
    runfiles.write_run(str(path), [1.0, 0.5], str(tmp_path / "seed3.json"), {"heldout": None})
    (tmp_path / "seed3.json").write_text('{"heldout": ')  # cut short, as by a full disk
    with pytest.raises(cells.CellError) as error:
        cells.read_heldout(path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'seed3.json'}: not valid JSON (")
    assert message.endswith(
        "Delete the run's TSV and sidecar so that the pipeline trains it again."
    )
    assert cells.read_heldout(tmp_path / "seed4.tsv") is None  # no sidecar: nothing held out


# Trials of a two-dimensional search: (lr, weight decay) per variant name.
TRIALS = {
    "lr0.001-weight_decay0.1": {"lr": 0.001, "weight_decay": 0.1},
    "lr0.01-weight_decay0.001": {"lr": 0.01, "weight_decay": 0.001},
    "lr0.1-weight_decay0.01": {"lr": 0.1, "weight_decay": 0.01},
    "lr1.0-weight_decay0.0001": {"lr": 1.0, "weight_decay": 0.0001},
}


def searched(tmp_path, tuning_best: str):
    """adamw searched over four (lr, weight decay) trials, ``tuning_best`` best on
    the tuning seeds (another trial best on the evaluation seeds); prodigy, with
    nothing to tune, runs its base setting only."""
    values = {}
    for rank, variant in enumerate(sorted(TRIALS, key=lambda v: v != tuning_best)):
        values[("tuning", "adamw", variant)] = [10.0 ** -(6 - rank)] * 3
        values[("evaluation", "adamw", variant)] = [10.0 ** -(2 + rank)] * 3
    values[("tuning", "prodigy", "base")] = [1e-4] * 3  # every variant runs on both roles
    values[("evaluation", "prodigy", "base")] = [1e-4] * 3
    paths = write_runs(tmp_path, values)
    context = Context(order=["base", *TRIALS], swept={"base": {}, **TRIALS})
    return analysis.build_tables(paths["evaluation"], paths["tuning"], context)


def test_selection_over_several_searched_hyper_parameters_flags_range_edges(tmp_path):
    tables = searched(tmp_path, "lr1.0-weight_decay0.0001")
    choice = tables["selection"].set_index("optimizer")
    assert choice.loc["adamw", "variant"] == "lr1.0-weight_decay0.0001"  # on tuning seeds
    # Both values are at an edge of what was tried: widen both ranges.
    assert choice.loc["adamw", "range_edge"] == (
        "lr=1.0 (highest of 4 tried); weight_decay=0.0001 (lowest of 4 tried)"
    )
    assert choice.loc["prodigy", "range_edge"] == ""  # nothing tried, no edge
    assert analysis.range_edge_warnings(tables["selection"]) == [
        "warning: p/mse/adamw chose lr=1.0 (highest of 4 tried); weight_decay=0.0001 (lowest "
        "of 4 tried): the best setting may lie outside the range; widen it"
    ]
    inside = searched(tmp_path / "inside", "lr0.1-weight_decay0.01")["selection"]
    assert inside.set_index("optimizer").loc["adamw", "range_edge"] == ""


def test_sensitivity_has_one_row_per_variant_and_searched_hyper_parameter(tmp_path):
    table = searched(tmp_path, "lr0.1-weight_decay0.01")["sensitivity"]
    adamw = table[table["optimizer"] == "adamw"]
    assert len(adamw) == 2 * len(TRIALS)
    assert set(adamw["parameter"]) == {"lr", "weight_decay"}
    for row in adamw.itertuples():
        assert row.value == TRIALS[row.variant][row.parameter]
    assert adamw.loc[adamw["selected"], "variant"].unique().tolist() == ["lr0.1-weight_decay0.01"]
    (prodigy,) = table[table["optimizer"] == "prodigy"].itertuples()
    assert prodigy.parameter == "" and math.isnan(prodigy.value) and prodigy.selected


def test_every_optimizer_is_compared_at_every_budget(tmp_path):
    curve = searched(tmp_path, "lr0.1-weight_decay0.01")["best_of_k"]
    assert curve.groupby("optimizer")["k"].apply(list).to_dict() == {
        "adamw": [1, 2, 3, 4],
        "prodigy": [1, 2, 3, 4],
    }
    prodigy = curve[curve["optimizer"] == "prodigy"]
    # Nothing to tune: budget 1, its one result carried to every k.
    assert prodigy["exhausted"].tolist() == [False, True, True, True]
    assert prodigy["expected_log10"].tolist() == pytest.approx([-4.0] * 4)
    assert set(prodigy["n_candidates"]) == {1}
    adamw = curve[curve["optimizer"] == "adamw"].set_index("k")["expected_log10"]
    # k = 1: the mean over the four trials' evaluation medians (-2, -3, -4, -5);
    # k = 4: the tuning winner's (-2), whatever the evaluation seeds prefer.
    assert adamw[1] == pytest.approx(-3.5) and adamw[4] == pytest.approx(-2.0)
    ranks = curve.pivot(index="k", columns="optimizer", values="rank")
    # Lower is better: prodigy (-4) wins at every budget, and adamw's tuned
    # result (-2) is its worst trial on the evaluation seeds (planted overfit).
    assert ranks["prodigy"].tolist() == [1.0] * 4 and ranks["adamw"].tolist() == [2.0] * 4


def test_sensitivity_figure_draws_a_panel_per_hyper_parameter_and_circles_the_choice(
    tmp_path, monkeypatch
):
    from matplotlib.collections import PathCollection

    tables = searched(tmp_path, "lr0.1-weight_decay0.01")
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, paths: drawn.setdefault(paths[0], fig))
    colors = figures.optimizer_colors(tables["runs"])
    figures.plot_sensitivity(tables["sensitivity"], colors, ["sensitivity"])
    axes = [ax for ax in drawn["sensitivity"].axes if ax.get_visible() and ax.has_data()]
    assert [ax.get_xlabel() for ax in axes] == ["lr", "weight_decay"]
    for ax, parameter in zip(axes, ["lr", "weight_decay"], strict=True):
        (circle,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert circle.get_offsets()[0][0] == TRIALS["lr0.1-weight_decay0.01"][parameter]
        assert ax.get_xscale() == "log"


def test_profiles_keep_a_run_that_never_reached_the_target_unreached():
    """A censored run (NaN) stays censored in every cost, time included; a run at
    its target before any update costs one step (of its step time)."""
    rows = []
    for seed in range(3):
        for optimizer, steps, seconds in (("fast", 0.0, 2e-3), ("never", np.nan, 1e-3)):
            rows.append(
                {
                    "problem": "p", "loss": "mse", "optimizer": optimizer, "seed": seed,
                    "steps_to_threshold": steps, "evaluations_to_threshold": steps,
                    "time_to_threshold": steps * seconds, "seconds_per_step": seconds,
                    "steps_to_heldout_target": np.nan, "time_to_heldout_target": np.nan,
                    "heldout_target_loss": np.nan, "heldout_target_accuracy": np.nan,
                }
            )  # fmt: skip
    ratios, _, scores = analysis._profiles(pd.DataFrame(rows))
    assert set(ratios["cost"]) == {"steps", "evaluations", "time"}  # no held-out target
    for cost in ("steps", "time"):
        of = ratios[ratios["cost"] == cost].set_index("optimizer")
        assert of.loc["fast", "ratio"] == 1.0 and of.loc["never", "ratio"] == math.inf
    time = ratios[(ratios["cost"] == "time") & (ratios["optimizer"] == "fast")]
    assert time["median_cost"].iloc[0] == 2e-3  # one step of its step time
    assert scores.set_index(["cost", "optimizer"]).loc[("time", "never"), "n_reached"] == 0
