"""The analysis outputs, each declared once: every table and comparison figure.

The rules (summarize.smk, plot.smk), the report (captions under
workflow/report/, categories), the library (``analysis.TABLE_FILES``,
``figures.ANALYSIS_FIGURES``) and the tests all read these lists; nothing else
names the files. Adding a table to the report is one entry here, its code in
``analysis.build_tables`` and its caption file; a figure is one entry here,
its drawing function in ``figures.draw_analysis`` and its caption.

Standard library only: every Snakemake invocation parses the rules, which
import this module.
"""

from __future__ import annotations

from dataclasses import dataclass

# Report categories, in reading order: the answer first.
ANSWER, RUNS, TUNING, PER_PROBLEM, ACROSS, CLAIMS = (
    "0 Answer",
    "1 Runs and steps",
    "2 Tuning",
    "3 Per problem",
    "4 Across problems",
    "5 Claims check",
)
CATEGORIES = (ANSWER, RUNS, TUNING, PER_PROBLEM, ACROSS, CLAIMS)


@dataclass(frozen=True)
class Table:
    """A table of ``analysis.build_tables``: its key there, its file under
    results/summary/, its caption (workflow/report/{caption}.rst) and category."""

    name: str
    file: str
    caption: str
    category: str
    # The report offers the TSV for download; a table that grows with every
    # step of every cell is left out (its page shows its first rows, the
    # explorer its curves, results/summary/ and the Parquet tables the whole).
    downloadable: bool = True


@dataclass(frozen=True)
class Figure:
    """A comparison figure of ``figures.draw_analysis``: its key there, its file
    stem under results/figures/ (PNG), caption, category and the tables it reads
    besides SHARED_FIGURE_TABLES."""

    name: str
    stem: str
    caption: str
    category: str
    tables: tuple[str, ...]


TABLES = (
    Table("runs", "runs.tsv", "runs", RUNS),
    Table("steps", "steps.tsv", "step_summary", RUNS, downloadable=False),
    Table("selection", "selection.tsv", "selection", TUNING),
    Table("sensitivity", "sensitivity.tsv", "sensitivity", TUNING),
    Table("candidates", "candidates.tsv", "candidates", TUNING),
    Table("tuning_gain", "tuning_gain.tsv", "tuning_gain", TUNING),
    Table("best_of_k", "best_of_k.tsv", "best_of_k", TUNING),
    Table("pairwise", "pairwise.tsv", "pairwise", PER_PROBLEM),
    Table("leaderboard", "leaderboard.tsv", "leaderboard", PER_PROBLEM),
    Table("baseline", "baseline.tsv", "baseline", PER_PROBLEM),
    Table("power", "power.tsv", "power", PER_PROBLEM),
    Table("ratios", "performance_ratios.tsv", "ratios", ACROSS),
    Table("profiles", "performance_profiles.tsv", "profiles", ACROSS),
    Table("profile_scores", "profile_scores.tsv", "profile_scores", ACROSS),
    Table("friedman", "friedman.tsv", "friedman", ACROSS),
    Table("win_probabilities", "win_probabilities.tsv", "win_probabilities", ACROSS),
    Table("win_matrix", "win_matrix.tsv", "win_matrix", ACROSS),
    Table("claims", "claims.tsv", "claims", CLAIMS),
    Table("scaling", "scaling.tsv", "scaling", ACROSS),
    Table("rank_flips", "rank_flips.tsv", "rank_flips", ACROSS),
)

# The study's answer (optbench.reporting.answer), written by the summarize rule
# beside the tables: a page of its own in the report's first category, and its
# reStructuredText twin, which the landing page (workflow/report/workflow.rst)
# includes. Its caption: workflow/report/answer.rst.
ANSWER_PAGE = "answer.html"
ANSWER_TEXT = "answer.rst"
ANSWER_CAPTION = "answer"
# The interactive explorer (optbench.reporting.explorer), written by the
# explorer rule (workflow/rules/plot.smk) beside the tables from the cell
# summaries and EXPLORER_TABLES: a page of the report's first category.
# Its caption: workflow/report/explorer.rst.
EXPLORER_PAGE = "explorer.html"
EXPLORER_CAPTION = "explorer"
EXPLORER_TABLES = ("leaderboard", "baseline", "best_of_k", "sensitivity", "selection")
# Each table's page (optbench.reporting.tablepages): the table as the report
# shows it, under results/summary/, beside the TSV the report offers for download.
PAGES_FOLDER = "pages"


def page_file(table: Table) -> str:
    """The file of ``table``'s HTML page, relative to results/summary/."""
    return f"{PAGES_FOLDER}/{table.file.rsplit('.', 1)[0]}.html"


# The study's runs as Parquet tables (optbench.reporting.columnar), under
# results/columnar/: not in the report (too large to inline), for analysis
# elsewhere (docs/outputs.md shows pandas, polars and DuckDB reading them).
COLUMNAR_FOLDER = "columnar"
COLUMNAR_FILES = ("curves.parquet", "runs.parquet", "heldout.parquet")


# Every figure can be drawn in each of these formats under results/<study>/figures/
# (optbench.reporting.figures); config key figure_formats picks them (png always).
# The report carries the PNGs alone: the vector files, drawn again for papers,
# would add about 3.5 MB to the modern study's report (SVG 2.7 MB, PDF 0.85 MB
# as base64) and stay on disk beside the PNGs (docs/report.md, "Size").
FIGURE_FORMATS = ("png", "svg", "pdf")
REPORT_FIGURE_FORMATS = ("png",)


def in_report(figure_format: str) -> bool:
    """Whether the report carries a figure drawn in ``figure_format``."""
    if figure_format not in FIGURE_FORMATS:
        raise ValueError(f"unknown figure format {figure_format!r}: one of {FIGURE_FORMATS}")
    return figure_format in REPORT_FIGURE_FORMATS


# Every comparison figure reads these: the runs give each optimizer its colour
# and, with the selection, the evaluation runs of the chosen variants.
SHARED_FIGURE_TABLES = ("runs", "selection")

FIGURES = (
    Figure("finals", "finals", "finals_figure", PER_PROBLEM, ("leaderboard",)),
    Figure("ranks", "ranks", "ranks_figure", PER_PROBLEM, ("leaderboard",)),
    Figure("baseline", "baseline", "baseline_figure", PER_PROBLEM, ("baseline",)),
    Figure("sensitivity", "sensitivity", "sensitivity_figure", TUNING, ("sensitivity",)),
    Figure("ecdf", "steps_to_threshold", "ecdf_figure", PER_PROBLEM, ()),
    Figure(
        "profiles",
        "performance_profiles",
        "profiles_figure",
        ACROSS,
        ("profiles", "profile_scores"),
    ),
    Figure("win_matrix", "win_matrix", "win_matrix_figure", ACROSS, ("win_matrix",)),
    Figure("best_of_k", "best_of_k", "best_of_k_figure", TUNING, ("best_of_k",)),
    Figure("scaling", "scaling", "scaling_figure", ACROSS, ("scaling",)),
    Figure("rank_flips", "rank_flips", "rank_flips_figure", ACROSS, ("rank_flips",)),
)

# Table name -> file name under results/summary/.
TABLE_FILES = {table.name: table.file for table in TABLES}
# Table name -> its page's file name under results/summary/.
PAGE_FILES = {table.name: page_file(table) for table in TABLES}
# Figure name -> file stem under results/figures/.
ANALYSIS_FIGURES = {figure.name: figure.stem for figure in FIGURES}
# Every table the comparison figures read, in the order of TABLES.
FIGURE_TABLES = tuple(
    table.name
    for table in TABLES
    if table.name in SHARED_FIGURE_TABLES or any(table.name in f.tables for f in FIGURES)
)
