"""The report's pages: the landing page and captions of every shipped config
render without a reStructuredText warning, the answer states who won and how
sure, every table reads as an HTML table with its TSV inside, and a failed
script job says why on the console.

The landing page and captions are rendered the way ``snakemake --report``
renders them (snakemake/report/__init__.py, 9.x): Jinja2 with
``trim_blocks`` and ``lstrip_blocks``, the rules' params and the config as
``snakemake``, Snakemake's link targets appended, then docutils' HTML writer.
Without running a study; tests/test_workflow.py builds a real report.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import jinja2
import numpy as np
import pandas as pd
import pytest
import yaml
from docutils.core import publish_parts

from conftest import REPO
from optbench.reporting import answer, outputs, tablepages

REPORT = REPO / "workflow" / "report"
LANDING = REPORT / "workflow.rst"
SHIPPED_CONFIGS = [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]


def render(template: str, snakemake, files=()) -> str:
    """``template`` as Snakemake's report renders a caption or the landing page."""
    links = "\n\n" + "\n".join(
        f".. _{record.target}: javascript:app.showResultInfo('{record.target}')" for record in files
    )
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(template + links).render(snakemake=snakemake, categories={}, files=files)
    return publish_parts(text, writer_name="html")["html_body"]


def rule_params(config: dict) -> SimpleNamespace:
    """The params the captions read (workflow/rules/*.smk), from a config."""
    return SimpleNamespace(
        n_seeds=len(config.get("seeds", [])),
        n_tuning_seeds=len(config.get("tuning_seeds", [])),
        n_blocks=len(config.get("problems", {})),
        band=config.get("band", "geomean_ci95"),
    )


def shipped(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --- Planted tables: two (problem, loss) pairs, numbers chosen by hand ---


def planted_tables() -> dict[str, pd.DataFrame]:
    board = pd.DataFrame(
        {
            "problem": ["p"] * 3 + ["q"] * 2,
            "loss": ["mse"] * 3 + ["l1"] * 2,
            "optimizer": ["mine", "adamw", "sgd_huge", "adamw", "mine"],
            "variant": ["base", "lr0.1", "base", "lr0.1", "base"],
            "rank": [1, 2, 3, 1, 1],
            "n": [8, 8, 8, 4, 4],
            "n_diverged": [0, 0, 8, 0, 0],
            "median_log10": [-3.0, -1.5, math.inf, -2.0, -1.9],
        }
    )
    pairwise = pd.DataFrame(
        {
            "problem": ["p", "p", "p", "q"],
            "loss": ["mse", "mse", "mse", "l1"],
            # stored as (adamw, mine): the answer must turn it round to mine - adamw
            "a": ["adamw", "mine", "adamw", "mine"],
            "b": ["mine", "sgd_huge", "sgd_huge", "adamw"],
            "n_pairs": [8, 8, 8, 4],
            "test": ["wilcoxon exact"] * 4,
            "median_diff": [1.5, -math.inf, -math.inf, 0.1],
            "ci_low": [1.2, -math.inf, -math.inf, -0.2],
            "ci_high": [1.8, -math.inf, -math.inf, 0.3],
            "p_holm": [0.0234, 0.0234, 0.0234, 0.375],
            # share of seeds a wins: adamw wins 1 of 8 against mine, so mine 7 of 8
            "p_a_better": [0.125, 1.0, 1.0, 0.375],
        }
    )
    selection = pd.DataFrame(
        {
            "problem": ["p", "p", "p", "q", "q"],
            "loss": ["mse", "mse", "mse", "l1", "l1"],
            "optimizer": ["mine", "adamw", "sgd_huge", "adamw", "mine"],
            "range_edge": ["", "lr=0.1 (highest of 3 tried)", "", "", ""],
        }
    )
    runs = pd.DataFrame(
        {
            "role": ["evaluation"] * 3,
            "problem": ["p"] * 3,
            "loss": ["mse"] * 3,
            "optimizer": ["sgd_huge"] * 3,
            "variant": ["base"] * 3,
            "seed": [0, 1, 2],
            "first_nonfinite_step": [5.0, 3.0, 4.0],
        }
    )
    return {
        "leaderboard": board,
        "pairwise": pairwise,
        "selection": selection,
        "runs": runs,
        "baseline": pd.DataFrame(),
    }


def test_the_answer_names_the_winner_the_margin_and_how_sure():
    first, second = answer.headlines(planted_tables())
    assert (first.title, first.winners) == ("p, mse", ["mine"])
    assert first.verdict.startswith("mine wins")
    # mine - adamw = -(adamw - mine): -1.5 decades, interval [-1.8, -1.2]
    assert "median paired difference (mine - adamw) -1.50 decades" in first.margin
    assert "[-1.80, -1.20]" in first.margin
    assert first.margin.endswith("; mine is better on 7 of 8 paired seeds")
    assert first.sureness.startswith(
        "Holm-adjusted p = 0.0234 (wilcoxon exact, n = 8): significant"
    )
    # the diverged optimizer: 8 of 8, first non-finite step is the earliest (3)
    assert first.warnings[0].startswith("sgd_huge diverged on 8 of 8 seeds")
    assert "first non-finite loss at step 3" in first.warnings[0]
    assert "adamw's tuned setting lr=0.1 (highest of 3 tried) is at the edge" in first.warnings[1]
    # a tie at rank 1: no winner claimed, the point leader named
    assert second.winners == ["adamw", "mine"]
    assert "no paired test separates adamw, mine" in second.verdict
    assert "adamw has the lowest median final loss" in second.verdict
    assert "not significant at 0.05" in second.sureness
    # adamw leads on the median; mine - adamw won 0.375 of 4 seeds: adamw 2.5 (a tie halved)
    assert second.margin.endswith("; adamw is better on 2.5 of 4 paired seeds (a tie counts half)")
    assert "no pair here is significant" in second.sureness


def test_the_answer_says_how_the_settings_were_tuned_and_flags_unequal_budgets():
    tables = planted_tables()
    tables["selection"] = tables["selection"].assign(
        n_candidates=[1, 8, 1, 8, 4], n_tuning_seeds=[0, 3, 0, 3, 3]
    )
    first, second = answer.headlines(tables)
    # p: only adamw was searched (the others are single settings): one protocol
    assert first.tuning == "Tuning: adamw each chose from 8 trials on 3 tuning seeds, at p"
    assert not any("unequal" in w for w in first.warnings)
    # q: adamw had 8 trials, mine 4: named as unequal
    assert (
        "unequal tuning budgets (adamw 8 trials on 3 seeds; mine 4 trials on 3 seeds)"
        in (second.warnings[-1])
    )
    # settings chosen at another block (tune_at) say so
    tables["selection"] = tables["selection"].assign(tuned_at=["", "p-big", "", "", ""])
    first, _ = answer.headlines(tables)
    assert first.tuning.endswith("at p-big, transferred here")
    assert "Tuning\\: adamw each chose" in answer.to_rst([first])


def test_the_answer_names_the_ranking_metric_and_who_never_reached_the_target():
    """Found on a new user's study: the held-out loss was called "final loss", a
    baseline speed-up of 0 (never reached where the baseline did) read "0x the
    speed", and the power sentence ended in two full stops."""
    tables = planted_tables()
    tables["leaderboard"] = tables["leaderboard"].assign(ranking_metric="heldout_loss")
    tables["power"] = pd.DataFrame(
        {
            "family": ["pairwise"] * 2,
            "problem": ["p", "q"],
            "loss": ["mse", "l1"],
            "min_p_adjusted": [0.375, 0.375],
            "can_be_significant": [False, False],
            "n_needed": [8, 8],
        }
    )
    tables["baseline"] = pd.DataFrame(
        {
            "problem": ["q", "q", "q"],
            "loss": ["l1"] * 3,
            "optimizer": ["mine", "sgd_huge", "lion"],
            "baseline": ["adamw"] * 3,
            "measure": ["steps_to_heldout_target"] * 3,
            "speedup": [0.0, math.inf, 1.5],
            "speedup_low": [math.nan, math.nan, 1.2],
            "speedup_high": [math.nan, math.nan, 2.0],
        }
    )
    first, second = answer.headlines(tables)
    assert "decades of held-out loss" in first.margin
    assert "final loss" not in first.margin + second.verdict
    assert second.verdict.endswith("has the lowest median held-out loss")
    assert second.baseline == [
        "mine vs adamw in steps to the held-out target: on the median paired seed adamw "
        "reached it and mine never did",
        "sgd_huge vs adamw in steps to the held-out target: on the median paired seed "
        "sgd_huge reached it and adamw never did",
        "lion: 1.5x the speed of adamw in steps to the held-out target [1.2, 2]",
    ]
    text = answer.to_rst([first, second])
    assert ".." not in text.replace("...", "")
    assert "8 seeds would be needed." in text


def test_an_interval_ending_at_a_negative_zero_reads_as_zero():
    tables = planted_tables()
    # stored as adamw - mine [0, 1.8]: turned round, mine - adamw [-1.8, -0.0]
    tables["pairwise"] = tables["pairwise"].assign(ci_low=0.0)
    first, _ = answer.headlines(tables)
    assert "[-1.80, 0]" in first.margin and "-0]" not in first.margin
    assert [answer._decades(v) for v in (-0.0, 0.0, -0.004, 0.5)] == ["0", "0", "-0.004", "0.50"]


def test_the_answer_quotes_power_and_interval_method_columns_once_they_exist():
    tables = planted_tables()
    tables["pairwise"] = tables["pairwise"].assign(ci_method="exact order statistic")
    # power.tsv's rows: one per family of tests and (problem, loss); the
    # pairwise family's floor with n = 4 and Holm over one pair: 2 / 2**4
    tables["power"] = pd.DataFrame(
        {
            "family": ["pairwise", "baseline", "pairwise"],
            "problem": ["q", "q", "p"],
            "loss": ["l1", "l1", "mse"],
            "min_p_adjusted": [2 / 2**4, 0.9, 3 * 2 / 2**8],
            "can_be_significant": [False, False, True],
            # as read from power.tsv, whose blanks make the column floats
            "n_needed": [6.0, 99.0, 8.0],
        }
    )
    first, second = answer.headlines(tables)
    assert "(95 % interval, exact order statistic)" in second.margin
    # no interval (below 6 pairs): the method column's reason is quoted instead
    tables["pairwise"] = tables["pairwise"].assign(
        ci_low=math.nan, ci_high=math.nan, ci_method="n too small (needs >= 6 pairs)"
    )
    assert answer.headlines(tables)[1].margin.startswith(
        "adamw vs mine: median paired difference (adamw - mine) -0.10 decades of final loss"
        " (no 95 % interval: n too small (needs >= 6 pairs))"
    )
    assert "the smallest adjusted p these seeds can give is 0.125" in second.sureness
    assert "no difference can be significant" in second.sureness
    assert "6 seeds would be needed" in second.sureness and "99" not in second.sureness
    assert "6.0" not in second.sureness
    # where significance is reachable, the floor is quoted and no seeds asked for
    assert "the smallest adjusted p these seeds can give is 0.0234" in first.sureness
    assert "needed" not in first.sureness


def test_the_answer_renders_as_clean_rst_and_escaped_html_whatever_the_names():
    tables = planted_tables()
    odd = {"mine": "my*opt_", "adamw": "adam_w`x"}
    for name in ("leaderboard", "pairwise", "selection"):
        for column in ("optimizer", "a", "b"):
            if column in tables[name]:
                tables[name][column] = tables[name][column].replace(odd)
    items = answer.headlines(tables)
    body = publish_parts(answer.to_rst(items), writer_name="html")["html_body"]
    assert "System Message" not in body
    assert "my*opt_ wins" in body and "adam_w`x" in body
    page = answer.to_html(items)
    assert "my*opt_ wins" in page and "<script" not in page


@pytest.mark.parametrize("config_path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_landing_page_of_every_shipped_config_renders_without_warnings(config_path, tmp_path):
    config = shipped(config_path)
    snakemake = SimpleNamespace(config=config)
    # before the study ran (no answer yet) ...
    before = render(LANDING.read_text(), snakemake)
    assert "System Message" not in before, before
    assert f"<strong>{len(config['seeds'])} evaluation seeds</strong>" in before
    # ... and with the answer the analysis writes beside answer.html
    (tmp_path / outputs.ANSWER_TEXT).write_text(answer.to_rst(answer.headlines(planted_tables())))
    record = SimpleNamespace(target=outputs.ANSWER_PAGE, path=tmp_path / outputs.ANSWER_PAGE)
    after = render(LANDING.read_text(), snakemake, files=[record])
    assert "System Message" not in after, after
    assert "mine wins" in after and "sgd_huge diverged on 8 of 8 seeds" in after


@pytest.mark.parametrize("config_path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_every_caption_of_every_shipped_config_renders_without_warnings(config_path):
    config = shipped(config_path)
    snakemake = SimpleNamespace(config=config, params=rule_params(config))
    captions = sorted(set(REPORT.glob("*.rst")) - {LANDING})
    assert len(captions) >= len(outputs.TABLES) + len(outputs.FIGURES) + 1
    for caption in captions:
        html = render(caption.read_text(), snakemake)
        assert "System Message" not in html, (caption.name, html)


class _Table(HTMLParser):
    """The header and body cells of an HTML table; a cell's ``data-v`` (its full
    text) where it has one; the download link's href."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell, self.href, self.full = [], None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell, self.full = "", attrs.get("data-v")
        elif tag == "a" and "download" in attrs:
            self.href = attrs["href"]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.full if self.full is not None else self.cell)
            self.cell = None


def test_a_table_page_holds_every_cell_of_its_tsv_and_the_tsv_itself():
    tsv = (
        "optimizer\tmedian_log10\tbeaten_by\tn\n"
        "adam\t-1.4628125672776402\t\t4\nsgd <x>\tinf\tadam\t4\n"
    )
    page = tablepages.page(tsv, "leaderboard.tsv")
    parsed = _Table()
    parsed.feed(page)
    assert parsed.rows == list(csv.reader(io.StringIO(tsv), delimiter="\t"))
    prefix = "data:text/tab-separated-values;base64,"
    assert parsed.href.startswith(prefix)
    assert base64.b64decode(parsed.href[len(prefix) :]).decode() == tsv
    # shown to 4 digits, sortable by a click, self-contained (no remote script)
    assert ">-1.463</td>" in page and 'onclick="sortBy(this)"' in page
    assert not re.search(r"<script[^>]+src=", page) and "http" not in page.replace("http-equiv", "")


def test_a_long_table_page_shows_its_first_rows_and_leaves_the_rest_to_the_tsv():
    # Chromium leaves a report entry blank past 2 MB: a 3 MB table's page stays under it.
    rows = 30_000
    tsv = "step\tnote\n" + "".join(f"{i}\t{'x' * 90}\n" for i in range(rows))
    page = tablepages.page(tsv, "steps.tsv")
    assert len(page.encode()) <= tablepages.PAGE_BYTES < 2 * 1024 * 1024
    parsed = _Table()
    parsed.feed(page)
    shown = len(parsed.rows) - 1
    assert 1000 < shown < rows
    # the first rows, in the table's order, and the page says how many
    assert [r[0] for r in parsed.rows[1:]] == [str(i) for i in range(shown)]
    assert f"{rows:,} rows, 2 columns; the first {shown:,} are shown" in page
    assert "data:" not in page  # no second copy of a big table
    small = tablepages.page("step\n1\n", "steps.tsv")
    assert "data:text/tab-separated-values" in small and "are shown" not in small


# docs/report.md, "Size": a table page's share of the report's 15 MB.
PAGE_BUDGET = 500_000


def test_a_study_sized_table_page_keeps_to_the_reports_budget_and_says_what_it_shows():
    # runs.tsv's shape in configs/modern.yaml: 3,055 runs, 26 columns of full-precision
    # numbers; its page was 1.5 MB (1,134 rows) and the report 20.2 MB.
    rng = np.random.default_rng(0)
    rows = 3055
    values = rng.lognormal(size=(rows, 25))
    tsv = "optimizer\t" + "\t".join(f"c{i}" for i in range(25)) + "\n"
    tsv += "".join("adamw\t" + "\t".join(repr(float(v)) for v in row) + "\n" for row in values)
    page = tablepages.page(tsv, "runs.tsv")
    assert len(page.encode()) <= PAGE_BUDGET
    parsed = _Table()
    parsed.feed(page)
    shown = len(parsed.rows) - 1
    # every cell shown keeps its full value (for sorting and hover) ...
    assert parsed.rows[1:] == [r.split("\t") for r in tsv.splitlines()[1 : shown + 1]]
    # ... written once: the title comes from it on hover, not a second copy
    assert page.count(repr(float(values[0, 0]))) == 1
    assert f"{rows:,} rows, 26 columns; the first {shown:,} are shown" in page
    # 25 numbers of 17-18 digits a row, each shown to 4 and written in full once:
    # about 1.1 KB a row (1.6 KB with the full value twice, as before)
    assert shown > 420


def test_the_hover_script_shows_a_numbers_full_value(tmp_path):
    node = subprocess.run(["which", "node"], capture_output=True, text=True).stdout.strip()
    if not node:
        pytest.skip("no node to run the page's script")
    script = (
        textwrap.dedent("""
        var handler;
        var document = {addEventListener: function (name, f) { handler = f; }};
        """)
        + tablepages.HOVER_SCRIPT
        + textwrap.dedent("""
        var cell = {title: "", getAttribute: function () { return "0.12345678"; }};
        handler({target: {closest: function () { return cell; }}});
        console.log(cell.title);
        """)
    )
    path = tmp_path / "hover.js"
    path.write_text(script)
    shown = subprocess.run([node, str(path)], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "0.12345678"


def test_the_sort_script_orders_numbers_as_numbers(tmp_path):
    node = subprocess.run(["which", "node"], capture_output=True, text=True).stdout.strip()
    if not node:
        pytest.skip("no node to run the page's script")
    values = ["10", "9", "-inf", "nan", "inf", "2.5e-3", "abc"]
    script = tablepages.SORT_SCRIPT + textwrap.dedent(f"""
        var cells = {values!r}.map(function (v) {{
          return {{ getAttribute: function () {{ return v; }}, textContent: v }};
        }});
        var rows = cells.map(function (c) {{ return {{ cells: [c] }}; }});
        rows.sort(function (x, y) {{
          var a = cellValue(x, 0), b = cellValue(y, 0);
          if (a[0] !== b[0]) return a[0] - b[0];
          return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
        }});
        console.log(rows.map(function (r) {{ return r.cells[0].textContent; }}).join(","));
    """)
    (tmp_path / "sort.js").write_text(script)
    out = subprocess.run([node, str(tmp_path / "sort.js")], capture_output=True, text=True)
    assert out.stdout.strip() == "-inf,2.5e-3,9,10,inf,abc,nan"


def test_a_failed_script_job_prints_its_reason_on_the_console(tmp_path):
    log = tmp_path / "job.log"
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "workflow" / "scripts")!r})
        from optbench import joblog
        with joblog.logged_job({str(log)!r}, "summary"):
            print("reading the cells", file=sys.stderr)
            raise ValueError("cell summary x.json is not JSON.\\nFix: delete it and re-run.")
        """)
    )
    process = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert process.returncode == 1
    assert process.stderr.splitlines() == [
        "summary job failed: ValueError: Fix: delete it and re-run.",
        f"  (full traceback in {log})",
    ]
    text = log.read_text()
    assert "reading the cells" in text and "Traceback" in text and "not JSON" in text


def test_a_failed_summary_command_shows_the_end_of_its_log(tmp_path):
    from optbench.planning import commands

    made = commands.commands(
        "python3",
        REPO / "workflow/scripts",
        tmp_path,
        tmp_path,
        "auto",
        "portable",
        "results/runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv",
        ("problem", "loss", "optimizer", "variant"),
        "results/run-index",
    )
    # Snakemake formats {params.group:q} and {log:q}; here by hand, the way it quotes.
    log = tmp_path / "summary.log"
    command = (
        made.summarize_group.replace("{params.group:q}", "'{}'")
        .replace("{log:q}", f"'{log}'")
        .replace("{log}", str(log))
        .replace("{{", "{")
        .replace("}}", "}")
    )
    process = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert process.returncode != 0
    assert process.stderr.startswith(f"summary job failed; the end of {log}:")
    assert process.stderr.splitlines()[-1] == log.read_text().splitlines()[-1]


# --- Real snakemake runs on the tiny config (tests/configs/tiny.yaml) ---


def test_a_real_report_states_the_answer_and_opens_its_tables(tiny_results, tmp_path):
    from conftest import CONFIGS, copy_tree, snakemake

    workdir = copy_tree(tiny_results, tmp_path / "w")
    snakemake(workdir, "--report", "results/report.html", configfile=CONFIGS / "tiny.yaml")
    report = (workdir / "results/report.html").read_text()
    assert "System Message" not in report
    summary = workdir / "results/summary"
    # the landing page quotes the answer the analysis wrote, per (problem, loss)
    written = (summary / outputs.ANSWER_TEXT).read_text()
    assert written.count("- **linear, ") == 2  # tiny: linear with mse and l1
    landing = render(
        LANDING.read_text(),
        SimpleNamespace(config=shipped(CONFIGS / "tiny.yaml")),
        files=[SimpleNamespace(target=outputs.ANSWER_PAGE, path=summary / outputs.ANSWER_PAGE)],
    )
    verdict = re.search(r"<strong>linear, mse</strong>: ([^<]+?)\.", landing).group(1)
    assert verdict in report
    assert outputs.ANSWER in report and outputs.ANSWER_PAGE in report
    # every table: its page in the report, holding the TSV's rows
    for table in outputs.TABLES:
        page_name = Path(outputs.page_file(table)).name
        assert page_name in report, page_name
        page = (summary / outputs.page_file(table)).read_text()
        parsed = _Table()
        parsed.feed(page)
        tsv = (summary / table.file).read_text()
        assert parsed.rows == list(csv.reader(io.StringIO(tsv), delimiter="\t")), table.file


def test_a_failed_summary_job_shows_why_on_the_console(tiny_results, tmp_path):
    from conftest import CONFIGS, copy_tree, snakemake

    workdir = copy_tree(tiny_results, tmp_path / "w")
    cell = next((workdir / "results/summary/cells/evaluation").rglob("*.json"))
    cell.write_text("{not json")  # newer than the tables: the summary job runs again
    process = snakemake(workdir, "--cores", "1", configfile=CONFIGS / "tiny.yaml", check=False)
    assert process.returncode != 0
    console = process.stdout + process.stderr
    (line,) = [line for line in console.splitlines() if line.startswith("summary job failed: ")]
    assert "JSONDecodeError" in line or "json" in line.lower(), line
    assert "results/logs/summarize.log" in console
