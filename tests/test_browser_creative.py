"""The creative tools as people use them (issue 27), in Debian's headless Chromium against
`python app.py serve` on the demo weights with a tiny prompt model: an end image, variations
kept down to one, a take extended into a longer shot, two takes compared in sync, a project
exported and imported (a bad zip refused), and Improve prompt."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from browser_support import (NEEDS_CHROMIUM, Server, browser, generate, open_page,  # noqa: F401
                             shown_take, status_has, tiny)
from test_prompt_helper import save_tiny_lm

pytestmark = NEEDS_CHROMIUM


@pytest.fixture(scope="module")
def server(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model = save_tiny_lm(tmp_path_factory.mktemp("prompt-model") / "lm")
    running = Server(tiny_weights, tmp_path_factory.mktemp("creative") / "data",
                     ("--prompt-model", str(model)))
    yield running
    running.stop()


def pick(page, elem_id: str, option: str) -> None:
    """Choose an option of a dropdown by its label."""
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def tiles(page, elem_id: str) -> list[str]:
    """The captions of a gallery's tiles."""
    return page.evaluate(f"[...document.querySelectorAll('#{elem_id} .grid-wrap .thumbnail-item')]"
                         ".map(t => t.innerText.trim())")


def next_take_done(page, previous: str) -> None:
    """Wait until a take other than `previous` is shown and the status says it is done."""
    page.wait_for_function(f"document.querySelector('#take-details .take-details')?.dataset.take "
                           f"!== '{previous}' && document.querySelector('#generate-status')"
                           f"?.innerText.includes('done')", timeout=180_000)


def upload(page, button: str, path: Path) -> None:
    """Pick a file through an upload button's file chooser, as a person does."""
    with page.expect_file_chooser() as chooser:
        page.click(button)
    chooser.value.set_files(str(path))


def picture(path: Path, colour: tuple[int, int, int]) -> str:
    ramp = np.linspace(0.4, 1.0, 64, dtype=np.float32)[None, :, None]
    Image.fromarray((np.array(colour, np.float32) * ramp).repeat(64, axis=0).astype(np.uint8)).save(path)
    return str(path)


def test_an_end_image_is_offered_for_i2v_only_and_recorded(browser, server: Server,
                                                           tmp_path: Path) -> None:
    page = open_page(browser, server)
    assert not page.is_visible("#end-image"), "t2v has no end image"
    pick(page, "variant", "I2V-A14B (image to video, two experts)")
    page.wait_for_selector("#end-image", state="visible")
    page.set_input_files("#image input[type=file]", picture(tmp_path / "start.png", (220, 40, 30)))
    page.set_input_files("#end-image input[type=file]", picture(tmp_path / "end.png", (30, 40, 220)))
    page.wait_for_selector("#end-image img", timeout=30_000)
    generate(page, "the ball turns blue")
    status_has(page, "done")
    assert "End image" in page.inner_text("#take-details")
    pick(page, "variant", "TI2V-5B (text or image to video, one model)")
    page.wait_for_selector("#end-image", state="hidden")
    page.context.close()


def test_variations_show_as_a_group_and_one_is_kept(browser, server: Server) -> None:
    page = open_page(browser, server)
    pick(page, "variations", "3 variations")
    generate(page, "three seeds of one ball")
    status_has(page, "3 variations are queued")
    page.wait_for_function("document.querySelectorAll('#history .thumbnail-item').length === 3 && "
                           "[...document.querySelectorAll('#history .thumbnail-item')]"
                           ".every(t => t.innerText.includes('done'))", timeout=180_000)
    captions = tiles(page, "history")
    assert sorted(c.split(" · ")[1] for c in captions) == ["var 1/3", "var 2/3", "var 3/3"]
    page.wait_for_selector("#take-group", state="visible")
    assert len(tiles(page, "group-tiles")) == 3
    last = shown_take(page)  # the batch's last take, just finished
    page.locator("#group-tiles .thumbnail-item").nth(1).click()  # the middle seed
    page.wait_for_function(f"document.querySelector('#take-details .take-details')?.dataset.take "
                           f"!== '{last}'")
    chosen = shown_take(page)
    assert int(chosen) == int(last) - 1
    page.click("#keep-only")
    status_has(page, "deleted 2 other variations")
    page.wait_for_function("document.querySelectorAll('#history .thumbnail-item').length === 1")
    assert tiles(page, "history")[0].startswith(f"#{chosen} done")
    assert not page.is_visible("#take-group")
    page.context.close()


def test_extend_grows_a_take_into_one_shot_in_the_history(browser, server: Server) -> None:
    page = open_page(browser, server)
    generate(page, "a red ball rolls across the meadow")
    status_has(page, "done")
    parent = shown_take(page)
    page.click("#extend")
    status_has(page, f"Extending take #{parent}")
    assert page.input_value("#prompt textarea") == "a red ball rolls across the meadow"
    tiny(page)
    page.click("#generate")
    next_take_done(page, parent)
    child = shown_take(page)
    assert "whole shot" in page.inner_text("#take-details")
    assert page.is_visible("#take-group") and len(tiles(page, "group-tiles")) == 2
    history = tiles(page, "history")
    assert len(history) == 1 and history[0].startswith(f"#{child} done · shot")
    duration = page.evaluate("new Promise(r => { const v = document.querySelector('#video video');"
                             " if (v.readyState > 0) r(v.duration); else v.onloadedmetadata ="
                             " () => r(v.duration); })")
    # the shot is 9 + 9 - 1 = 17 frames (1.06 s at 16 fps); the 9-frame part alone is 0.56 s
    assert duration > 0.9, ("the player shows the shot, not the part", duration)
    page.context.close()


def test_compare_plays_two_takes_together_and_lists_what_differs(browser, server: Server) -> None:
    page = open_page(browser, server)
    generate(page, "a ball at dawn")
    status_has(page, "done")
    first = shown_take(page)
    page.fill("#seed input", "99")
    generate(page, "a ball at dusk")
    next_take_done(page, first)
    page.click("#compare-with input")
    page.get_by_role("option", name=f"#{first} done", exact=False).click()
    page.click("#compare")
    page.wait_for_selector(".compare video.compare-video", timeout=30_000)
    assert page.locator(".compare video.compare-video").count() == 2
    table = page.inner_text(".compare-diff")
    assert "Seed" in table and "Prompt" in table and "Width" not in table
    page.click(".compare-play")
    time.sleep(1.0)
    states = page.evaluate("[...document.querySelectorAll('video.compare-video')]"
                           ".map(v => [v.paused, v.currentTime])")
    assert all(not paused for paused, _ in states), states
    assert abs(states[0][1] - states[1][1]) < 0.25, states
    page.locator("video.compare-video").first.evaluate("v => v.pause()")
    time.sleep(0.3)
    assert all(page.evaluate("[...document.querySelectorAll('video.compare-video')].map(v => v.paused)"))
    page.click("#compare-close")
    page.wait_for_selector(".compare", state="detached")
    page.context.close()


def test_export_downloads_and_import_adds_a_project_and_a_bad_zip_is_refused(
        browser, server: Server, tmp_path: Path) -> None:
    page = open_page(browser, server)
    generate(page, "a take to take elsewhere")
    status_has(page, "done")
    page.click("#project-export")
    link = page.wait_for_selector("#project-export-file a[download], #project-export-file a",
                                  timeout=30_000)
    with page.expect_download() as download:
        link.click()
    exported = tmp_path / "export.zip"
    download.value.save_as(exported)
    assert "project.json" in zipfile.ZipFile(exported).namelist()

    bad = tmp_path / "evil.zip"  # the real export, but one file named outside its folder
    manifest = json.loads(zipfile.ZipFile(exported).read("project.json"))
    manifest["takes"][0]["files"]["video"] = "../../etc/passwd"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("project.json", json.dumps(manifest))
    upload(page, "#project-import", bad)
    page.wait_for_selector(".toast-body", timeout=30_000)
    assert "outside its own folder" in page.inner_text(".toast-body")
    page.click("#project input")
    assert page.locator("[role=option]").count() == 1, "nothing was imported"
    page.keyboard.press("Escape")
    projects_before = page.evaluate("document.querySelector('#project input').value")

    upload(page, "#project-import", exported)
    status_has(page, "The project is imported")
    page.wait_for_function("document.querySelectorAll('#history .thumbnail-item').length === 1")
    assert page.evaluate("document.querySelector('#project input').value") != projects_before
    page.context.close()


def test_improve_prompt_suggests_a_rewrite_to_accept_or_keep_mine(browser, server: Server) -> None:
    page = open_page(browser, server)
    assert page.is_visible("#improve-prompt")
    page.fill("#prompt textarea", "a red ball rolls")
    page.click("#improve-prompt")
    page.wait_for_selector("#suggestion textarea", state="visible", timeout=60_000)
    suggested = page.input_value("#suggestion textarea")
    assert suggested
    page.fill("#suggestion textarea", "a red ball rolls across a green meadow at dusk")
    page.click("#suggestion-use")
    page.wait_for_selector("#suggestion-box", state="hidden")
    assert page.input_value("#prompt textarea") == "a red ball rolls across a green meadow at dusk"
    page.fill("#prompt textarea", "  ")
    page.click("#improve-prompt")
    page.wait_for_selector(".toast-body", timeout=30_000)
    assert "Write a few words" in page.inner_text(".toast-body")
    page.context.close()
