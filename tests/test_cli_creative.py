"""`python app.py generate` with --last-image, --variations and --extend, on the bundled demo weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.cli import main
from pipelines.recipe import Recipe, file_sha256, is_shot, shot_parts
from pipelines.video import read_frames, read_settings

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--width", "64", "--height", "64", "--frames", "5", "--steps", "2"]  # seconds per take


def _demo_weights_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """No --weights: every variant comes from the bundled demo weights."""
    monkeypatch.delenv("WAN_STUDIO_DEMO_WEIGHTS", raising=False)
    for name in ("T2V_A14B", "I2V_A14B", "TI2V_5B"):
        monkeypatch.delenv(f"WAN_STUDIO_WEIGHTS_{name}", raising=False)


@pytest.fixture()
def cli(tmp_path, monkeypatch, capsys):
    """Run the generate command in-process: (status, stdout lines, stderr lines that are not progress)."""
    _demo_weights_on(monkeypatch)

    def generate(*args: str) -> tuple[int, list[str], list[str]]:
        status = main([*args, "--data-dir", str(tmp_path / "data")], tmp_path / "data")
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines()
                  if line.startswith("error:") or "Traceback" in line]
        return status, captured.out.strip().splitlines(), errors

    return generate


def _image(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (64, 64), colour).save(path)
    return path


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A t2v take to extend, made once for the module."""
    folder = tmp_path_factory.mktemp("parent")
    out = folder / "parent.mp4"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _demo_weights_on(monkeypatch)
        status = main(["--variant", "t2v-a14b", "--prompt", "a red ball", "--shot-size", "close-up",
                       *SMALL, "--seed", "11", "--out", str(out), "--data-dir", str(folder / "data")],
                      folder / "data")
    assert status == 0 and out.is_file()
    return out


# -- --last-image ------------------------------------------------------------------------------

def test_last_image_on_i2v_a14b_records_both_images_by_hash(cli, tmp_path):
    start, end = _image(tmp_path / "start.png", (200, 40, 40)), _image(tmp_path / "end.png", (40, 40, 200))
    out = tmp_path / "fl.mp4"
    status, lines, errors = cli("--variant", "i2v-a14b", "--prompt", "it turns blue", "--image",
                                str(start), "--last-image", str(end), *SMALL, "--out", str(out))
    assert status == 0, errors
    assert json.loads(lines[0])["path"] == str(out)
    recipe = Recipe.from_dict(read_settings(out))
    assert recipe.end_image == file_sha256(end) and recipe.start_image == file_sha256(start)
    assert str(tmp_path) not in json.dumps(read_settings(out)), "no path in the recipe"


@pytest.mark.parametrize(("variant", "with_image", "words"), [
    ("t2v-a14b", False, "t2v-a14b makes video from text only; remove the end image or pick i2v-a14b."),
    ("ti2v-5b", True, "ti2v-5b cannot end on a chosen image"),
    ("ti2v-5b", False, "ti2v-5b cannot end on a chosen image"),
    ("i2v-a14b", False, "--last-image needs a start image too: add --image."),
])
def test_last_image_is_refused_with_one_sentence(cli, tmp_path, variant, with_image, words):
    end = _image(tmp_path / "end.png", (40, 40, 200))
    image = ["--image", str(_image(tmp_path / "start.png", (200, 40, 40)))] if with_image else []
    status, lines, errors = cli("--variant", variant, "--prompt", "x", *image, "--last-image",
                                str(end), *SMALL, "--out", str(tmp_path / "x.mp4"))
    assert status == 2 and lines == []
    assert len(errors) == 1 and words in errors[0], errors
    assert not (tmp_path / "x.mp4").exists()


# -- --variations ------------------------------------------------------------------------------

def test_variations_write_numbered_takes_with_consecutive_seeds_from_one_load(cli, tmp_path,
                                                                              monkeypatch, capsys):
    from pipelines.manager import ModelManager

    loads = []
    real_load = ModelManager._load
    monkeypatch.setattr(ModelManager, "_load",
                        lambda self, spec, source: loads.append(spec.id) or real_load(self, spec, source))
    status, lines, errors = cli("--variant", "t2v-a14b", "--prompt", "a red ball", *SMALL,
                                "--seed", "41", "--variations", "3", "--out", str(tmp_path / "take.mp4"))
    assert status == 0, errors
    summaries = [json.loads(line) for line in lines]
    paths = [tmp_path / f"take-{i}.mp4" for i in (1, 2, 3)]
    assert [s["path"] for s in summaries] == [str(p) for p in paths]  # each path printed
    assert [s["seed"] for s in summaries] == [41, 42, 43]
    assert [Recipe.from_dict(read_settings(p)).request.seed for p in paths] == [41, 42, 43]
    assert all(p.with_suffix(".jpg").is_file() for p in paths)
    assert not (tmp_path / "take.mp4").exists()
    assert loads == ["t2v-a14b"], "the model loads once for the whole batch"


@pytest.mark.parametrize("count", ["1", "9"])
def test_variations_out_of_range_are_refused(cli, tmp_path, count):
    status, lines, errors = cli("--variant", "t2v-a14b", "--prompt", "x", *SMALL, "--variations",
                                count, "--out", str(tmp_path / "take.mp4"))
    assert status == 2 and lines == []
    assert errors == [f"error: --variations must be between 2 and 8, got {count}."]
    assert list(tmp_path.glob("take*")) == []


# -- --extend ----------------------------------------------------------------------------------

def test_extend_joins_parent_and_child_with_both_recipes(cli, parent, tmp_path):
    out = tmp_path / "longer.mp4"
    status, lines, errors = cli("--extend", str(parent), "--steps", "2", "--seed", "5",
                                "--out", str(out))
    assert status == 0, errors
    summary = json.loads(lines[0])
    parent_frames, shot = read_frames(parent), read_frames(out)
    assert summary["child_frames"] == 5 and len(shot) == len(parent_frames) + 5 - 1  # shared frame once
    assert summary["frames"] == len(shot) and summary["parts"] == 2
    assert set(summary["seam_difference"]) == {"before", "after"}
    assert summary["variant"] == "i2v-a14b"  # Continue's choice: the image-to-video pair first
    settings = read_settings(out)
    assert is_shot(settings)
    first, child = shot_parts(settings)
    assert first == Recipe.from_dict(read_settings(parent))
    assert (child.variant, child.request.seed, child.user_prompt) == ("i2v-a14b", 5, "a red ball")
    assert child.controls.shot_size == "close-up"  # the parent's controls carry over
    assert child.start_image is not None and (child.request.width, child.request.height) == (64, 64)
    assert out.with_suffix(".jpg").is_file()


def test_extending_a_shot_again_keeps_every_part_and_takes_a_new_prompt(cli, parent, tmp_path):
    shot = tmp_path / "shot.mp4"
    assert cli("--extend", str(parent), "--steps", "2", "--out", str(shot))[0] == 0
    longer = tmp_path / "shot2.mp4"
    status, lines, errors = cli("--extend", str(shot), "--prompt", "it bounces away", "--steps", "2",
                                "--out", str(longer))
    assert status == 0, errors
    parts = shot_parts(read_settings(longer))
    assert [p.user_prompt for p in parts] == ["a red ball", "a red ball", "it bounces away"]
    assert len(read_frames(longer)) == len(read_frames(shot)) + 5 - 1


def _foreign_mp4(path: Path) -> Path:
    """An MP4 another tool made: frames, no Wan Studio settings."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * index, np.uint8), format="rgb24")
            container.mux(stream.encode(frame.reformat(format="yuv420p")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(("make", "words"), [
    (_foreign_mp4, "--extend: other.mp4 carries no generation settings; was it made by Wan Studio?"),
    (lambda p: p.write_text("not a video") and p, "--extend: other.mp4 cannot be read as a video"),
    (lambda p: p, "--extend: no file at"),
])
def test_extend_refuses_what_is_not_a_studio_take(cli, tmp_path, make, words):
    source = make(tmp_path / "other.mp4")
    status, lines, errors = cli("--extend", str(source), "--out", str(tmp_path / "x.mp4"))
    assert status == 2 and lines == []
    assert len(errors) == 1 and words in errors[0], errors
    assert not (tmp_path / "x.mp4").exists()


def test_extend_refuses_settings_that_are_not_a_recipe(cli, tmp_path):
    from pipelines.video import write_mp4

    source = write_mp4(np.zeros((5, 64, 64, 3), np.uint8), tmp_path / "odd.mp4", 8, {"tool": "other"})
    status, _, errors = cli("--extend", str(source), "--out", str(tmp_path / "x.mp4"))
    assert status == 2 and errors == ["error: --extend: odd.mp4 has settings that are not a Wan Studio "
                                      "recipe, so it cannot be extended."]


@pytest.mark.parametrize(("args", "words"), [
    (["--variant", "t2v-a14b"], "needs a variant that takes a start image (i2v-a14b or ti2v-5b)"),
    (["--image", "start.png"], "--extend starts from the take's last frame, so it takes no --image."),
    (["--variations", "2"], "--extend and --variations do not go together"),
])
def test_extend_refuses_options_that_do_not_fit(cli, parent, tmp_path, args, words):
    status, lines, errors = cli("--extend", str(parent), *args, "--out", str(tmp_path / "x.mp4"))
    assert status == 2 and lines == []
    assert len(errors) == 1 and words in errors[0], errors


def test_extend_of_a_text_file_in_a_real_process_is_one_line_no_traceback(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("a shot list, not a video\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("WAN_STUDIO_DEMO_WEIGHTS", None)
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "generate", "--extend", str(text),
                           "--out", str(tmp_path / "x.mp4"), "--data-dir", str(tmp_path / "data")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --extend: notes.txt cannot be read as a "
                                                   "video"), proc.stderr
