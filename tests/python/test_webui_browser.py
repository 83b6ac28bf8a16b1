"""The chat page of `chimera serve`, driven in a real browser (Debian's chromium, headless, through
chromium-driver and Selenium) against the real server on a loopback port with the default model.

If the browser cannot start, these tests fail: they never skip. Screenshots (wide and narrow) go
to $CHIMERA_TEST_ARTIFACTS, else build/test-artifacts/webui/.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = REPO_ROOT / "models" / "default.gguf"
WEBUI_DIR = REPO_ROOT / "tools" / "server" / "webui"
ARTIFACTS = Path(os.environ.get("CHIMERA_TEST_ARTIFACTS", REPO_ROOT / "build" / "test-artifacts")) / "webui"
RUNNING_GAUGE = "chimera_requests_running"
WIDE = (1280, 800)
NARROW = (390, 844)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(ARTIFACTS / f"server-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "-m", str(MODEL), "--host", "127.0.0.1", "--port",
             str(self.port), "--parallel", "2", "-t", "2", "-c", "4096", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"chimera serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.time() > deadline:
                self.stop()
                raise AssertionError(f"chimera serve did not answer /health in 60 s:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def running(self) -> float:
        status, _, body = self.get("/metrics")
        assert status == 200
        m = re.search(rf"^{RUNNING_GAUGE}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", body.decode(), re.M)
        assert m, f"no {RUNNING_GAUGE} in /metrics:\n{body.decode()[:2000]}"
        return float(m.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(chimera_bin: Path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    s = Server(chimera_bin)
    yield s
    s.stop()


def start_browser() -> webdriver.Chrome:
    """Headless chromium. Any failure to start is a test failure, never a skip."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                "--force-color-profile=srgb", "--lang=en-US"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
    try:
        driver = webdriver.Chrome(service=service, options=opts)
    except Exception as e:  # noqa: BLE001 - the reason goes into the failure
        raise AssertionError(
            "could not start headless chromium through chromium-driver (apt packages chromium and "
            f"chromium-driver, scripts/setup.sh): {e}") from e
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def set_viewport(driver, size: tuple[int, int]) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size[0] < 600})


SETTINGS = {"system": "You are a helpful assistant.", "temperature": 0.9, "top_p": 1,
            "max_tokens": 48, "seed": 7, "extra": ""}


def open_fresh(driver, server: Server, settings: dict | None = None) -> None:
    """The page with empty storage (and the given settings), at the wide size."""
    set_viewport(driver, WIDE)
    driver.get(server.url + "/")
    driver.execute_script("localStorage.clear();")
    if settings is not None:
        driver.execute_script("localStorage.setItem('chimera.settings.v1', arguments[0]);",
                              json.dumps(settings))
    driver.get(server.url + "/")
    wait(driver, lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "ok",
         "the page did not reach the server")


def wait(driver, cond, what: str, timeout: float = 60):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(cond)
    except Exception as e:
        try:
            screenshot(driver, "failure-" + re.sub(r"[^a-z0-9]+", "-", what.lower())[:40])
        except Exception:  # noqa: BLE001 - the timeout is the error to report
            pass
        raise AssertionError(f"timed out waiting: {what}\nbrowser log: {browser_log(driver)}") from e


def browser_log(driver) -> list:
    try:
        return driver.get_log("browser")
    except Exception:  # noqa: BLE001
        return []


def send(driver, text: str) -> None:
    box = driver.find_element(By.ID, "input")
    box.click()  # after a closed dialog, chromedriver's keys reach the box only once it is clicked
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i:
            box.send_keys(Keys.SHIFT, Keys.ENTER)
        box.send_keys(line)
    box.send_keys(Keys.ENTER)


def idle(driver) -> bool:
    return not driver.find_element(By.ID, "stop").is_displayed()


def wait_reply(driver, n_assistant: int):
    """Waits until the n-th visible answer is complete; returns its article element."""
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg-assistant")) >= n_assistant
         and idle(d), f"answer {n_assistant} to finish")
    return driver.find_elements(By.CSS_SELECTOR, ".msg-assistant")[n_assistant - 1]


def stat(article, name: str) -> str:
    return article.find_element(By.CSS_SELECTOR, f'[data-stat="{name}"]').text


def stat_number(article, name: str) -> int:
    return int(stat(article, name).split()[0])


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 5000, f"{path} looks empty"
    return path


def test_page_is_the_embedded_files_and_keeps_to_its_origin(server: Server) -> None:
    status, headers, body = server.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body == (WEBUI_DIR / "index.html").read_bytes()
    for path, name in (("/webui/app.js", "app.js"), ("/webui/style.css", "style.css")):
        status, _, body = server.get(path)
        assert status == 200 and body == (WEBUI_DIR / name).read_bytes(), path
    csp = headers["Content-Security-Policy"]
    assert "connect-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp


def test_send_shows_a_streamed_answer(browser, server: Server) -> None:
    # 200 tokens whatever the model says (ignore_eos): even a fast machine needs many frames.
    open_fresh(browser, server, dict(SETTINGS, max_tokens=200, extra='{"ignore_eos": true}'))
    # Record the answer's text length at every DOM change while the caret shows it is streaming.
    browser.execute_script("""
      window.__lengths = [];
      new MutationObserver(() => {
        const a = document.querySelector('.msg-assistant .content');
        if (a && a.querySelector('.caret')) window.__lengths.push(a.textContent.length);
      }).observe(document.getElementById('messages'), {childList: true, subtree: true});""")
    send(browser, "And God said")
    answer = wait_reply(browser, 1)
    text = answer.find_element(By.CSS_SELECTOR, ".content").text
    assert text.strip(), "empty answer"
    lengths = [n for n in browser.execute_script("return window.__lengths;") if n > 0]
    assert len(set(lengths)) >= 3, f"the answer did not arrive in pieces: {lengths}"
    assert lengths == sorted(lengths)
    assert not answer.find_elements(By.CSS_SELECTOR, ".caret")
    assert stat_number(answer, "processed") > 0
    assert stat_number(answer, "reused") >= 0
    assert "to first token" in stat(answer, "ttft")
    assert float(stat(answer, "tps").split()[0]) > 0
    user = browser.find_element(By.CSS_SELECTOR, ".msg-user .bubble")
    assert user.text == "And God said"
    assert browser.find_element(By.ID, "chat-title").text == "And God said"


def test_stop_cancels_the_request_on_the_server(browser, server: Server) -> None:
    open_fresh(browser, server, dict(SETTINGS, max_tokens=3500, extra='{"ignore_eos": true}'))
    assert server.running() == 0
    send(browser, "And God said")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg-assistant .content .caret"),
         "the answer to start streaming")
    wait(browser, lambda d: server.running() >= 1, "the server to count the request as running")
    screenshot(browser, "wide-streaming")
    browser.find_element(By.ID, "stop").click()
    t0 = time.time()
    wait(browser, lambda d: server.running() == 0, "the running-request gauge to drop", timeout=5)
    assert time.time() - t0 < 2.0, "the server kept the request for more than 2 s after stop"
    answer = wait_reply(browser, 1)
    assert stat(answer, "stopped") == "stopped"
    text = answer.find_element(By.CSS_SELECTOR, ".content").text
    time.sleep(0.5)
    assert answer.find_element(By.CSS_SELECTOR, ".content").text == text, "text kept arriving"
    assert browser.find_element(By.ID, "send").is_displayed()


def test_edit_first_message_branches_and_reuses_the_cache(browser, server: Server) -> None:
    open_fresh(browser, server, SETTINGS)
    send(browser, "And God said")
    first = wait_reply(browser, 1).find_element(By.CSS_SELECTOR, ".content").text
    send(browser, "What did he make on the second day?")
    wait_reply(browser, 2)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg")) == 4

    browser.find_elements(By.CSS_SELECTOR, ".msg-user")[0].find_element(
        By.CSS_SELECTOR, "button.edit").click()
    editor = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "textarea.edit-input"), "editor")
    editor.clear()
    editor.send_keys("In the beginning God created the heaven and the earth")
    editor.send_keys(Keys.ENTER)
    answer = wait_reply(browser, 1)
    # The edit opened a branch: the first exchange only, with its new answer.
    msgs = browser.find_elements(By.CSS_SELECTOR, ".msg")
    assert len(msgs) == 2
    assert msgs[0].find_element(By.CSS_SELECTOR, ".bubble").text.startswith("In the beginning")
    edited = answer.find_element(By.CSS_SELECTOR, ".content").text
    assert edited != first
    # The system prompt's tokens (and the template's) came from the prefix cache.
    reused, processed = stat_number(answer, "reused"), stat_number(answer, "processed")
    assert reused > 0 and processed > 0
    assert msgs[0].find_element(By.CSS_SELECTOR, ".branch-pos").text == "2 / 2"
    screenshot(browser, "wide-edited")
    set_viewport(browser, NARROW)
    time.sleep(0.3)
    screenshot(browser, "narrow-edited")
    set_viewport(browser, WIDE)

    # The old branch is still there, unchanged.
    msgs[0].find_element(By.CSS_SELECTOR, 'button[aria-label="Previous version"]').click()
    msgs = browser.find_elements(By.CSS_SELECTOR, ".msg")
    assert len(msgs) == 4
    assert msgs[0].find_element(By.CSS_SELECTOR, ".bubble").text == "And God said"
    assert msgs[1].find_element(By.CSS_SELECTOR, ".content").text == first

    # Regenerating the last answer is another branch, and reuses the whole prompt.
    last = browser.find_elements(By.CSS_SELECTOR, ".msg-assistant")[-1]
    last.find_element(By.CSS_SELECTOR, "button.regenerate").click()
    answer = wait_reply(browser, 2)
    assert answer.find_element(By.CSS_SELECTOR, ".branch-pos").text == "2 / 2"
    assert stat_number(answer, "reused") > reused
    screenshot(browser, "wide-conversation")
    set_viewport(browser, NARROW)
    time.sleep(0.3)
    screenshot(browser, "narrow-conversation")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    screenshot(browser, "narrow-conversation-dark")
    set_viewport(browser, WIDE)
    screenshot(browser, "wide-conversation-dark")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_reload_keeps_conversations_and_rename_delete(browser, server: Server) -> None:
    open_fresh(browser, server, SETTINGS)
    send(browser, "And God said")
    answer_text = wait_reply(browser, 1).find_element(By.CSS_SELECTOR, ".content").text
    browser.find_element(By.ID, "new-chat").click()
    send(browser, "Let there be light")
    wait_reply(browser, 1)
    browser.refresh()
    items = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".chat-item"), "the list")
    assert [i.find_element(By.CSS_SELECTOR, ".chat-item-title").text for i in items] == \
        ["Let there be light", "And God said"]
    # The open conversation is the one that was open.
    assert browser.find_element(By.CSS_SELECTOR, ".msg-user .bubble").text == "Let there be light"
    items[1].find_element(By.CSS_SELECTOR, ".chat-open").click()
    assert browser.find_element(By.CSS_SELECTOR, ".msg-assistant .content").text == answer_text
    # Its stats came back from storage too (earlier tests sent this prompt: it may be all reused).
    restored = browser.find_element(By.CSS_SELECTOR, ".msg-assistant")
    assert stat_number(restored, "reused") + stat_number(restored, "processed") > 0

    # Rename, survive a reload, delete.
    item = browser.find_elements(By.CSS_SELECTOR, ".chat-item")[1]
    item.find_element(By.CSS_SELECTOR, "button.rename").click()
    field = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".rename-input"), "rename field")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("Genesis one")
    field.send_keys(Keys.ENTER)
    browser.refresh()
    wait(browser, lambda d: "Genesis one" in [e.text for e in d.find_elements(
        By.CSS_SELECTOR, ".chat-item-title")], "the renamed conversation after reload")
    item = next(i for i in browser.find_elements(By.CSS_SELECTOR, ".chat-item")
                if i.text.startswith("Genesis one"))
    item.find_element(By.CSS_SELECTOR, "button.delete").click()
    browser.find_element(By.CSS_SELECTOR, ".confirm-delete").click()
    browser.refresh()
    titles = [e.text for e in wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".chat-item-title"),
                                   "the list after delete")]
    assert titles == ["Let there be light"]


def test_markup_in_messages_is_shown_as_text(browser, server: Server) -> None:
    open_fresh(browser, server, SETTINGS)
    evil = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">**hi**'
    send(browser, evil)
    wait_reply(browser, 1)
    assert browser.find_element(By.CSS_SELECTOR, ".msg-user .bubble").text == evil
    assert browser.execute_script("return window.__pwned;") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages script, #messages img")
    browser.refresh()  # and again when rendered from storage
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg-user .bubble"), "the message")
    assert browser.find_element(By.CSS_SELECTOR, ".msg-user .bubble").text == evil
    assert browser.execute_script("return window.__pwned;") is None

    # Model text goes through the Markdown renderer: markup in it, in code and in links stays text.
    md = ("# Title <b>x</b>\n\nText <script>window.__pwned=3</script> and **bold** and `<i>code</i>`"
          "\n\n```html\n<img src=x onerror=\"window.__pwned=4\">\n```\n\n"
          "[click](javascript:window.__pwned=5) [ok](https://example.com/a?b=<c>)\n\n- <u>item</u>")
    out = browser.execute_script("""
      const host = document.createElement('div');
      host.append(window.chimeraChat.renderMarkdown(arguments[0]));
      document.body.append(host);
      return {html: host.innerHTML, tags: [...host.querySelectorAll('*')].map(e => e.tagName),
              code: host.querySelector('pre code').textContent,
              links: [...host.querySelectorAll('a')].map(a => a.getAttribute('href')),
              text: host.textContent};""", md)
    assert set(out["tags"]) <= {"H3", "P", "STRONG", "CODE", "DIV", "SPAN", "BUTTON", "PRE", "A",
                                "UL", "LI"}, out["tags"]
    assert out["code"] == '<img src=x onerror="window.__pwned=4">'
    assert out["links"] == ["https://example.com/a?b=%3Cc%3E"]
    assert "<script>window.__pwned=3</script>" in out["text"]
    assert "[click](javascript:window.__pwned=5)" in out["text"]
    time.sleep(0.2)
    assert browser.execute_script("return window.__pwned;") is None


def test_settings_dialog_and_narrow_layout(browser, server: Server) -> None:
    open_fresh(browser, server, None)
    browser.find_element(By.ID, "open-settings").click()
    dialog = browser.find_element(By.ID, "settings-dialog")
    assert dialog.is_displayed()
    for field, value in (("set-system", "Answer in one verse."), ("set-temperature", "0"),
                         ("set-top-p", "0.9"), ("set-max-tokens", "24"), ("set-seed", "42")):
        e = browser.find_element(By.ID, field)
        e.clear()
        e.send_keys(value)
    screenshot(browser, "wide-settings")
    browser.find_element(By.ID, "settings-save").click()
    assert not dialog.is_displayed()
    saved = json.loads(browser.execute_script("return localStorage.getItem('chimera.settings.v1');"))
    assert saved["system"] == "Answer in one verse." and saved["max_tokens"] == "24"
    assert saved["seed"] == "42" and saved["top_p"] == "0.9"
    send(browser, "And God\nsaid")  # Shift+Enter adds a line, Enter sends
    answer = wait_reply(browser, 1)
    assert browser.find_element(By.CSS_SELECTOR, ".msg-user .bubble").text == "And God\nsaid"
    generated = answer.find_element(By.CSS_SELECTOR, '[data-stat="tps"]').get_attribute("title")
    assert 0 < int(generated.split()[0]) <= 24, generated  # max tokens from the dialog
    set_viewport(browser, NARROW)
    time.sleep(0.3)
    assert not browser.find_element(By.ID, "sidebar").is_displayed() or \
        browser.find_element(By.ID, "sidebar").rect["x"] < 0
    browser.find_element(By.ID, "toggle-sidebar").click()
    time.sleep(0.4)
    assert browser.find_element(By.ID, "sidebar").rect["x"] >= 0
    screenshot(browser, "narrow-sidebar")
    # A tap on the dimmed page beside the drawer closes it.
    ActionChains(browser).move_to_element_with_offset(
        browser.find_element(By.ID, "scrim"), NARROW[0] // 2 - 20, 0).click().perform()
    wait(browser, lambda d: d.find_element(By.ID, "sidebar").rect["x"] < 0, "the drawer to close")


def test_api_key_is_asked_for_stored_and_sent(browser, chimera_bin: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    s = Server(chimera_bin, "--api-key", "sesame-123")
    try:
        set_viewport(browser, WIDE)
        browser.get(s.url + "/")
        browser.execute_script("localStorage.clear(); localStorage.setItem('chimera.settings.v1', arguments[0]);",
                               json.dumps(SETTINGS))
        browser.get(s.url + "/")
        dialog = wait(browser, lambda d: d.find_element(By.ID, "key-dialog") if d.find_element(
            By.ID, "key-dialog").is_displayed() else None, "the page to ask for the key")
        screenshot(browser, "wide-api-key")
        field = browser.find_element(By.ID, "key-input")
        field.send_keys("wrong")
        browser.find_element(By.ID, "key-save").click()
        wait(browser, lambda d: d.find_element(By.ID, "key-dialog").is_displayed(), "asked again")
        field.clear()
        field.send_keys("sesame-123")
        browser.find_element(By.ID, "key-save").click()
        wait(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "ok",
             "the key to be accepted")
        assert not dialog.is_displayed()
        send(browser, "And God said")
        answer = wait_reply(browser, 1)
        assert not answer.find_elements(By.CSS_SELECTOR, ".error")
        assert answer.find_element(By.CSS_SELECTOR, ".content").text.strip()
        browser.refresh()
        wait(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "ok",
             "the stored key to be used after a reload")
        assert not browser.find_element(By.ID, "key-dialog").is_displayed()
    finally:
        s.stop()
