"""The studio as people use it, in Debian's headless Chromium against `python app.py serve`
(a real server process on tiny weights): the take just made is the one acted on, cancel and
reload behave, errors show beside Generate, the layout holds at desktop and phone sizes, and
what cannot be undone asks first."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from browser_support import (NEEDS_CHROMIUM, Server, browser, generate, in_view,  # noqa: F401
                             open_page, set_number, shown_take, status_has, tiny)

pytestmark = NEEDS_CHROMIUM


@pytest.fixture(scope="module")
def server(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tiny_weights, tmp_path_factory.mktemp("served") / "data")
    yield running
    running.stop()


# -- the take just made ------------------------------------------------------------------------

def test_the_take_just_made_is_the_one_shown_shared_and_acted_on(browser, server: Server) -> None:
    page = open_page(browser, server)
    generate(page, "a red ball rolls across the meadow")
    status_has(page, "done")
    first = shown_take(page)
    assert first and page.locator("#video video").get_attribute("src")
    assert page.input_value("#share-url textarea") == ""  # not shared yet
    page.click("#share")
    page.wait_for_function("document.querySelector('#share-url textarea').value.includes('/share/')")
    first_link = page.input_value("#share-url textarea")

    generate(page, "a blue cube in the desert")
    status_has(page, f"Take #{int(first) + 1} done")
    second = shown_take(page)
    assert second == str(int(first) + 1), "the new take is selected once it is done"
    assert page.input_value("#share-url textarea") == "", "the share box follows the selection"
    page.click("#favourite")
    page.wait_for_function("document.querySelector('#favourite').innerText.includes('★')")

    tiles = page.locator("#history .thumbnail-item")
    assert tiles.count() == 2
    tiles.nth(1).click()  # the older take
    page.wait_for_function(f"document.querySelector('#take-details .take-details')?.dataset.take === '{first}'")
    assert page.input_value("#share-url textarea") == first_link
    assert page.inner_text("#favourite").startswith("☆")
    page.locator("#history .thumbnail-item").nth(0).click()
    page.wait_for_function(f"document.querySelector('#take-details .take-details')?.dataset.take === '{second}'")
    assert page.input_value("#share-url textarea") == ""
    page.click("#remix")
    page.wait_for_function("document.querySelector('#prompt textarea').value === 'a blue cube in the desert'")
    page.context.close()


# -- cancel, reload, live tiles ----------------------------------------------------------------

def test_cancel_says_where_it_stopped_and_the_tile_shows_it(browser, server: Server) -> None:
    page = open_page(browser, server)
    generate(page, "a long take to stop", steps=100, frames=33)
    page.wait_for_function("document.querySelector('#progress .progress-line')?.dataset.step >= 2",
                           timeout=60_000)
    assert "running" in page.inner_text("#history")
    page.click("#cancel")
    status_has(page, "Cancelled after", timeout=30_000)
    assert "of 100 steps" in page.inner_text("#generate-status")
    page.wait_for_function("document.querySelector('#history').innerText.includes('cancelled')",
                           timeout=10_000)
    page.context.close()


def test_a_reload_keeps_the_take_running_and_returns_to_its_project(browser, server: Server) -> None:
    page = open_page(browser, server)
    page.fill("#project-name textarea, #project-name input", "Evening shoot")
    page.click("#project-create")
    page.wait_for_function("document.querySelector('#project input').value === 'Evening shoot'")
    generate(page, "a take that outlives its tab", steps=80, frames=17)
    page.wait_for_function("document.querySelector('#history').innerText.includes('running')",
                           timeout=60_000)
    page.reload()
    page.wait_for_selector("#prompt textarea", timeout=60_000)
    page.wait_for_function("document.querySelector('#project input')?.value === 'Evening shoot'",
                           timeout=30_000)
    # the page finds the take again (running, then watched to its end; or done meanwhile)
    page.wait_for_function("document.querySelector('#history').innerText.includes(' done ')",
                           timeout=300_000)
    assert "cancelled" not in page.inner_text("#history")
    page.wait_for_function("document.querySelector('#take-details .take-details')", timeout=30_000)
    assert "a take that outlives its tab" in page.inner_text("#take-details")
    page.context.close()


def test_queued_takes_show_their_place_in_line(browser, server: Server) -> None:
    page = open_page(browser, server)
    generate(page, "the first of three", steps=80, frames=33)
    page.wait_for_function("document.querySelector('#history').innerText.includes('running')",
                           timeout=60_000)
    page.fill("#prompt textarea", "the second of three")
    page.click("#generate")
    status_has(page, "queued", timeout=30_000)
    page.wait_for_function("document.querySelector('#history').innerText.includes('queued #1')",
                           timeout=30_000)
    page.click("#cancel")  # the selected take: the queued one, cancelled at once
    page.wait_for_function("document.querySelector('#history').innerText.includes('cancelled')",
                           timeout=30_000)
    page.context.close()


# -- errors where you act ----------------------------------------------------------------------

def test_errors_show_one_sentence_beside_generate_and_one_log_line(browser, server: Server,
                                                                   tmp_path: Path) -> None:
    page = open_page(browser, server)
    logged = len(server.log_text())
    page.fill("#prompt textarea", "x" * 4100)
    page.click("#generate")
    status_has(page, "the most is 4,000", timeout=15_000)
    page.wait_for_selector(".toast-body", timeout=15_000)  # and as a toast
    page.fill("#prompt textarea", "a red ball")
    set_number(page, "width", 5000)
    page.click("#generate")
    status_has(page, "width must be between", timeout=15_000)
    set_number(page, "width", 64)

    page.click("#variant input")
    page.locator("ul[role='listbox'] li", has_text="I2V-A14B").first.click()
    page.wait_for_selector("#image", state="visible", timeout=15_000)
    page.click("#generate")  # no start image
    status_has(page, "needs a start image", timeout=15_000)
    broken = tmp_path / "broken.png"
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(png, format="PNG")
    broken.write_bytes(png.getvalue()[:120])  # a PNG cut short: Pillow cannot read it
    page.set_input_files("#image input[type=file]", str(broken))
    time.sleep(1.0)
    tiny(page)
    page.click("#generate")
    page.wait_for_function(
        "['could not be read', 'damaged', 'truncated', 'not an image'].some(w => "
        "document.querySelector('#generate-status').innerText.includes(w) || "
        "document.querySelector('#image-error').innerText.includes(w))", timeout=15_000)
    log = server.log_text()[logged:]
    assert "Traceback" not in log, log
    page.context.close()


# -- layout -----------------------------------------------------------------------------------

def test_desktop_layout_keeps_the_shot_generate_and_preview_in_view(browser, server: Server,
                                                                    tmp_path: Path) -> None:
    page = open_page(browser, server, 1366, 768)
    for selector in ("#prompt textarea", "#generate", "#preview .preview-frame"):
        assert in_view(page, selector), selector
    assert not page.is_visible("#improve-prompt"), "no --prompt-model: no Improve prompt button"
    page.mouse.wheel(0, 700)
    time.sleep(0.5)
    assert in_view(page, "#preview .preview-frame"), "the preview stays in view as the page scrolls"
    set_number(page, "seed", 4294967295)
    set_number(page, "frames", 25)
    page.wait_for_function("document.querySelector('#frames-preset input').value === '25'")
    for elem_id in ("width", "height", "frames", "steps", "seed", "guidance", "flow-shift"):
        clipped = page.evaluate(f"(() => {{ const i = document.querySelector('#{elem_id} input'); "
                                f"return i.scrollWidth > i.clientWidth + 1; }})()")
        assert not clipped, f"{elem_id} shows its whole value"
    page.screenshot(path=str(Path(os.environ.get("WAN_STUDIO_SCREENSHOTS", tmp_path)) / "desktop.png"))
    page.context.close()


def test_phone_layout_never_overflows_and_reaches_every_control(browser, server: Server,
                                                                tmp_path: Path) -> None:
    page = open_page(browser, server, 390, 844)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for selector in ("#generate", "#cancel", "#prompt textarea", "#steps input", "#project input",
                     "#share", "#remix", "#history", "#negative-prompt, #settings"):
        element = page.locator(selector).first
        element.scroll_into_view_if_needed()
        box = element.bounding_box()
        assert box and box["width"] > 0 and box["x"] >= 0 and box["x"] + box["width"] <= 391, selector
    page.screenshot(path=str(Path(os.environ.get("WAN_STUDIO_SCREENSHOTS", tmp_path)) / "phone.png"),
                    full_page=True)
    page.context.close()


# -- what cannot be undone ---------------------------------------------------------------------

def test_deleting_asks_first_and_project_names_are_unique(browser, server: Server) -> None:
    page = open_page(browser, server)
    generate(page, "a take to keep, then not")
    status_has(page, "done")
    page.click("#delete-take")
    page.wait_for_selector("#delete-take-confirm", state="visible")
    page.click("#delete-take-no")
    page.wait_for_selector("#delete-take-confirm", state="hidden")
    assert page.locator("#history .thumbnail-item").count() == 1, "nothing was deleted"
    page.click("#delete-take")
    page.click("#delete-take-yes")
    page.wait_for_function("document.querySelectorAll('#history .thumbnail-item').length === 0")

    page.fill("#project-name textarea, #project-name input", "Twin")
    page.click("#project-create")
    page.wait_for_function("document.querySelector('#project input').value === 'Twin'")
    page.fill("#project-name textarea, #project-name input", "twin")
    page.click("#project-create")
    page.wait_for_function(
        "[...document.querySelectorAll('.toast-body')].some(t => t.innerText.includes('already have a project called'))",
        timeout=15_000)
    page.click("#project-delete")
    page.wait_for_selector("#project-delete-confirm", state="visible")
    page.click("#project-delete-yes")
    page.wait_for_function("document.querySelector('#project input').value !== 'Twin'")
    page.context.close()
