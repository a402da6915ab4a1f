"""Figures for papers (optbench.reporting.figures, docs/report.md "Figures for
papers"): each figure also as vector PDF and SVG, one column wide for one
panel and two columns for several, 8 pt text, TrueType fonts in the PDF and
text kept as text in the SVG; the report's PNG as it was."""

from __future__ import annotations

import re

import matplotlib
import numpy as np
import pytest

from optbench.reporting import figures

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

POINTS_PER_INCH = 72
LONG_TITLE = "A title as long as the analysis writes them, " * 3


def draw(paths, panels: int = 1) -> None:
    """A figure like the pipeline's: 6.4 in wide a panel (4.6 in for several)."""
    width = 6.4 if panels == 1 else 4.6 * panels
    fig, axes = plt.subplots(1, panels, figsize=(width, 4.4), squeeze=False)
    for ax in axes.flat:
        ax.plot(np.arange(10), np.arange(10) ** 2, label="adam")
        ax.set_title(LONG_TITLE)
        ax.set_xlabel("step")
        ax.legend()
    fig.suptitle(LONG_TITLE)
    figures.save(fig, paths)


def pdf_width_inches(path) -> float:
    box = re.search(rb"/MediaBox \[ *([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", path.read_bytes())
    return (float(box.group(3)) - float(box.group(1))) / POINTS_PER_INCH


@pytest.mark.parametrize(("panels", "width"), [(1, 3.5), (3, 7.16)])
def test_vector_figures_are_one_or_two_columns_wide(tmp_path, panels, width):
    paths = [tmp_path / f"f.{ext}" for ext in ("png", "pdf", "svg")]
    figures.in_both_styles(lambda p: draw(p, panels), paths)
    assert pdf_width_inches(paths[1]) == pytest.approx(width, abs=0.1)
    svg = paths[2].read_text()
    svg_width = float(re.search(r'<svg[^>]* width="([\d.]+)pt"', svg).group(1))
    assert svg_width / POINTS_PER_INCH == pytest.approx(width, abs=0.1)


def test_vector_figures_keep_text_and_embed_truetype_fonts(tmp_path):
    paths = [tmp_path / "f.pdf", tmp_path / "f.svg"]
    figures.in_both_styles(draw, paths)
    pdf = paths[0].read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType, as journals ask
    svg = paths[1].read_text()
    # Text stays text, at the paper style's sizes (8 pt titles and labels, 7 pt ticks).
    assert "<text" in svg and "font-size: 8px" in svg and "font-size: 7px" in svg
    # The style is left as it was found.
    assert matplotlib.rcParams["font.size"] == 10.0


def test_the_reports_png_is_drawn_as_before(tmp_path):
    figures.in_both_styles(draw, [tmp_path / "both.png", tmp_path / "both.pdf"])
    draw([tmp_path / "alone.png"])
    assert (tmp_path / "both.png").read_bytes() == (tmp_path / "alone.png").read_bytes()


def test_paper_widths_by_the_drawn_width():
    assert figures.paper_width(6.4) == figures.ONE_COLUMN == 3.5
    assert figures.paper_width(13.8) == figures.TWO_COLUMNS == 7.16
