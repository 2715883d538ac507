"""The landing page in headless Chromium: upload a real cat photo, see "cat" rendered."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.local_server import ROOT, gunicorn
from tests.helpers import require_tool

ARTIFACTS = ROOT / "build" / "test-artifacts"


@pytest.mark.integration
def test_upload_a_cat_photo_through_the_page(real_photos: Path, tmp_path: Path) -> None:
    chromium, driver_path = require_tool("chromium"), require_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = real_photos / "Cat" / "1.jpg"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=900,1000",
    ):
        options.add_argument(flag)
    with gunicorn(tmp_path, ROOT / "models", workers=1) as server:
        browser = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            browser.set_page_load_timeout(30)
            browser.get(server.url + "/")
            assert "Cat or dog" in browser.title
            browser.find_element(By.ID, "file").send_keys(str(photo))
            WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "label").text.strip() != "")
            label = browser.find_element(By.ID, "label").text.strip().lower()
            confidence = browser.find_element(By.ID, "confidence").text
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "landing-page-cat.png"))
            browser.find_element(By.CSS_SELECTOR, 'button[data-label="cat"]').click()
            WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "feedback-status").text != "")
            feedback = browser.find_element(By.ID, "feedback-status").text
        finally:
            browser.quit()
    assert label == "cat"
    assert confidence.endswith("% sure")
    assert feedback == "Thank you!"
