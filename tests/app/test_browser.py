"""The landing page in headless Chromium: upload a real cat photo, see "cat" rendered; a camera
photo goes up shrunk and upright; a file that is no photo gets the server's reason; a stopped
server gets a message."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import require_tool
from tests.serving import metric_sum
from tools.local_server import ROOT, Server, gunicorn

ARTIFACTS = ROOT / "build" / "test-artifacts"
pytestmark = pytest.mark.servers


@pytest.fixture
def page(tmp_path: Path) -> Iterator[tuple[Any, Server]]:
    """Headless Chromium on the landing page of the real server with the release model."""
    chromium, driver_path = require_tool("chromium"), require_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for console_errors()
    # Batches of 2, so that three photos chosen at once take the page two requests.
    with gunicorn(tmp_path, ROOT / "models", workers=1, extra_env={"MAX_BATCH_FILES": "2"}) as server:
        browser = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            browser.set_page_load_timeout(30)
            browser.get(server.url + "/")
            assert "Cat or dog" in browser.title
            yield browser, server
        finally:
            browser.quit()


@pytest.fixture
def not_a_photo(tmp_path: Path) -> Path:
    """A file named like a photo that is none: the browser cannot decode it, so it goes up as it is."""
    fake = tmp_path / "notes.jpg"
    fake.write_text("adoption notes, not a photo\n")
    return fake


def console_errors(browser: Any) -> list[str]:
    """What the page's console reported as errors since the last call: a script's exception, a
    resource that failed to load, anything the Content-Security-Policy refused."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


# WCAG 2.2 levels A and AA, and Deque's best practices: what staff who use a screen reader, a
# keyboard or a magnifier meet on the page (axe-core, pinned in tests/package-lock.json).
AXE = ROOT / "tests" / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
_RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document, { runOnly: { type: "tag", values: arguments[0] } })
  .then((r) => done(r.violations.flatMap((v) => v.nodes.map((n) =>
    `${v.id} (${v.impact}): ${n.target.join(" ")}: ${n.failureSummary}`))))
  .catch((e) => done([`axe failed: ${e}`]));
"""


@functools.cache
def _axe_source() -> str:
    return Path(require_tool(str(AXE), "make node-tools")).read_text()


def accessibility_violations(browser: Any) -> list[str]:
    """axe-core's findings on the page as it stands, one line per element."""
    if browser.execute_script("return typeof axe") == "undefined":  # once per page load
        browser.execute_script(_axe_source())
    browser.set_script_timeout(60)
    return list(browser.execute_async_script(_RUN_AXE, AXE_TAGS))


def send_feedback(browser: Any, label: str) -> str:
    """Press "It is a <label>"; what the page then says of the feedback."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.CSS_SELECTOR, f'button[data-label="{label}"]').click()
    return str(WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "feedback-status").text))


def upload(browser: Any, photo: Path) -> str:
    """Choose ``photo`` on the page; the label it shows, or the error it shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.ID, "file").send_keys(str(photo))

    def answer(b: Any) -> str:
        return str(b.find_element(By.ID, "label").text.strip() or b.find_element(By.ID, "error").text.strip())

    return WebDriverWait(browser, 60).until(answer)


def test_upload_a_cat_photo_through_the_page(page: tuple[Any, Server], real_photos: Path) -> None:
    from selenium.webdriver.common.by import By

    browser, server = page
    photo = real_photos / "Cat" / "1.jpg"
    label = upload(browser, photo).lower()
    confidence = browser.find_element(By.ID, "confidence").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "landing-page-cat.png"))
    thanks = send_feedback(browser, "cat")
    assert label == "cat"
    assert confidence.endswith("% sure")
    assert thanks == "Thank you!"
    # Under the API's Content-Security-Policy: the page, its icon, the preview, both fetches.
    assert console_errors(browser) == []
    assert browser.find_element(By.ID, "preview").get_property("naturalWidth") > 0  # shown from a blob: URL
    # A photo already below twice the model's input size goes up as it is.
    assert metric_sum(server.url, "input_image_bytes_sum") == photo.stat().st_size


def test_a_page_of_paperwork_is_answered_with_a_warning_that_it_is_no_pet(
    page: tuple[Any, Server], real_photos: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.nonpets import non_pets

    browser, _ = page
    form = tmp_path / "intake-form.png"
    form.write_bytes(dict(non_pets())["document/0"])
    assert upload(browser, form).lower() in ("cat", "dog")  # the answer still names a class
    warning = browser.find_element(By.ID, "not-a-pet")
    assert warning.is_displayed() and warning.text == "This does not look like a cat or a dog."
    assert (
        browser.find_element(By.ID, "answer")
        .get_attribute("textContent")
        .endswith("This does not look like a cat or a dog")
    )  # what a screen reader announces
    assert accessibility_violations(browser) == []
    upload(browser, real_photos / "Cat" / "1.jpg")
    WebDriverWait(browser, 30).until(lambda b: not b.find_element(By.ID, "not-a-pet").is_displayed())


def test_a_camera_photo_goes_up_shrunk_to_twice_the_model_input(
    page: tuple[Any, Server], real_photos: Path, tmp_path: Path
) -> None:
    from tools.jpeg_samples import camera_jpeg

    browser, server = page
    big = tmp_path / "camera.jpg"
    big.write_bytes(camera_jpeg(real_photos / "Cat" / "1.jpg"))  # 4000x3000, 2.8 MB
    assert upload(browser, big).lower() == "cat"
    # Short side 2 x image_size (256 in models/model.json), aspect kept: 683 x 512, which the
    # server decodes at half scale (draft mode) to 342 x 256 pixels.
    assert metric_sum(server.url, "input_image_pixels_sum") == 342 * 256
    sent = metric_sum(server.url, "input_image_bytes_sum")
    assert sent < big.stat().st_size / 10, f"the page sent {sent:.0f} of {big.stat().st_size} bytes"


# Records what the page hands to fetch(): the sent photo's displayed size, bytes and type.
_RECORD_UPLOADS = """
const send = window.fetch;
window.sent = [];
window.fetch = async (url, options) => {
  const file = options && options.body instanceof FormData ? options.body.get("file") : null;
  if (file) {
    const bitmap = await createImageBitmap(file);
    window.sent.push([bitmap.width, bitmap.height, file.size, file.type]);
  }
  return send(url, options);
};
"""


def test_a_rotated_camera_photo_goes_up_upright(page: tuple[Any, Server], real_photos: Path, tmp_path: Path) -> None:
    """Phones store landscape pixels and an EXIF orientation: the page must send what the
    photo shows (portrait), since the shrunk JPEG carries no EXIF of its own."""
    from PIL import Image

    browser, _ = page
    upright = Image.open(real_photos / "Cat" / "1.jpg").convert("RGB").resize((3000, 4000))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise
    rotated = tmp_path / "rotated.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, "JPEG", quality=92, exif=exif)  # 4000 x 3000 stored
    browser.execute_script(_RECORD_UPLOADS)
    assert upload(browser, rotated).lower() == "cat"
    width, height, size, kind = browser.execute_script("return window.sent[0]")
    assert (width, height, kind) == (512, 683, "image/jpeg")
    assert size < rotated.stat().st_size / 10


def test_a_file_that_is_no_photo_gets_the_servers_reason(page: tuple[Any, Server], not_a_photo: Path) -> None:
    browser, server = page
    shown = upload(browser, not_a_photo)
    api = requests.post(f"{server.url}/predict", files={"file": not_a_photo.open("rb")}, timeout=10)
    assert api.status_code == 415 and shown == api.json()["detail"], shown


def test_the_page_says_so_when_the_service_cannot_be_reached(page: tuple[Any, Server], real_photos: Path) -> None:
    from selenium.webdriver.common.by import By

    browser, server = page
    server.process.terminate()
    server.process.wait(timeout=30)
    assert upload(browser, real_photos / "Cat" / "1.jpg").startswith("the service could not be reached")
    assert browser.find_element(By.ID, "file").is_enabled()  # and the page takes another photo


def test_swagger_ui_shows_every_operation_under_the_apis_content_security_policy(page: tuple[Any, Server]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from app import SECURITY_HEADERS

    browser, server = page
    docs = requests.get(f"{server.url}/docs", timeout=10)
    assert docs.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    browser.get(f"{server.url}/docs")
    WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock")) == operations)
    browser.find_element(By.CSS_SELECTOR, ".opblock-summary").click()  # one opened: its parameters drawn
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-body"))
    assert console_errors(browser) == []


def test_the_page_passes_an_accessibility_audit_as_it_changes(
    page: tuple[Any, Server], real_photos: Path, not_a_photo: Path
) -> None:
    browser, _ = page
    found = {"as loaded": accessibility_violations(browser)}
    upload(browser, real_photos / "Dog" / "1.jpg")
    found["with an answer"] = accessibility_violations(browser)
    upload(browser, not_a_photo)
    found["with an error"] = accessibility_violations(browser)
    upload(browser, real_photos / "Dog" / "1.jpg")
    browser.set_window_size(320, 800)  # a phone: WCAG 1.4.10 reflow at 320 CSS pixels
    found["320 px wide"] = accessibility_violations(browser)
    width, room = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert room == 320 and width <= room, f"the page is {width} px wide in a {room} px window"
    browser.set_window_size(900, 1000)
    dark = {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", dark)
    page_colour = "return getComputedStyle(document.documentElement).backgroundColor"
    assert browser.execute_script(page_colour) == "rgb(23, 25, 35)"  # the dark colours apply
    found["dark, with an answer"] = accessibility_violations(browser)
    upload(browser, not_a_photo)
    found["dark, with an error"] = accessibility_violations(browser)
    assert found == {state: [] for state in found}


def test_a_keyboard_user_sees_where_they_are_and_keeps_their_place(page: tuple[Any, Server], real_photos: Path) -> None:
    """The file input itself is invisible (the drop zone is what people see), so the drop zone
    must show keyboard focus; and classifying must not throw the focus back to the page's top."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser, _ = page
    outline = "return getComputedStyle(document.getElementById('drop')).outlineStyle"
    assert browser.execute_script(outline) == "none"
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.execute_script("return document.activeElement.id") == "file"
    assert browser.execute_script(outline) != "none"
    assert upload(browser, real_photos / "Cat" / "1.jpg").lower() == "cat"
    assert browser.execute_script("return document.activeElement.id") == "file"


# Screen readers speak a live region's change only if the region was in the accessibility tree
# before it changed: text put into a hidden region that is then shown is never spoken
# (TetraLogical, "Why are my live regions not working?"). Records each change that would be.
_RECORD_ANNOUNCEMENTS = """
window.spoken = [];
new MutationObserver((changes) => {
  const shown = changes.filter((c) => c.type === "attributes").map((c) => c.target);
  for (const change of changes) {
    if (change.type === "attributes") continue;
    const node = change.target.nodeType === Node.ELEMENT_NODE ? change.target : change.target.parentElement;
    const region = node && node.closest("[aria-live], [role=status], [role=alert]");
    if (!region || !region.checkVisibility() || shown.some((el) => el.contains(region))) continue;
    if (region.textContent.trim()) window.spoken.push(region.textContent.trim());
  }
}).observe(document.body, { childList: true, characterData: true, subtree: true, attributeFilter: ["hidden"] });
"""


def test_several_photos_come_back_as_a_table_in_batches_the_service_takes(
    page: tuple[Any, Server], real_photos: Path, not_a_photo: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, server = page
    browser.execute_script(_RECORD_ANNOUNCEMENTS)
    chosen = []
    for name, source in (("tabby.jpg", real_photos / "Cat" / "1.jpg"), ("rex.jpg", real_photos / "Dog" / "1.jpg")):
        chosen.append(tmp_path / name)
        chosen[-1].write_bytes(source.read_bytes())
    chosen.append(not_a_photo)
    browser.find_element(By.ID, "file").send_keys("\n".join(map(str, chosen)))  # one choice of three files
    summary = WebDriverWait(browser, 60).until(
        lambda b: ":" in (text := b.find_element(By.ID, "batch-summary").text) and text
    )
    rows = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.CSS_SELECTOR, "#batch-rows tr")
    ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "landing-page-batch.png"))
    api = requests.post(f"{server.url}/predict", files={"file": not_a_photo.open("rb")}, timeout=10).json()
    assert [r[:2] for r in rows] == [["tabby.jpg", "cat"], ["rex.jpg", "dog"], ["notes.jpg", api["detail"]]], rows
    assert rows[0][2].endswith("%") and rows[2][2] == "—"
    assert summary == "3 photos: 1 cat, 1 dog, 1 not classified"
    assert summary in browser.execute_script("return window.spoken")
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text.splitlines()
    batch_requests = [m for m in metrics if m.startswith("flask_http_request_duration_seconds_count{")]
    batch_requests = [m for m in batch_requests if 'endpoint="api.predict_batch"' in m]
    assert sum(float(m.split()[-1]) for m in batch_requests) == 2  # batches of at most MAX_BATCH_FILES
    assert browser.find_element(By.ID, "result").is_displayed() is False
    assert accessibility_violations(browser) == [] and console_errors(browser) == []
    browser.set_window_size(320, 800)  # a long file name wraps in its column on a phone
    browser.execute_script("document.querySelector('#batch-rows td').textContent = 'x'.repeat(120) + '.jpg'")
    width, room = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= room, f"the page is {width} px wide in a {room} px window"


def test_a_screen_reader_is_told_the_answer_and_the_error(
    page: tuple[Any, Server], real_photos: Path, not_a_photo: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser, _ = page
    browser.execute_script(_RECORD_ANNOUNCEMENTS)
    upload(browser, real_photos / "Cat" / "1.jpg")
    confidence = browser.find_element(By.ID, "confidence").text
    send_feedback(browser, "cat")
    error = upload(browser, not_a_photo)
    spoken = browser.execute_script("return window.spoken")
    assert f"Cat, {confidence}" in spoken, spoken
    assert "Thank you!" in spoken, spoken
    assert error in spoken, spoken
