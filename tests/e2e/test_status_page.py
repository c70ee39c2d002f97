"""The status page in a real browser: Debian's headless Chromium, driven by Selenium through Debian's chromedriver.

The daemon is the real ``cekura-scheduler run`` process, with a token, against the simulator. The browser signs
in, reads the jobs table, presses run-now and sees the new fire, presses pause and sees who paused, sees a silence
set from the command line, sees the banner of an invalid jobs.toml, and checks that the page fits a phone's width.
A screenshot is left in the test's tmp_path (docs/status-page.png is a copy of one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.simulator import Simulator
from tests.conftest import API_KEY, clean_environment, cli, wait_until
from tests.e2e.test_web import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "browser-test-token-0123456789"

JOBS = """
[daemon]
poll_interval = "1s"
poll_max_interval = "1s"

[defaults]
overlap = "allow"

[jobs.smoke]
every = "2s"
agent = 12
scenarios = [101, 102]

[jobs.checkout-flow]
every = "3s"
timezone = "Europe/Paris"
endpoint = "pipecat_v2"
scenarios = [203]

[jobs.nightly]
cron = "0 3 * * *"
timezone = "America/New_York"
agent = 34
scenarios = [301, 302]
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium; the test is skipped only when Debian's chromium and chromium-driver are missing."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        missing = "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: .ci/run installs them, CI must not skip this test")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,760",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def daemon(tmp_path: Path, simulator: Simulator) -> Iterator[tuple[str, dict[str, str]]]:
    """``cekura-scheduler run`` with its HTTP server on a free local port and a token: its URL and environment."""
    simulator.config.behaviours = {203: ["pass", "pass", "fail", "pass", "fail", "fail", "pass"]}
    (tmp_path / "jobs.toml").write_text(JOBS)
    port = free_port()
    env = clean_environment(
        SCHEDULER_CONFIG=str(tmp_path / "jobs.toml"),
        SCHEDULER_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}",
        SCHEDULER_HTTP_ADDR=f"127.0.0.1:{port}",
        SCHEDULER_HTTP_TOKEN=TOKEN,
        CEKURA_API_KEY=API_KEY,
        CEKURA_BASE_URL=simulator.base_url,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait(lambda: cli("check", env=env).returncode == 0, "the daemon to answer /healthz", within=30)
        yield f"http://127.0.0.1:{port}", env
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=40)
    assert process.returncode == 0, stderr


def _wait(condition: Callable[[], bool], what: str, within: float = 20.0) -> None:
    try:
        wait_until(condition, timeout=within, interval=0.2)
    except AssertionError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _row(driver: Any, job: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'tr[data-job="{job}"]')


def _marks(driver: Any, job: str) -> list[tuple[str, str]]:
    """The job's outcome marks on the page now: (fire id, class)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return [
            (mark.get_attribute("data-fire") or "", mark.get_attribute("class") or "")
            for mark in _row(driver, job).find_elements(By.CSS_SELECTOR, "a.m")
        ]
    except StaleElementReferenceException:  # the page refreshed itself meanwhile
        return _marks(driver, job)


def test_the_status_page_in_a_browser(browser: Any, daemon: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    daemon_url, env = daemon
    driver.get(daemon_url + "/")
    assert "sign in" in driver.title
    driver.find_element(By.NAME, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    _wait(lambda: bool(driver.find_elements(By.ID, "jobs")), "the jobs table")

    rows = driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
    assert [row.get_attribute("data-job") for row in rows] == ["smoke", "checkout-flow", "nightly"]
    assert "At 03:00, every day, in America/New_York" in _row(driver, "nightly").text
    assert "Every 2 seconds" in _row(driver, "smoke").text
    assert _marks(driver, "nightly") == []

    def outcomes_shown() -> bool:
        driver.refresh()
        classes = {css for _, css in _marks(driver, "checkout-flow")}
        return len(_marks(driver, "smoke")) >= 4 and {"m passed", "m failed"} <= classes

    _wait(outcomes_shown, "passed and failed marks")
    tooltip = _row(driver, "smoke").find_element(By.CSS_SELECTOR, "a.m.passed").get_attribute("title") or ""
    assert " UTC · passed · result 90" in tooltip

    _row(driver, "nightly").find_element(By.CSS_SELECTOR, 'button[data-action="trigger"]').click()
    _wait(lambda: "done=triggered" in driver.current_url, "the page after run-now")
    notice = driver.find_element(By.CSS_SELECTOR, ".banner.note").text
    assert notice.startswith("nightly triggered (fire ")
    fire_id = notice.removeprefix("nightly triggered (fire ").rstrip(").")
    assert [fire for fire, _ in _marks(driver, "nightly")] == [fire_id]

    def nightly_passed() -> bool:
        driver.get(daemon_url + "/")
        return _marks(driver, "nightly") == [(fire_id, "m passed")]

    _wait(nightly_passed, "the manual fire's outcome")

    # Pause and silence: who, until when and why, on the row of the job.
    _row(driver, "nightly").find_element(By.CSS_SELECTOR, 'button[data-action="pause"]').click()
    _wait(lambda: "done=paused" in driver.current_url, "the page after pause")
    held = _row(driver, "nightly").find_element(By.CSS_SELECTOR, '[data-hold="pause"]')
    assert held.is_displayed() and held.text == "paused by status page (127.0.0.1) until resumed: paused over HTTP"
    assert _row(driver, "nightly").find_elements(By.CSS_SELECTOR, 'button[data-action="resume"]')
    silenced = cli("silence", "checkout-flow", "--for", "2h", "--reason", "known outage", "--by", "ops", env=env)
    assert silenced.returncode == 0, silenced.stderr
    driver.get(daemon_url + "/")
    held = _row(driver, "checkout-flow").find_element(By.CSS_SELECTOR, '[data-hold="silence"]')
    assert held.is_displayed() and held.text.startswith("alerts silenced by ops until 20")
    assert held.text.endswith((" CET: known outage", " CEST: known outage"))  # in the job's zone, Europe/Paris
    assert not _row(driver, "smoke").find_elements(By.CSS_SELECTOR, "[data-hold]")
    driver.save_screenshot(str(tmp_path / "status-page.png"))
    assert (tmp_path / "status-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    driver.set_window_size(390, 844)  # a phone: the table turns into cards, nothing scrolls sideways
    driver.refresh()
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    driver.set_window_size(1280, 760)

    (tmp_path / "jobs.toml").write_text(JOBS + "\nfrequncy = 2\n")

    def banner_shown() -> bool:
        driver.get(daemon_url + "/")
        return bool(driver.find_elements(By.ID, "config-invalid"))

    _wait(banner_shown, "the invalid-config banner")
    banner = driver.find_element(By.ID, "config-invalid").text
    assert "CONFIG INVALID" in banner and "unknown key 'frequncy' (did you mean 'frequency'?)" in banner
    assert len(_marks(driver, "smoke")) >= 4  # the previous version keeps running
