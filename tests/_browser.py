"""Headless Chromium for page tests (selenium + Debian's `chromium` and `chromium-driver`; `.ci/run` installs
them). The `browser` fixture skips, naming what is missing, when they are not there."""

from __future__ import annotations

import shutil
import tempfile

import pytest

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


def _binary(*names: str) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    chrome, driver_bin = _binary("chromium", "chromium-browser"), _binary("chromedriver")
    if chrome is None or driver_bin is None:
        pytest.skip("headless Chromium not found: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1100,900")
    profile = tempfile.mkdtemp(prefix="redraft-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = chrome
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_bin))
    except Exception as e:  # a broken install: skip with the reason rather than fail every page test
        pytest.skip(f"headless Chromium did not start: {type(e).__name__}: {str(e).splitlines()[0]}")
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
