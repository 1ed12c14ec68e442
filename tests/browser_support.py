"""What the browser tests share: Debian's chromium, driven by Playwright, one per module; a
`python app.py serve` process; and the steps every test takes on the page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from studio_helpers import free_port

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]
NEEDS_CHROMIUM = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at "
                       "/usr/bin/chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium for the module's tests."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Server:
    """`python app.py serve` in a subprocess; its stderr is kept for the log checks."""

    def __init__(self, weights: dict[str, Path], data: Path, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = data.parent / "server.log"
        args = [sys.executable, "app.py", "serve", "--data-dir", str(data), "--port", str(self.port)]
        for variant, folder in weights.items():
            args += ["--weights", f"{variant}={folder}"]
        args += list(extra)
        env = {**os.environ, "WAN_STUDIO_DEMO_WEIGHTS": "off", "WAN_STUDIO_LOG": "INFO",
               "WAN_STUDIO_MAX_QUEUED": "5"}
        self._log = open(self.log, "w")
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise AssertionError("the studio did not start:\n" + self.log.read_text())

    def log_text(self) -> str:
        self._log.flush()
        return self.log.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def open_page(browser, server: Server, width: int = 1366, height: int = 768):
    """A fresh visitor (own browser storage) on the studio, ready to type."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("#prompt textarea", timeout=60_000)
    page.wait_for_function("document.querySelector('#project input')?.value?.length > 0",
                           timeout=30_000)
    return page


def set_number(page, elem_id: str, value: int) -> None:
    field = page.locator(f"#{elem_id} input").first
    field.fill(str(value))
    field.press("Tab")


def tiny(page, steps: int = 6, frames: int = 9) -> None:
    for elem_id, value in (("width", 64), ("height", 64), ("frames", frames), ("steps", steps)):
        set_number(page, elem_id, value)


def generate(page, prompt: str, steps: int = 6, frames: int = 9) -> None:
    page.fill("#prompt textarea", prompt)
    tiny(page, steps, frames)
    page.click("#generate")


def status_has(page, words: str, timeout: int = 120_000) -> None:
    page.wait_for_function(
        f"document.querySelector('#generate-status')?.innerText.includes({words!r})", timeout=timeout)


def shown_take(page) -> str:
    return page.get_attribute("#take-details .take-details", "data-take") or ""


def in_view(page, selector: str) -> bool:
    return page.evaluate(f"""() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();
        return r.width > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }}""")
