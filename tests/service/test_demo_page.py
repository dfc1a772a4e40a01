"""The demo page at ``GET /``: its markup (TestClient), and its behaviour in a real headless Chromium
talking to a real uvicorn server on the tiny models (skipped without selenium, chromium or chromedriver)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import uvicorn

from seqtag.service.app import create_app
from seqtag.service.routes.pages import INDEX
from seqtag.service.settings import Settings
from tests.service.conftest import fill_models_dir

IDS = ("text", "task", "scores", "run", "result", "error")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1000,900", "--lang=en-US",
)
MAX_TEXT_CHARS = 300  # the live server's limit, low enough for the error test to pass it


# ---- the markup ------------------------------------------------------------------------------------------

def test_page_has_the_controls_and_nothing_external(client):
    assert INDEX.is_file(), "service/static/index.html is missing"
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for name in IDS:
        assert f'id="{name}"' in html, name
    for cls in ("token", "entity"):
        assert f'"{cls}"' in html, cls  # class names set by the script
    for task in ("segment", "pos", "ner", "analyze"):
        assert f'<option value="{task}"' in html, task
    # self-contained: no CDN, fonts or scripts from anywhere else
    assert not re.search(r"https?://", html, re.IGNORECASE), re.findall(r"https?://\S+", html)
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?//""", html, re.IGNORECASE)
    assert not re.search(r"<script[^>]*\ssrc=|<link[^>]*stylesheet|@import", html, re.IGNORECASE)
    assert "offsets" in html and "utf16" in html  # spans are cut from the JS (UTF-16) string


# ---- a live server and a browser ---------------------------------------------------------------------------

@contextlib.contextmanager
def serving(models_dir: Path, dictionaries_dir: Path) -> Iterator[str]:
    """uvicorn in a background thread on 127.0.0.1 (a port picked by the OS); the base URL once ready."""
    settings = Settings(models_dir=models_dir, dictionaries_dir=dictionaries_dir, torch_threads=1,
                        max_text_chars=MAX_TEXT_CHARS, log_level="warning")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert thread.is_alive(), "the server thread died while starting"
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready in 60 s"
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
        assert not thread.is_alive(), "the server thread did not stop"


@pytest.fixture(scope="module")
def live_server(models_dir, tmp_path_factory) -> Iterator[str]:
    """A live server on the shared tiny models: zh-seg, zh-pos, zh-ner."""
    with serving(models_dir, tmp_path_factory.mktemp("dicts")) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            pytest.skip(f"{path} is missing (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + "/")
    # the model list has arrived and the task choice reflects it
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#models .chip"))
    driver.get_log("browser")  # start each test with an empty console log


def run_task(driver: Any, text: str | None, task: str, scores: bool) -> Any:
    """Type ``text`` (None: keep what is there), pick the task, set scores, click run; the #result element."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    if text is not None:
        box = driver.find_element(By.ID, "text")
        box.clear()
        box.send_keys(text)
    Select(driver.find_element(By.ID, "task")).select_by_value(task)
    checkbox = driver.find_element(By.ID, "scores")
    if checkbox.is_selected() != scores:
        checkbox.click()
    driver.execute_script("document.getElementById('result').hidden = true")
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "result").is_displayed() or d.find_element(By.ID, "error").is_displayed()
    )
    return driver.find_element(By.ID, "result")


def text_content(driver: Any, element: Any) -> str:
    """The element's text exactly as in the DOM (``.text`` trims and folds spaces; CSS labels are not in it)."""
    return driver.execute_script("return arguments[0].textContent", element)


def shot(driver: Any, path: Path) -> None:
    """A screenshot of the whole page (the window grown to the page's height first)."""
    height, chrome = driver.execute_script(
        "return [document.querySelector('main').getBoundingClientRect().bottom + window.scrollY,"
        "        window.outerHeight - window.innerHeight]")
    driver.set_window_size(1000, min(int(height) + max(int(chrome), 0) + 4, 2400))
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000


def assert_clean_console(driver: Any) -> None:
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def only_own_requests(driver: Any, base: str) -> None:
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(base + "/") for u in urls), urls


def test_browser_segment_with_scores(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    text = "我们喜欢图书馆。  他常常看电影！"  # the two spaces must survive in the inline view
    open_page(browser, live_server)
    options = {o.get_attribute("value"): o.is_enabled()
               for o in browser.find_elements(By.CSS_SELECTOR, "#task option")}
    assert options == {"segment": True, "pos": True, "ner": True, "analyze": True}
    result = run_task(browser, text, "segment", scores=True)
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert result.is_displayed()

    tokens = result.find_elements(By.CSS_SELECTOR, ".token")
    assert tokens and not result.find_elements(By.CSS_SELECTOR, ".entity")
    words = [text_content(browser, t) for t in tokens]
    assert "".join(words) == re.sub(r"\s", "", text)
    assert text_content(browser, result.find_element(By.CSS_SELECTOR, ".view")) == text
    # the same words the API gives
    api = httpx.post(live_server + "/v1/segment", json={"text": text}).json()
    assert words == [t["text"] for t in api["results"][0]["tokens"]]
    for token in tokens:  # confidences on hover
        assert re.fullmatch(r"score [01]\.\d{3}", token.get_attribute("title") or ""), token.get_attribute("title")
    only_own_requests(browser, live_server)
    assert_clean_console(browser)
    shot(browser, tmp_path / "segment.png")


def test_browser_ner_and_pos(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    text = "张伟明在北京工作。李娜明天去上海。"
    open_page(browser, live_server)
    result = run_task(browser, text, "ner", scores=True)
    assert not browser.find_element(By.ID, "error").is_displayed()
    entities = result.find_elements(By.CSS_SELECTOR, ".entity")
    assert entities, "the tiny NER model finds entities in its training patterns"
    assert not result.find_elements(By.CSS_SELECTOR, ".token")
    expected = httpx.post(live_server + "/v1/ner", json={"text": text}).json()["results"][0]["entities"]
    seen = [(text_content(browser, e), e.get_attribute("data-label")) for e in entities]
    assert seen == [(e["text"], e["label"]) for e in expected]
    assert text_content(browser, result.find_element(By.CSS_SELECTOR, ".view")) == text
    for entity in entities:
        label = entity.get_attribute("data-label")
        assert label in {"PER", "LOC"}
        assert re.fullmatch(rf"{label} · score [01]\.\d{{3}}", entity.get_attribute("title") or "")
        assert entity.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent")
        # the label is shown next to the entity (a CSS ::after badge)
        badge = browser.execute_script("return getComputedStyle(arguments[0], '::after').content", entity)
        assert badge.strip('"') == label
    legend = [s.text for s in result.find_elements(By.CSS_SELECTOR, ".legend .swatch")]
    assert legend == sorted({label for _, label in seen})
    assert_clean_console(browser)
    shot(browser, tmp_path / "ner.png")

    # pos on the same page, scores off: labelled words, no hover titles
    result = run_task(browser, None, "pos", scores=False)
    tokens = result.find_elements(By.CSS_SELECTOR, ".token")
    assert "".join(text_content(browser, t) for t in tokens) == text
    assert all(t.get_attribute("data-pos") for t in tokens)
    assert not any(t.get_attribute("title") for t in tokens)
    assert not result.find_elements(By.CSS_SELECTOR, ".entity")


def test_browser_analyze_keeps_non_bmp_offsets(browser, live_server, tmp_path):
    """Characters outside the BMP are two UTF-16 units in JS: the spans must still line up."""
    from selenium.webdriver.common.by import By

    text = "𠀀张伟明在北京工作。 𝟘"
    open_page(browser, live_server)
    # chromedriver cannot type characters outside the BMP: put the text in with a script
    browser.execute_script("document.getElementById('text').value = arguments[0]", text)
    result = run_task(browser, None, "analyze", scores=True)
    assert not browser.find_element(By.ID, "error").is_displayed()
    views = result.find_elements(By.CSS_SELECTOR, ".view")
    assert [text_content(browser, v) for v in views] == [text, text]
    tokens = result.find_elements(By.CSS_SELECTOR, ".token")
    assert "".join(text_content(browser, t) for t in tokens) == re.sub(r"\s", "", text)
    api = httpx.post(live_server + "/v1/analyze", json={"text": text}).json()["results"][0]
    assert [text_content(browser, e) for e in result.find_elements(By.CSS_SELECTOR, ".entity")] == \
        [e["text"] for e in api["entities"]]
    shot(browser, tmp_path / "analyze.png")


def test_browser_shows_api_errors(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, live_server)
    browser.execute_script("document.getElementById('text').value = arguments[0]", "好" * (MAX_TEXT_CHARS + 1))
    result = run_task(browser, None, "segment", scores=False)
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and not result.is_displayed()
    code, message = error.text.split(": ", 1)
    assert code == "text_too_long" and str(MAX_TEXT_CHARS + 1) in message, error.text
    shot(browser, tmp_path / "error.png")
    # a good request afterwards hides the error again
    result = run_task(browser, "我们喜欢音乐。", "segment", scores=False)
    assert result.is_displayed() and not error.is_displayed()


def test_browser_offers_only_the_tasks_with_a_model(browser, trained, tmp_path):
    from selenium.webdriver.common.by import By

    only_seg = fill_models_dir(tmp_path / "models", trained, tasks=("seg",))
    with serving(only_seg, tmp_path / "dicts") as base:
        open_page(browser, base)
        options = {o.get_attribute("value"): o.is_enabled()
                   for o in browser.find_elements(By.CSS_SELECTOR, "#task option")}
        assert options == {"segment": True, "pos": False, "ner": False, "analyze": True}
        assert browser.find_element(By.CSS_SELECTOR, "#task option[value=ner]").text == "ner (no model)"
        # analyze with a seg model only: words, and no entity section
        result = run_task(browser, None, "analyze", scores=False)
        assert not browser.find_element(By.ID, "error").is_displayed()
        text = browser.find_element(By.ID, "text").get_attribute("value")
        tokens = result.find_elements(By.CSS_SELECTOR, ".token")
        assert "".join(text_content(browser, t) for t in tokens) == re.sub(r"\s", "", text)
        assert [h.text.lower() for h in result.find_elements(By.CSS_SELECTOR, "h2")] == ["words"]
        shot(browser, tmp_path / "seg-only.png")
