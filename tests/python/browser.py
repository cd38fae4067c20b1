"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver (nothing here
downloads a browser or a driver): opens each page of a running `pinpipe ui`, waits for Streamlit to
finish it, returns its text and saves a screenshot of it. The UI test uses it; so does docs/ui-and-sql.md's
screenshot:

    .venv/bin/pinpipe ui --port 8599 &
    .venv/bin/python tests/python/browser.py http://127.0.0.1:8599 docs/screenshots
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PAGES = ("insights", "explore", "realtime", "pipeline", "sql")
# where each page is: the default page (Insights) is at the root
PATHS = {"insights": ""}
# Chromium's background services reach for Google's hosts, which a closed network refuses
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2600",
)


def _finished(driver: webdriver.Chrome) -> bool:
    """The page has its title and Streamlit is not running the script any more."""
    titled = driver.find_elements(By.CSS_SELECTOR, "h1")
    running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
    return bool(titled) and not running


def open_pages(
    url: str,
    screenshots: Path,
    pages: tuple[str, ...] = PAGES,
    wait_s: float = 90,
    expected: dict[str, list[str]] | None = None,
) -> dict[str, str]:
    """Each page's visible text; its screenshot as ``screenshots/<page>.png``. With ``expected``, a
    page is read once it shows each of its texts (or after ``wait_s``): on a busy machine Streamlit
    shows its running indicator late, so a page can look finished before its script has drawn it."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        raise RuntimeError("the browser test needs Debian's chromium and chromium-driver (apt-get install them)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download anything
    screenshots.mkdir(parents=True, exist_ok=True)
    shown: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        try:
            for page in pages:
                driver.get(f"{url}/{PATHS.get(page, page)}")
                WebDriverWait(driver, wait_s, poll_frequency=0.5).until(_finished)
                texts = (expected or {}).get(page, [])
                with contextlib.suppress(TimeoutException):  # the caller's assertion says what is missing
                    WebDriverWait(driver, wait_s, poll_frequency=0.5).until(
                        lambda d, texts=texts: all(t in d.find_element(By.TAG_NAME, "body").text for t in texts)
                    )
                time.sleep(2)  # the charts draw after the script has finished
                shown[page] = driver.find_element(By.TAG_NAME, "body").text
                driver.save_screenshot(str(screenshots / f"{page}.png"))
        finally:
            driver.quit()
    return shown


if __name__ == "__main__":
    for page, text in open_pages(sys.argv[1], Path(sys.argv[2])).items():
        print(page, text.splitlines()[:3])
