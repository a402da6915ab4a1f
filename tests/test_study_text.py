"""The modern study's findings in docs/optimizers.md are what its kept tables say.

tools/study_text.py renders the section from docs/studies/modern/; here the
committed text is checked against a fresh render, and the renderer's wording
against hand-made tables whose verdicts are fixed by construction.
"""

import importlib.util
import math
import shutil

import pandas as pd
import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("study_text", REPO / "tools/study_text.py")
study_text = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study_text)

NAN = math.nan
INF = math.inf


def test_the_committed_section_is_what_the_committed_tables_say(capsys):
    document = study_text.DOC.read_text(encoding="utf-8")
    section = document.split(study_text.SECTION.begin, 1)[1].split(study_text.SECTION.end, 1)[0]
    assert section.strip() == study_text.render(study_text.SNAPSHOT).strip()
    assert study_text.main(["--check"]) == 0
    assert "is what the tables in" in capsys.readouterr().out


def test_a_changed_table_makes_the_section_stale(tmp_path, capsys):
    tables = tmp_path / "modern"
    shutil.copytree(study_text.SNAPSHOT, tables)
    baseline = pd.read_csv(tables / "baseline.tsv", sep="\t")
    baseline.loc[0, "speedup"] = baseline.loc[0, "speedup"] * 3 + 1  # another number
    baseline.to_csv(tables / "baseline.tsv", sep="\t", index=False)
    before = study_text.DOC.read_bytes()
    assert study_text.main(["--check", "--tables", str(tables)]) == 1
    assert "Regenerate it with python3 tools/study_text.py" in capsys.readouterr().err
    assert study_text.DOC.read_bytes() == before  # --check writes nothing


def test_a_snapshot_without_its_tables_is_refused_with_the_command_that_makes_them(tmp_path):
    (tmp_path / "summary").mkdir()
    with pytest.raises(SystemExit, match="baseline.tsv.*missing; run the study first"):
        study_text.snapshot(tmp_path / "summary", tmp_path / "into")
    assert not (tmp_path / "into").exists()


def baseline_row(optimizer, steps, time, heldout, ratio):
    return {
        "problem": "toy",
        "loss": "mse",
        "optimizer": optimizer,
        "baseline": "adamw",
        "measure": "steps_to_heldout_target",
        "n_pairs": 10,
        "baseline_median_steps": 40,
        "median_steps": 20,
        "speedup": steps[0],
        "speedup_low": steps[1],
        "speedup_high": steps[2],
        "step_time_ratio": ratio,
        "time_speedup": time[0],
        "time_speedup_low": time[1],
        "time_speedup_high": time[2],
        "heldout_median_diff": -0.1,
        "heldout_p_value": 0.01,
        "heldout_verdict": heldout,
    }


def planted_tables(folder):
    """A study of one pair whose verdicts follow from the intervals by construction."""
    folder.mkdir()
    rows = [
        # twice as fast in steps, but three times the cost per step: slower in time
        baseline_row("soap", (2.0, 1.5, 2.5), (0.67, 0.5, 0.8), "better", 3.0),
        # an interval across 1 in steps; never reached in time either way
        baseline_row("lion", (1.1, 0.8, 1.4), (NAN, NAN, NAN), "worse", 1.0),
        baseline_row("sgd", (0.5, 0.3, 0.7), (0.6, 0.4, 0.9), "no difference", 0.8),
        # missed the target on most seeds; reached it where the baseline mostly missed it
        baseline_row("sf", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), "worse", 1.0),
        baseline_row("muon", (INF, INF, INF), (INF, INF, INF), "better", 2.0),
    ]
    pd.DataFrame(rows).to_csv(folder / "baseline.tsv", sep="\t", index=False)
    pd.DataFrame(
        {
            "cost": ["heldout_steps"] * 2 + ["heldout_time"] * 2 + ["steps"],
            "optimizer": ["soap", "adamw", "adamw", "soap", "soap"],
            "score": [0.9, 0.5, 0.8, 0.4, 0.123],
        }
    ).to_csv(folder / "profile_scores.tsv", sep="\t", index=False)
    # (optimizer, k, expected log10 final loss, rank): Prodigy's one setting wins
    # at k = 1, tuned AdamW from k = 2 on.
    budgets = [
        ("adamw", 1, -1.0, 2),
        ("prodigy", 1, -2.0, 1),
        ("adamw", 2, -3.0, 1),
        ("prodigy", 2, -2.0, 2),
        ("adamw", 4, -3.5, 1),
        ("prodigy", 4, -2.0, 2),
    ]
    pd.DataFrame(
        [
            {
                "problem": "toy",
                "loss": "mse",
                "optimizer": optimizer,
                "k": k,
                "n_candidates": 8 if optimizer == "adamw" else 1,
                "expected_log10": value,
                "median_log10": value,
                "exhausted": optimizer == "prodigy" and k > 1,
                "rank": float(rank),
            }
            for optimizer, k, value, rank in budgets
        ]
    ).to_csv(folder / "best_of_k.tsv", sep="\t", index=False)
    pd.DataFrame(
        {
            "claim": [
                "SGD converges slower than Adam",  # the article's, not a published finding
                "at small tuning budgets (1-4 trials) an Adam-family optimizer does best",
                "trying several optimizers at their defaults does about as well as tuning one",
            ],
            "data": ["", "1 pairs", "1 pairs"],
            "test": ["", "", ""],
            "statistic": [NAN, 0.5, NAN],
            "p_value": [NAN, 0.5, NAN],
            "numbers": ["", "k=1: Adam family best in 0, another in 1 of 1 pairs", ""],
            "verdict": ["supported", "not shown", "not testable: nothing is tuned"],
        }
    ).to_csv(folder / "claims.tsv", sep="\t", index=False)
    pd.DataFrame(
        {"problem": "toy", "loss": "mse", "optimizer": ["adamw", "soap", "lion"], "n": 10}
    ).to_csv(folder / "leaderboard.tsv", sep="\t", index=False)
    return folder


def test_planted_tables_are_worded_by_their_intervals(tmp_path):
    text = study_text.render(planted_tables(tmp_path / "tables"))
    lines = text.splitlines()
    assert lines[0].startswith(
        "What the study's tables say (1 (problem, loss) pairs, 3 optimizers, 10 evaluation seeds;"
    )
    pair = next(line for line in lines if line.startswith("- **toy, mse**"))
    assert pair == (
        "- **toy, mse** (10 paired seeds; speed-up over tuned adamw to the held-out target "
        "[95 % interval]). In steps, faster: soap 2x [1.5-2.5], muon (reached it; adamw "
        "missed it); no clear difference: lion 1.1x [0.8-1.4]; slower: sgd 0.5x [0.3-0.7], "
        "sf (missed it). In time, faster: muon (reached it; adamw missed it); "
        "no clear difference: lion (both missed it); slower: soap 0.67x [0.5-0.8], "
        "sgd 0.6x [0.4-0.9], sf (missed it). "
        "Final held-out loss better than adamw's: soap and muon; worse: lion and sf."
    )
    assert (
        "- **Time per step** over adamw's (each measured alone in the loop, one thread; "
        "lowest-highest over the pairs): soap 3, lion 1, sgd 0.8, sf 1, muon 2." in lines
    )
    assert (
        "- **Across the problems, steps to the held-out target** (performance-profile score): "
        "soap 0.90, adamw 0.50." in lines
    )
    assert (
        "- **Across the problems, time to the held-out target** (performance-profile score): "
        "adamw 0.80, soap 0.40." in lines
    )
    assert not any("0.12" in line for line in lines)  # a cost the section does not cover
    assert any(
        line.startswith("- **Best at a tuning budget of k trials**")
        and line.endswith("toy/mse (k = 1: prodigy, k = 2: adamw, k = 4: adamw).")
        for line in lines
    )
    published = [line for line in lines if line.startswith("- **Published finding**")]
    assert published == [
        '- **Published finding** "at small tuning budgets (1-4 trials) an Adam-family optimizer '
        'does best": **not shown**. k=1: Adam family best in 0, another in 1 of 1 pairs.',
        '- **Published finding** "trying several optimizers at their defaults does about as '
        'well as tuning one": **not testable: nothing is tuned**.',
    ]


def test_tables_with_exact_intervals_say_so_and_too_few_seeds_give_no_interval(tmp_path):
    tables = planted_tables(tmp_path / "tables")
    baseline = pd.read_csv(tables / "baseline.tsv", sep="\t")
    baseline["speedup_ci_method"] = "exact order statistics x(2), x(9) of 10 per-seed ratios"
    # five seeds: a point, but no 95 % interval
    baseline.loc[baseline["optimizer"] == "lion", ["speedup_low", "speedup_high"]] = NAN
    baseline.to_csv(tables / "baseline.tsv", sep="\t", index=False)
    text = study_text.render(tables)
    assert "A speed-up is the median over the paired seeds of the per-seed ratio" in text
    assert "percentile bootstrap" not in text
    assert "no clear difference: lion 1.1x (no interval: n too small);" in text


def test_the_section_is_replaced_between_its_markers_only():
    begin, end = study_text.SECTION.begin, study_text.SECTION.end
    document = f"# Head\n\nkept\n{begin}\nold text\n{end}\n\ntail kept\n"
    assert study_text.replace_section(document, "new") == (
        f"# Head\n\nkept\n{begin}\nnew\n{end}\n\ntail kept\n"
    )
    with pytest.raises(SystemExit, match="markers"):
        study_text.replace_section("# no markers\n", "new")


def test_the_budget_finding_names_the_metric_the_study_ranked_by():
    # tables from before the ranking_metric key: the final loss
    assert study_text.metric_words(pd.DataFrame({"optimizer": ["a"]})) == "final loss"
    mixed = pd.DataFrame({"ranking_metric": ["final_loss", "heldout_loss", "heldout_loss"]})
    assert study_text.metric_words(mixed) == (
        "held-out loss (final loss where a problem has no held-out data)"
    )
    budgets = pd.DataFrame(
        {"problem": "p", "loss": "mse", "k": [1], "optimizer": ["a"], "rank": [1.0]}
    )
    text = study_text._budget_text(budgets, study_text.metric_words(mixed))
    assert "lowest expected log10 held-out loss (final loss where" in text
