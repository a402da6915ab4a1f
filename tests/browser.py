"""A headless Chromium driven by Selenium, for the report's browser tests
(tests/test_browser.py): Debian's ``chromium`` and ``chromium-driver``.

OPTBENCH_BROWSER_TESTS unset or 1: run where both are installed, else skip
saying how to install them. install: apt-get install them first when missing
(``.ci/run`` sets it). 0: skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

OPT_IN = "OPTBENCH_BROWSER_TESTS"
PACKAGES = ("chromium", "chromium-driver")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def mode(environ=None) -> str:
    """'run' (installed browser only), 'install' or '' (off)."""
    value = (os.environ if environ is None else environ).get(OPT_IN, "").strip().lower()
    if value in ("", "1"):
        return "run"
    if value == "install":
        return "install"
    if value == "0":
        return ""
    raise ValueError(
        f"{OPT_IN}={value!r} is not understood. Fix: leave it unset or 1 (run the browser "
        f"tests where chromium and chromium-driver are installed), install (apt-get install "
        f"them first when missing) or 0 (skip them)."
    )


def browser() -> str | None:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    return None


def installed() -> bool:
    return browser() is not None and shutil.which(DRIVER) is not None


def install() -> None:
    """apt-get install chromium chromium-driver; an update first when the index is stale."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(command, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(command, env=env, capture_output=True, timeout=600, check=True)


def unavailable_reason(wanted: str) -> str | None:
    """Why the browser tests cannot run here (None: they can), installing first if asked."""
    if not wanted:
        return f"the browser tests are off ({OPT_IN}=0)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -r requirements-test.txt"
    if installed():
        return None
    if wanted != "install":
        return (
            "headless Chromium is not installed: apt-get install chromium chromium-driver, "
            f"or set {OPT_IN}=install to let the tests apt-get install them"
        )
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "chromium/chromium-driver are missing and apt-get (as root) is unavailable"
    try:
        install()
    except (subprocess.SubprocessError, OSError) as error:
        return f"apt-get install chromium chromium-driver failed: {error}"
    return None if installed() else "chromium/chromium-driver still missing after apt-get"


def start(width: int = 1400, height: int = 1800):
    """A headless Chromium WebDriver that keeps the pages' console messages."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root, in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.binary_location = browser()
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which(DRIVER)), options=options)


def wait_for(driver, script: str, seconds: float = 60.0):
    """Polls ``script`` (JavaScript returning a value) until it is truthy; returns it."""
    deadline = time.monotonic() + seconds
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for: {script}")
        time.sleep(0.1)


def errors(driver) -> list[dict]:
    """The console's errors since the last call (level SEVERE)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
