"""Studies kept apart (issue 31 point 4): each config's outputs in a folder of its
own, its report and progress read that study alone, and a report whose config
differs from its results' is refused with the fix."""

import json
import shutil

import pytest
import yaml

from conftest import REPO, snakemake, snakemake_forked
from optbench import progress
from optbench.planning import studies

MINE = {
    "seeds": [0, 1],
    "steps": 5,
    "device": "cpu",
    "problems": {"linear": {"kwargs": {"dim": 5}, "losses": ["mse"]}},
    "losses": {"mse": {"class": "MSELoss"}},
    "optimizers": {
        "sgd": {"class": "SGD", "kwargs": {"lr": 0.1}},
        "adam": {"class": "Adam", "kwargs": {"lr": 0.1}},
    },
}


def test_a_study_is_named_by_its_key_else_its_config_files_stem():
    assert studies.study_name("", ["configs/mine.yaml"]) == "mine"
    assert studies.study_name(None, []) == "config"  # Snakemake's default config.yaml
    assert studies.study_name("paper", ["configs/mine.yaml"]) == "paper"
    assert studies.study_name("", ["base.yaml", "/x/extra.yml"]) == "base+extra"
    assert studies.results_root("config") == "results"
    assert studies.results_root("mine") == "results/mine"


@pytest.mark.parametrize("name", ["runs", "summary", "figures", "logs", "manifests", "run-index"])
def test_a_study_named_like_a_folder_of_the_default_study_is_refused(name):
    (problem,) = studies.name_problems(name)
    assert f"results/{name}/" in problem and f"study: {name}-study" in problem


@pytest.mark.parametrize("name", ["my study", "../up", ".hidden", "a/b"])
def test_a_study_name_that_cannot_be_a_folder_is_refused(name):
    (problem,) = studies.name_problems(name)
    assert "Fix:" in problem


def test_the_report_is_refused_without_a_record_or_with_another_config(tmp_path):
    assert "is missing" in studies.report_refusal(str(tmp_path), "mine", ["mine.yaml"], "a" * 64)
    studies.write_record(tmp_path / studies.RECORD, "mine", ["mine.yaml"], "a" * 64)
    assert studies.report_refusal(str(tmp_path), "mine", ["mine.yaml"], "a" * 64) is None
    refusal = studies.report_refusal(str(tmp_path), "mine", ["mine.yaml"], "b" * 64)
    assert "another configuration" in refusal
    assert "snakemake --report report.html --configfile mine.yaml" in refusal


def test_the_config_digest_follows_the_config_and_the_runs_settings():
    digest = studies.config_digest(MINE, ["spec"])
    assert digest == studies.config_digest(json.loads(json.dumps(MINE)), ["spec"])
    assert digest != studies.config_digest({**MINE, "steps": 6}, ["spec"])
    assert digest != studies.config_digest(MINE, ["spec with another file digest"])


@pytest.mark.workflow
def test_two_studies_in_one_folder_keep_apart_and_each_report_reads_its_own(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(MINE))
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    snakemake(tmp_path, "--cores", "1", configfile=mine, study=None)
    study = tmp_path / "results" / "mine"
    assert (study / "summary" / "leaderboard.tsv").is_file()
    assert (study / "figures" / "overview.png").is_file()
    assert (study / "manifests" / "train" / "linear" / "mse" / "seeds0-1.tsv").is_file()
    assert (study / "logs" / "summarize.log").is_file()
    assert json.loads((study / "study.json").read_text())["study"] == "mine"
    # Nothing of this study in the default study's folders.
    for folder in studies.RESERVED[:-1]:
        assert not (tmp_path / "results" / folder).exists(), folder
    assert (study / "runs" / "linear" / "mse" / "adam" / "base" / "seed1.tsv").is_file()

    # The three --report runs, forked from this warmed-up process (one at a
    # time: they read the same folder; the report itself is made in the child).
    report = tmp_path / "mine.html"
    (tmp_path / "forked").mkdir()  # the children's stdout and stderr
    reports = snakemake_forked(
        {
            # The README's --report (config.yaml): that study never ran, so no report.
            "default": (tmp_path, ["--report", "default.html"]),
            "mine": (tmp_path, ["--report", str(report), "--configfile", str(mine)]),
            # The same study with another config (one more step) than its results'.
            "changed": (
                tmp_path,
                ["--report", "x.html", "--configfile", str(mine), "--config", "steps=6"],
            ),
        },
        tmp_path / "forked",
        parallel=1,
    )
    default = reports["default"]
    assert default.returncode == 1 and not (tmp_path / "default.html").exists()
    assert "Cannot build the report of study 'config'" in default.stderr
    assert "Fix: run `snakemake --cores all` first" in default.stderr

    assert reports["mine"].returncode == 0, reports["mine"].stderr[-3000:]
    assert report.stat().st_size > 0

    # The same study with another config (one more step) than its results': refused.
    changed = reports["changed"]
    assert changed.returncode == 1 and not (tmp_path / "x.html").exists()
    assert "were made with another configuration" in changed.stderr
    assert "snakemake --report report.html --configfile mine.yaml" in changed.stderr


def write_progress(path, steps_done, steps_planned, state, started, updated):
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "runs_planned": 2,
        "runs_done": 2 if state == progress.DONE else 1,
        "steps_planned": steps_planned,
        "steps_done": steps_done,
        "started": started,
        "updated": updated,
        "state": state,
        "pid": 0,
        "host": "elsewhere",
    }
    path.write_text(json.dumps(record))


def test_a_finished_jobs_elapsed_time_stops_when_it_ended():
    """The issue's 23:36 for a job of 8 s: elapsed counted on after the job ended."""
    record = {
        "runs_planned": 1,
        "runs_done": 1,
        "steps_planned": 40,
        "steps_done": 40,
        "started": 1000.0,
        "updated": 1008.0,
        "state": progress.DONE,
    }
    assert "0:08 elapsed" in progress.describe(record, now=1000.0 + 23 * 60 + 36)
    running = {**record, "state": progress.RUNNING, "steps_done": 20}
    assert "0:30 elapsed" in progress.describe(running, now=1030.0)


def test_the_progress_command_counts_only_the_jobs_of_its_study(tmp_path, capsys):
    from progress import main  # workflow/scripts/progress.py

    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(MINE))  # one job: linear/mse, seeds 0-1, 2 x 2 x 5 steps
    suffix = progress.SUFFIX
    # This study's planned job, half done; the default study's job and an
    # earlier grid of this study (seeds 0-2), both finished.
    write_progress(
        tmp_path / f"results/mine/logs/train/linear/mse/seeds0-1.log{suffix}",
        10,
        20,
        progress.RUNNING,
        1000.0,
        1005.0,
    )
    write_progress(
        tmp_path / f"results/logs/train/linear/mse/seeds0-9.log{suffix}",
        800,
        800,
        progress.DONE,
        1000.0,
        1010.0,
    )
    write_progress(
        tmp_path / f"results/mine/logs/train/linear/mse/seeds0-2.log{suffix}",
        30,
        30,
        progress.DONE,
        1000.0,
        1010.0,
    )
    assert main(["--directory", str(tmp_path), "--all", str(mine)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "linear/mse/seeds0-1.log" in lines[0]
    assert lines[-1].split("] ", 1)[1] == (
        "grid: 10 of 20 run-steps of the grid (50%); 1 job(s) running, 0 finished; "
        "1 job(s) of an earlier grid of this study not counted"
    )
