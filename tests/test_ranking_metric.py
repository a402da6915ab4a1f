"""Issue 31 point 6: selection and ranking judge by the configured metric, the
held-out loss by default where the problem has held-out data."""

import math

import pandas as pd
import pytest
from test_analysis import write_runs

from optbench import problems
from optbench.reporting import analysis, ranking_metric
from optbench.reporting.analysis_context import BUILTIN_HELDOUT, Context

ORDER = ["base", "lr0.01", "lr0.1"]


def held(loss, accuracy=0.5):
    return {"heldout_loss": loss, "heldout_accuracy": accuracy}


# The final training loss favours lr0.01 (it overfits: 1e-6 on its mini-batch);
# the held-out loss favours lr0.1, on the tuning and on the evaluation seeds.
VALUES = {
    ("tuning", "sgd", "lr0.01"): [1e-6, 1e-6, 1e-6],
    ("tuning", "sgd", "lr0.1"): [1e-2, 1e-2, 1e-2],
    ("evaluation", "sgd", "lr0.01"): [1e-6, 2e-6, 3e-6, 4e-6],
    ("evaluation", "sgd", "lr0.1"): [1e-2, 2e-2, 3e-2, 4e-2],
    ("evaluation", "adam", "base"): [1e-4, 2e-4, 3e-4, 4e-4],
}
HELDOUT = {
    ("tuning", "sgd", "lr0.01"): [held(0.9)] * 3,
    ("tuning", "sgd", "lr0.1"): [held(0.2)] * 3,
    ("evaluation", "sgd", "lr0.01"): [held(0.9, 0.6)] * 4,
    ("evaluation", "sgd", "lr0.1"): [
        held(0.1, 0.95),
        held(0.2, 0.9),
        held(0.1, 0.9),
        held(0.2, 0.95),
    ],
    ("evaluation", "adam", "base"): [held(0.5, 0.7)] * 4,
}


def tables(root, metric="auto", heldout=HELDOUT):
    paths = write_runs(root, VALUES, heldout=heldout)
    context = Context(order=ORDER, ranking_metric=metric)
    return analysis.build_tables(paths["evaluation"], paths["tuning"], context)


def test_by_default_the_held_out_loss_chooses_and_ranks_where_there_is_held_out_data(tmp_path):
    result = tables(tmp_path)
    assert result["selection"].set_index("optimizer").loc["sgd", "variant"] == "lr0.1"
    board = result["leaderboard"].set_index("optimizer")
    assert set(board["ranking_metric"]) == {"heldout_loss"}
    # sgd (held-out 0.1-0.2) ahead of adam (0.5) on every seed, though its training
    # loss (1e-2) is the worse: ranked by the held-out loss.
    assert board["point_rank"].to_dict() == {"sgd": 1, "adam": 2}
    # the median of log10 values: for an even count, the mean of the middle two
    expected = (math.log10(0.1) + math.log10(0.2)) / 2
    assert board.loc["sgd", "median_log10"] == pytest.approx(expected)
    assert board.loc["sgd", "note"].startswith("ahead of adam (4 of 4 seeds) on the median")


def test_final_loss_keeps_the_training_loss_ranking(tmp_path):
    result = tables(tmp_path, "final_loss")
    assert result["selection"].set_index("optimizer").loc["sgd", "variant"] == "lr0.01"
    board = result["leaderboard"].set_index("optimizer")
    assert set(board["ranking_metric"]) == {"final_loss"}
    assert board["point_rank"].to_dict() == {"sgd": 1, "adam": 2}
    expected = (math.log10(2e-6) + math.log10(3e-6)) / 2
    assert board.loc["sgd", "median_log10"] == pytest.approx(expected)


def test_held_out_accuracy_ranks_by_the_error_rate(tmp_path):
    result = tables(tmp_path, "heldout_accuracy")
    # equal tuning accuracies (0.5): the tie goes to the preferred (smaller) lr0.01
    assert result["selection"].set_index("optimizer").loc["sgd", "variant"] == "lr0.01"
    board = result["leaderboard"].set_index("optimizer")
    assert set(board["ranking_metric"]) == {"heldout_accuracy"}
    # adam's accuracy 0.7 (error 0.3) beats lr0.01's 0.6 (error 0.4) on every seed
    assert board["point_rank"].to_dict() == {"adam": 1, "sgd": 2}
    assert board.loc["adam", "median_log10"] == pytest.approx(math.log10(0.3))


def test_without_held_out_data_auto_is_the_final_loss(tmp_path):
    result = tables(tmp_path, heldout=None)
    assert set(result["leaderboard"]["ranking_metric"]) == {"final_loss"}
    assert result["selection"].set_index("optimizer").loc["sgd", "variant"] == "lr0.01"


def test_a_held_out_metric_without_held_out_data_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ranking_metric.MetricError, match="p/mse has no held-out data.*Fix"):
        tables(tmp_path, "heldout_loss", heldout=None)


def test_steps_to_target_uses_the_threshold_without_a_held_out_target():
    runs = pd.DataFrame(
        {
            "problem": "p",
            "loss": "mse",
            "final_loss": [1e-3, 1e-4, 1e-5],
            "first_nonfinite_step": [math.nan, math.nan, math.nan],
            "heldout_loss": math.nan,
            "heldout_accuracy": math.nan,
            "heldout_target_loss": math.nan,
            "heldout_target_accuracy": math.nan,
            "steps_to_threshold": [30.0, math.nan, 0.0],  # censored; met before any update
            "steps_to_heldout_target": math.nan,
        }
    )
    judged, used = ranking_metric.with_ranking_value(runs, "steps_to_target")
    assert used == {("p", "mse"): "steps_to_target"}
    assert judged["ranking_value"].tolist()[0] == 30.0
    assert math.isnan(judged["ranking_value"].iloc[1])  # never reached: +inf in comparisons
    assert judged["ranking_value"].iloc[2] == 1.0


def test_an_unknown_metric_is_refused():
    runs = pd.DataFrame(
        {
            "problem": ["p"],
            "loss": ["mse"],
            "final_loss": [1.0],
            "first_nonfinite_step": [math.nan],
            "heldout_loss": [math.nan],
            "heldout_accuracy": [math.nan],
        }
    )
    with pytest.raises(ranking_metric.MetricError, match="expected one of auto, final_loss"):
        ranking_metric.with_ranking_value(runs, "best_loss")


def test_the_built_in_problems_with_held_out_data_are_the_ones_the_checker_knows():
    with_heldout = {
        name for name in problems.available() if problems.build(name, 0, 2).heldout is not None
    }
    assert with_heldout == BUILTIN_HELDOUT


def test_power_table_states_what_four_seeds_can_show(tmp_path):
    """2 optimizers on 4 evaluation seeds: one pair, floor 2 / 2**4 = 0.125; 6 seeds
    give 2 / 64 = 0.031 < 0.05. sgd was tuned: its tuning gain is a family too."""
    power = tables(tmp_path)["power"].set_index("family")
    assert list(power.index) == ["pairwise", "tuning_gain"]
    pair = power.loc["pairwise"]
    assert (pair["problem"], pair["loss"], pair["n"], pair["n_tests"]) == ("p", "mse", 4, 1)
    assert pair["min_p"] == pytest.approx(0.125) and pair["min_p_adjusted"] == pytest.approx(0.125)
    assert not pair["can_be_significant"] and pair["n_needed"] == 6
    assert pair["note"] == (
        "no difference can be significant at n = 4 (smallest reachable p 0.125 >= 0.05); "
        "6 seeds needed"
    )
