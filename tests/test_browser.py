"""The report in a real browser: headless Chromium driven by Selenium
(tests/browser.py says how it is found or installed; without it these tests
skip and say why).

A small study with everything the explorer draws (tests/configs/explorer.yaml:
held-out curves, a search, a baseline) is run once with ``--report``. The
report loads with no JavaScript error; the explorer page it carries starts,
and what its charts draw after a selection is read back from the page and
checked against the run files themselves (numpy/scipy, not the explorer's
code); a screenshot is kept under pytest's temporary folder. The report of
README's first command (the session's shared default run, conftest's
``default_results``) is opened the same way, its explorer's curves checked
against the run files.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import browser
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from conftest import CONFIGS, copy_tree, snakemake

CONFIG = CONFIGS / "explorer.yaml"
RUNS = Path("results/runs/breast_cancer_mlp/bce")
SEEDS = (0, 1, 2, 3, 4, 5)  # tests/configs/explorer.yaml


@pytest.fixture(scope="module")
def driver():
    reason = browser.unavailable_reason(browser.mode())
    if reason:
        pytest.skip(f"browser tests skipped: {reason}")
    session = browser.start()
    yield session
    session.quit()


@pytest.fixture(scope="module")
def study(tmp_path_factory, driver):
    """The explorer study run once, with its report; the workdir."""
    workdir = tmp_path_factory.mktemp("explorer")
    snakemake(workdir, "--cores", "2", configfile=CONFIG)
    snakemake(workdir, "--report", "results/report.html", configfile=CONFIG)
    return workdir


def embedded_explorer(report: Path, name: str = "explorer.html") -> str:
    """A page as the report carries it (a base64 data: URL): by default the explorer."""
    pattern = f"filename={re.escape(name)};base64,([A-Za-z0-9+/=]+)"
    found = re.search(pattern, report.read_text())
    assert found, f"the report does not carry {name}"
    return base64.b64decode(found.group(1)).decode("utf-8")


@pytest.fixture(scope="module")
def page(study, driver, tmp_path_factory):
    """The report's copy of the explorer, opened and started."""
    path = tmp_path_factory.mktemp("page") / "explorer.html"
    path.write_text(embedded_explorer(study / "results/report.html"))
    driver.get(path.as_uri())
    browser.wait_for(
        driver,
        "var b = document.body; return b.getAttribute('data-ready') || "
        "b.getAttribute('data-error')",
    )
    assert driver.execute_script("return document.body.getAttribute('data-error')") is None
    return driver


def seed_losses(workdir: Path, optimizer: str, variant: str, seed: int) -> np.ndarray:
    table = pd.read_csv(workdir / RUNS / optimizer / variant / f"seed{seed}.tsv", sep="\t")
    return table["loss"].to_numpy(dtype=np.float64)


def same_curve(drawn_values, expected) -> None:
    """The page draws values to 1/2000 decade (0.12 %; optbench.reporting.explorer)."""
    np.testing.assert_allclose(drawn_values, expected, rtol=1.2e-3)


def drawn(driver) -> list[list[dict]]:
    """Each curve panel's traces as the page draws them (name, x, y)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#curves .chart')).map(d => "
        "d.data.map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)})))"
    )


def choose(driver, field: str, values: list[str]) -> None:
    from selenium.webdriver.support.ui import Select

    select = Select(driver.find_element("id", f"select-{field}"))
    select.deselect_all()
    for value in values:
        select.select_by_value(value)


def click_radio(driver, name: str, value: str) -> None:
    driver.find_element("css selector", f"input[name={name}][value={value}]").click()


def test_the_report_loads_with_no_javascript_error(study, driver):
    driver.get((study / "results/report.html").as_uri())
    browser.wait_for(driver, "return document.readyState === 'complete'")
    browser.wait_for(driver, "return document.body.innerText.length > 0")
    assert browser.errors(driver) == []


def click_text(driver, text: str) -> None:
    """Clicks the report's visible element whose own text is ``text``."""
    xpath = f"//*[normalize-space(text())='{text}']"
    elements = [each for each in driver.find_elements("xpath", xpath) if each.is_displayed()]
    assert elements, f"the report shows no {text!r}"
    elements[0].click()


def test_every_category_and_subcategory_of_the_report_opens(study, driver):
    """A reader clicks through the report's menu: each category, and each
    subcategory of one that has several, lists its results without a
    JavaScript error (a study of one problem and one loss once made Snakemake's
    report take the loss curves' labels for an on/off toggle, and that list
    went blank)."""
    report = (study / "results/report.html").as_uri()
    driver.get(report)
    browser.wait_for(driver, "return document.body.innerText.includes('0 Answer')")
    menu = driver.execute_script(
        "return Object.keys(categories).map(c => [c, Object.keys(categories[c])])"
    )
    assert len(menu) >= 5, menu
    opened = 0
    for category, subcategories in menu:
        for subcategory in subcategories if len(subcategories) > 1 else [None]:
            driver.get(report)
            browser.wait_for(driver, "return document.body.innerText.includes('0 Answer')")
            click_text(driver, category)
            if subcategory is not None:
                click_text(driver, subcategory)
            where = f"{category} > {subcategory}" if subcategory else category
            assert browser.errors(driver) == [], where
            # The list of results is drawn: at least one row with its eye icon.
            rows = driver.execute_script("return document.querySelectorAll('tbody tr').length")
            assert rows > 0, f"{where} lists no result"
            opened += 1
    assert opened > len(menu)  # some category has several subcategories


def open_explorer_frame(driver, report: Path) -> None:
    """As a reader opens it: the report, category 0 Answer, then the explorer's
    eye icon; switches into the frame the report shows it in, once the page
    says it is ready or failed (the caller switches back)."""
    driver.get(report.as_uri())
    browser.wait_for(driver, "return document.body.innerText.includes('0 Answer')")
    driver.find_element("xpath", "//span[text()='0 Answer']").click()
    eye = "//td[normalize-space(text())='explorer']/following-sibling::td//a[@iconname='eye']"
    browser.wait_for(driver, f'return document.evaluate("{eye}", document).iterateNext()')
    driver.find_element("xpath", eye).click()
    driver.switch_to.frame(browser.wait_for(driver, "return document.querySelector('iframe')"))
    browser.wait_for(
        driver,
        "var b = document.body; return b && (b.getAttribute('data-ready') || "
        "b.getAttribute('data-error'))",
    )


def test_the_explorer_opens_inside_the_report(study, driver):
    """As a reader opens it: category 0 Answer, then the explorer's eye icon; the
    report shows it in a frame from a data: URL (Chromium opens none over 2 MiB)."""
    try:
        open_explorer_frame(driver, study / "results/report.html")
        assert driver.execute_script("return document.body.getAttribute('data-ready')") == "1"
        assert driver.execute_script("return document.querySelectorAll('#curves .chart').length")
    finally:
        driver.switch_to.default_content()
    assert browser.errors(driver) == []


def test_the_explorer_starts_with_no_javascript_error(page):
    assert page.execute_script("return document.body.getAttribute('data-ready')") == "1"
    assert browser.errors(page) == []
    # Offline: the drawing code is inside the page, nothing is fetched.
    assert page.execute_script("return typeof Charts") == "object"
    assert page.execute_script("return document.querySelectorAll('script[src]').length") == 0


def test_a_selection_changes_the_lines_the_chart_draws(page, study):
    click_radio(page, "seeds", "band")
    choose(page, "optimizer", ["sgd"])
    choose(page, "variant", ["base"])
    (panel,) = drawn(page)
    centre = [trace for trace in panel if not trace["name"].endswith("band")]
    assert [trace["name"] for trace in centre] == ["sgd base"]
    runs = np.array([seed_losses(study, "sgd", "base", seed) for seed in SEEDS])
    assert centre[0]["x"] == list(range(12))
    # The band's centre is the geometric mean over the seeds (config band geomean_ci95).
    same_curve(centre[0]["y"], stats.gmean(runs, axis=0))

    click_radio(page, "seeds", "lines")
    (panel,) = drawn(page)
    assert [trace["name"] for trace in panel] == [f"sgd base seed {s}" for s in SEEDS]
    for trace, losses in zip(panel, runs, strict=True):
        same_curve(trace["y"], losses)

    choose(page, "optimizer", ["adam"])
    (panel,) = drawn(page)
    assert [trace["name"] for trace in panel] == [f"adam base seed {s}" for s in SEEDS]
    same_curve(panel[0]["y"], seed_losses(study, "adam", "base", 0))


def test_held_out_curves_and_log_axes(page, study):
    choose(page, "optimizer", ["sgd"])
    choose(page, "variant", ["base"])
    click_radio(page, "seeds", "lines")
    click_radio(page, "metric", "heldout")
    (panel,) = drawn(page)
    for seed, trace in zip(SEEDS, panel, strict=True):
        sidecar = json.loads((study / RUNS / "sgd/base" / f"seed{seed}.json").read_text())
        curve = sidecar["heldout_curve"]
        assert trace["x"] == [point["step"] for point in curve] == [4, 8, 12]
        same_curve(trace["y"], [point["heldout_loss"] for point in curve])
    click_radio(page, "xscale", "true")
    click_radio(page, "yscale", "false")
    axes = page.execute_script(
        "var l = document.getElementById('curves-0').layout; return [l.xaxis.type, l.yaxis.type]"
    )
    assert axes == ["log", "linear"]
    click_radio(page, "metric", "train")
    click_radio(page, "xscale", "false")
    click_radio(page, "yscale", "true")


def test_clicking_a_trial_in_the_sensitivity_view_shows_its_runs(page, study):
    from selenium.webdriver.common.action_chains import ActionChains

    choose(page, "optimizer", ["sgd", "adam"])
    sensitivity = pd.read_csv(study / "results/summary/sensitivity.tsv", sep="\t")
    trials = sensitivity[sensitivity["parameter"] == "lr"].sort_values("value")
    drawn_x = page.execute_script(
        "return document.getElementById('sensitivity').data.map(t => Array.from(t.x))"
    )
    assert sorted(x for trace in drawn_x for x in trace) == pytest.approx(list(trials["value"]))
    # A real click on the point of the largest learning rate.
    points = page.find_elements("css selector", "#sensitivity .scatterlayer .point")
    assert len(points) == len(trials)
    rightmost = max(points, key=lambda point: point.rect["x"])
    ActionChains(page).move_to_element(rightmost).click().perform()
    browser.wait_for(page, "return document.getElementById('trial-note').textContent")
    variant = trials.iloc[-1]["variant"]
    (panel,) = drawn(page)
    # Its runs on the tuning seeds (tests/configs/explorer.yaml), one line each.
    assert [trace["name"] for trace in panel] == [f"adam {variant} seed {s}" for s in (100, 101)]
    same_curve(panel[0]["y"], seed_losses(study, "adam", variant, 100))
    assert browser.errors(page) == []


def error_bar_traces(page, chart: str, hover: str | None = None) -> list[dict]:
    """The traces an explorer chart draws: name, y and its error bars (and ``hover``'s data)."""
    extra = f", hover: Array.from(t.{hover})" if hover else ""
    return page.execute_script(
        f"return document.getElementById('{chart}').data.map(t => ({{name: t.name, "
        "y: Array.from(t.y), plus: Array.from(t.error_y.array), "
        f"minus: Array.from(t.error_y.arrayminus){extra}}}))"
    )


def test_speedups_are_drawn_with_their_intervals(page, study):
    baseline = pd.read_csv(study / "results/summary/baseline.tsv", sep="\t")
    traces = error_bar_traces(page, "speedups")
    steps = next(trace for trace in traces if trace["name"] == "speed-up in steps")
    finite = baseline[np.isfinite(baseline["speedup"])]
    assert len(finite) >= 1
    assert steps["y"] == pytest.approx(list(finite["speedup"]))
    # Six seeds: an exact interval (tests/configs/explorer.yaml), drawn as the error bar.
    assert np.isfinite(finite["speedup_low"]).all() and np.isfinite(finite["speedup_high"]).all()
    assert steps["plus"] == pytest.approx(list(finite["speedup_high"] - finite["speedup"]))
    assert steps["minus"] == pytest.approx(list(finite["speedup"] - finite["speedup_low"]))


def test_best_of_k_is_drawn_with_its_intervals(page, study):
    table = pd.read_csv(study / "results/summary/best_of_k.tsv", sep="\t")
    traces = error_bar_traces(page, "bestofk", hover="customdata")
    adam = table[table["optimizer"] == "adam"]
    (drawn_adam,) = [trace for trace in traces if trace["name"].startswith("adam ")]
    # 6 evaluation and 2 tuning seeds (tests/configs/explorer.yaml): an interval at every k
    assert adam["ci_method"].str.startswith("percentile bootstrap").all()
    assert drawn_adam["y"] == pytest.approx(list(adam["expected_log10"]))
    assert drawn_adam["plus"] == pytest.approx(list(adam["expected_high"] - adam["expected_log10"]))
    assert drawn_adam["minus"] == pytest.approx(list(adam["expected_log10"] - adam["expected_low"]))
    assert all("percentile bootstrap over seeds" in text for text in drawn_adam["hover"])


def test_tables_sort_and_filter(page, study):
    table = pd.read_csv(study / "results/summary/sensitivity.tsv", sep="\t", keep_default_na=False)
    box = page.find_element("id", "filter-sensitivity")
    box.clear()
    box.send_keys("adam lr")
    shown = page.execute_script(
        "return Array.from(document.querySelectorAll('#tab-sensitivity tbody tr'))"
        ".filter(r => r.style.display !== 'none').length"
    )
    words = table.astype(str).agg(" ".join, axis=1).str.lower()
    assert shown == int((words.str.contains("adam") & words.str.contains("lr")).sum())
    box.clear()
    box.send_keys(" ")
    header = page.find_elements("css selector", "#tab-sensitivity thead th")
    column = list(table.columns).index("geo_mean")
    header[column].click()
    order = page.execute_script(
        f"return Array.from(document.querySelectorAll('#tab-sensitivity tbody tr'))"
        f".map(r => Number(r.cells[{column}].title))"
    )
    assert order == sorted(pd.to_numeric(table["geo_mean"]).tolist())


def test_a_screenshot_is_kept(page, tmp_path_factory):
    from matplotlib.image import imread

    shot = tmp_path_factory.mktemp("artifacts") / "explorer.png"
    page.execute_script("window.scrollTo(0, 0)")
    assert page.save_screenshot(str(shot))
    pixels = imread(shot)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    # Not a blank page: the charts put many colours on it.
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[:, :3], axis=0)) > 50
    print(f"screenshot: {shot}")


def test_every_table_page_of_the_report_sorts_and_filters(study, driver, tmp_path):
    """The report's own table pages (optbench.reporting.tablepages), not only the
    explorer's tables: the sensitivity page, filtered and sorted in the browser,
    a number's full value shown under the pointer."""
    from selenium.webdriver.common.action_chains import ActionChains

    path = tmp_path / "sensitivity.html"
    path.write_text(embedded_explorer(study / "results/report.html", "sensitivity.html"))
    driver.get(path.as_uri())
    table = pd.read_csv(study / "results/summary/sensitivity.tsv", sep="\t", keep_default_na=False)
    words = table.astype(str).agg(" ".join, axis=1).str.lower()
    driver.find_element("id", "filter").send_keys("adam LR")
    visible = (
        "Array.from(document.querySelectorAll('tbody tr')).filter(r => r.style.display !== 'none')"
    )
    shown = driver.execute_script(f"return {visible}.length")
    assert shown == int((words.str.contains("adam") & words.str.contains("lr")).sum()) > 0
    assert driver.find_element("id", "shown").text == f"{shown} of {len(table)} rows shown"
    column = list(table.columns).index("geo_mean")
    driver.find_elements("css selector", "thead th")[column].click()
    order = driver.execute_script(
        f"return {visible}.map(r => Number(r.cells[{column}].getAttribute('data-v')))"
    )
    kept = table[words.str.contains("adam") & words.str.contains("lr")]
    assert order == sorted(pd.to_numeric(kept["geo_mean"]).tolist())
    # The pointer on a number shows its full value (written once, as data-v).
    cell = driver.execute_script(f"return {visible}[0].cells[{column}]")
    assert cell.get_attribute("title") in ("", None)
    ActionChains(driver).move_to_element(cell).perform()
    assert cell.get_attribute("title") == cell.get_attribute("data-v") != cell.text
    assert float(cell.get_attribute("title")) == min(pd.to_numeric(kept["geo_mean"]))
    assert browser.errors(driver) == []


def test_the_default_runs_report_opens_with_a_working_explorer(
    default_results, driver, tmp_path, tmp_path_factory
):
    """README's first command's report (the session's shared default run, copied:
    the report is written into the study's folder): it opens in the browser, the
    explorer starts inside it and draws each optimizer's curve on its first
    (problem, loss), the geometric mean over the seeds of the run files."""
    workdir = copy_tree(default_results, tmp_path / "default")
    snakemake(workdir, "--report", "results/report.html")
    try:
        open_explorer_frame(driver, workdir / "results/report.html")
        assert driver.execute_script("return document.body.getAttribute('data-error')") is None
        click_radio(driver, "seeds", "band")
        title = driver.execute_script(
            "return document.getElementById('curves-0').layout.title.text"
        )
        problem, loss = title.split(":")[0].split(" / ")
        (panel, *_) = drawn(driver)
        shot = tmp_path_factory.mktemp("artifacts") / "default_explorer.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.switch_to.default_content()
    assert browser.errors(driver) == []
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    centres = [trace for trace in panel if not trace["name"].endswith("band")]
    assert [trace["name"] for trace in centres] == [f"{name} base" for name in config["optimizers"]]
    runs = workdir / "results/runs" / problem / loss
    for trace, optimizer in zip(centres, config["optimizers"], strict=True):
        losses = np.array(
            [
                pd.read_csv(runs / optimizer / "base" / f"seed{seed}.tsv", sep="\t")["loss"]
                for seed in config["seeds"]
            ]
        )
        assert trace["x"] == list(range(config["steps"]))
        same_curve(trace["y"], stats.gmean(losses, axis=0))
    print(f"screenshot: {shot}")
