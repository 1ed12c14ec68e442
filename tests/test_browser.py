"""A person's path through the studio in Debian's headless Chromium, driven by Playwright."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from studio.server import QUEUE_SLOTS, build_studio, launch_kwargs
from browser_support import NEEDS_CHROMIUM, browser  # noqa: F401 (fixture)
from studio_helpers import free_port, weights_map

pytestmark = NEEDS_CHROMIUM

COUNT_PREVIEWS = """() => {
  window.__previews = new Set();
  const note = () => { const img = document.querySelector('#preview img');
                       if (img) window.__previews.add(img.getAttribute('src')); };
  new MutationObserver(note).observe(document.querySelector('#preview'),
                                     {subtree: true, childList: true, attributes: true});
  window.__stages = new Set();
  const stage = () => { const s = document.querySelector('#progress .expert');
                        if (s) window.__stages.add(s.textContent); };
  new MutationObserver(stage).observe(document.querySelector('#progress'),
                                      {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def studio_url(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    studio = build_studio(tmp_path_factory.mktemp("browser-data"), weights_map(tiny_weights),
                          preview_interval_s=0.0)
    studio.demo.queue(default_concurrency_limit=QUEUE_SLOTS)
    _, url, _ = studio.demo.launch(prevent_thread_lock=True, quiet=True,
                                   **launch_kwargs(studio, "127.0.0.1", free_port()))
    yield url
    studio.close()



def pick(page, elem_id: str, option: str) -> None:
    """Choose an option in a Gradio dropdown by its text."""
    page.click(f"#{elem_id} input")
    page.locator("ul[role='listbox'] li", has_text=option).first.click()


def set_number(page, elem_id: str, value: int) -> None:
    field = page.locator(f"#{elem_id} input").first
    field.fill(str(value))
    field.press("Tab")


def test_write_pick_generate_watch_and_keep(studio_url: str, browser, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.goto(studio_url)
    page.wait_for_selector("#prompt textarea", timeout=60_000)
    page.wait_for_function("document.querySelector('#project input')?.value?.length > 0",
                           timeout=30_000)

    pick(page, "variant", "TI2V-5B")
    page.wait_for_function("document.querySelector('#width input').value === '1280'", timeout=15_000)
    page.wait_for_selector("#image", state="visible", timeout=15_000)  # may render a frame later
    assert page.locator("#steps input").input_value() == "50"
    pick(page, "variant", "T2V-A14B")
    page.wait_for_function("document.querySelector('#steps input').value === '40'", timeout=15_000)
    page.wait_for_selector("#image", state="hidden", timeout=15_000)

    page.click("#generate")  # nothing written yet: the message shows under the prompt
    page.wait_for_function("document.querySelector('#prompt-error').innerText.includes('Write a prompt')",
                           timeout=15_000)
    assert page.locator("#video video").count() == 0

    page.fill("#prompt textarea", "a red ball rolls across the meadow")
    final = page.locator("#final-prompt textarea")
    page.wait_for_function("document.querySelector('#final-prompt textarea').value"
                           " === 'a red ball rolls across the meadow'", timeout=15_000)
    pick(page, "light-source", "daylight")
    page.wait_for_function("document.querySelector('#final-prompt textarea').value.includes('Daylight')",
                           timeout=15_000)
    page.get_by_role("tab", name="Camera").click()
    pick(page, "camera-movement", "pan left")
    page.wait_for_function("document.querySelector('#final-prompt textarea').value.endsWith('pan left.')",
                           timeout=15_000)
    assert final.input_value() == "a red ball rolls across the meadow. Daylight, pan left."

    set_number(page, "width", 64)
    set_number(page, "height", 64)
    set_number(page, "frames", 9)
    set_number(page, "steps", 12)
    page.evaluate(COUNT_PREVIEWS)
    page.click("#generate")
    page.wait_for_function("!document.querySelector('#prompt-error').innerText.trim()", timeout=15_000)

    page.wait_for_function("document.querySelector('#video video')?.getAttribute('src')",
                           timeout=120_000)
    assert page.evaluate("window.__previews.size") >= 2
    stages = page.evaluate("[...window.__stages]")
    assert "High-noise expert: layout and motion" in stages and "Low-noise expert: detail" in stages
    page.wait_for_function("document.querySelector('#video video').readyState >= 1", timeout=30_000)
    assert 0 < page.evaluate("document.querySelector('#video video').duration") < 1.5  # 9 frames
    page.wait_for_selector("#history img", timeout=30_000)
    assert " done " in page.inner_text("#history")
    shots = Path(os.environ.get("WAN_STUDIO_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "after-generate.png"), full_page=True)

    page.reload()
    page.wait_for_selector("#history img", timeout=60_000)
    assert "a red ball rolls across the meadow" in page.inner_text("#history")
    context.close()

    stranger = browser.new_context(viewport={"width": 1440, "height": 900})
    other = stranger.new_page()
    other.goto(studio_url)
    other.wait_for_function("document.querySelector('#project input')?.value?.length > 0",
                            timeout=60_000)
    assert other.locator("#history img").count() == 0
    assert "a red ball" not in other.inner_text("#history")
    stranger.close()
