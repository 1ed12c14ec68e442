"""`python app.py generate`: a clip, its JSON summary, and exit status 2 for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def generate(*args, cwd=None, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), "generate", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def clip(tiny_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "clip.mp4"
    data = out.parent / "data"
    proc = generate("--variant", "t2v-a14b", "--prompt", "a red ball", "--weights",
                    f"t2v-a14b={tiny_weights['t2v-a14b']}", "--width", "70", "--height", "64",
                    "--frames", "8", "--steps", "4", "--seed", "7", "--data-dir", str(data),
                    "--out", str(out))
    return proc, out


def test_generate_writes_mp4_and_prints_one_json_line(clip):
    proc, out = clip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["path"] == str(out) and out.is_file() and out.with_suffix(".jpg").is_file()
    assert (summary["variant"], summary["seed"], summary["width"], summary["height"],
            summary["frames"], summary["fps"]) == ("t2v-a14b", 7, 64, 64, 9, 16)
    assert any("snapped" in n for n in summary["notices"])
    assert "4/4" in proc.stderr and "low-noise" in proc.stderr  # the progress bar


def test_clip_carries_the_studio_s_recipe_with_no_path(clip, tiny_weights):
    from pipelines.recipe import STUDIO_VERSION, Recipe
    from pipelines.video import read_settings

    _, out = clip
    settings = read_settings(out)
    assert settings["format"] == "wan-studio-recipe"  # the shape the studio's takes carry
    recipe = Recipe.from_dict(settings)
    assert recipe.request.prompt == "a red ball" and recipe.request.seed == 7
    assert recipe.user_prompt == "a red ball" and recipe.studio_version == STUDIO_VERSION
    assert recipe.weights == "local folder t2v-a14b" and recipe.profile == "cpu"
    assert str(tiny_weights["t2v-a14b"]) not in str(settings), "no server path in the file"


@pytest.mark.parametrize(("out", "words"), [
    ("clip.mov", "must name an .mp4"),
    ("", "must name an .mp4"),
    ("FOLDER", "is a folder"),
    ("missing/clip.mp4", "does not exist"),
])
def test_a_bad_out_exits_2_with_one_line_before_generating(tiny_weights, tmp_path, out, words):
    (tmp_path / "FOLDER.mp4").mkdir()
    target = str(tmp_path / out) if out not in ("", "FOLDER") else (
        str(tmp_path / "FOLDER.mp4") if out == "FOLDER" else "")
    proc = subprocess.run([sys.executable, "app.py", "generate", "--variant", "t2v-a14b",
                           "--prompt", "a red ball", "--weights",
                           f"t2v-a14b={tiny_weights['t2v-a14b']}", "--out", target],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_same_seed_same_frames_on_cpu(clip, tiny_weights, tmp_path):
    from pipelines.video import read_frames

    _, first = clip
    again = tmp_path / "again.mp4"
    proc = generate("--variant", "t2v-a14b", "--prompt", "a red ball", "--weights",
                    f"t2v-a14b={tiny_weights['t2v-a14b']}", "--width", "64", "--height", "64",
                    "--frames", "9", "--steps", "4", "--seed", "7", "--data-dir", str(tmp_path),
                    "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    assert (read_frames(first) == read_frames(again)).all()


@pytest.mark.parametrize("args,words", [
    (["--variant", "t2v-a14b", "--prompt", "x", "--steps", "0"], "steps must be between 1 and 100"),
    (["--variant", "t2v-a14b", "--prompt", "x", "--width", "abc"], "invalid int value"),
    (["--variant", "nope", "--prompt", "x"], "invalid choice"),
    (["--variant", "t2v-a14b", "--prompt", ""], "Write a prompt"),
    (["--variant", "t2v-a14b", "--prompt", "x", "--weights", "t2v-a14b"], "VARIANT=SOURCE"),
    (["--variant", "t2v-a14b", "--prompt", "x", "--weights", "wan9=/x"], "unknown variant"),
    (["--variant", "t2v-a14b", "--prompt", "x", "--weights", "t2v-a14b=/no/such/dir"],
     "No weights folder at /no/such/dir"),
    (["--variant", "i2v-a14b", "--prompt", "x"], "No weights for i2v-a14b"),
])
def test_bad_input_exits_2_with_one_line(tiny_weights, tmp_path, monkeypatch, capsys, args, words):
    from pipelines.cli import main

    monkeypatch.setenv("WAN_STUDIO_DEMO_WEIGHTS", "off")
    weights = [] if "--weights" in args or "i2v-a14b" in args else [
        "--weights", f"t2v-a14b={tiny_weights['t2v-a14b']}"]
    status = main([*args, *weights, "--out", str(tmp_path / "x.mp4")], tmp_path)
    captured = capsys.readouterr()
    assert status == 2, captured.err
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], captured.err
    assert captured.out == "" and not (tmp_path / "x.mp4").exists()


def test_weights_for_the_wrong_variant_exit_2(tiny_weights, tmp_path):
    proc = generate("--variant", "t2v-a14b", "--prompt", "x", "--weights",
                    f"t2v-a14b={tiny_weights['i2v-a14b']}", "--data-dir", str(tmp_path),
                    "--out", str(tmp_path / "x.mp4"))
    assert proc.returncode == 2
    assert "hold i2v-a14b, but they were given for t2v-a14b" in proc.stderr
