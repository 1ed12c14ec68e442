"""`python app.py generate` with cinematic controls, profiles, LoRAs and a decode to finish later."""

from __future__ import annotations

import json

import pytest
import torch

from lora_files import write_diffusers
from pipelines.cli import build_parser, main


@pytest.fixture()
def cli(tiny_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WAN_STUDIO_DEMO_WEIGHTS", "off")

    def generate(*args, variant="t2v-a14b"):
        argv = ["--variant", variant, "--weights", f"{variant}={tiny_weights[variant]}",
                "--width", "64", "--height", "64", "--frames", "5", "--steps", "2", "--seed", "3",
                "--out", str(tmp_path / "clip.mp4"), *args]
        status = main(argv, tmp_path / "data")
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return generate


def test_help_describes_every_option():
    parser = build_parser()
    undocumented = [action.option_strings for action in parser._actions
                    if action.option_strings and not (action.help or "").strip()]
    assert undocumented == []
    text = parser.format_help()
    for option in ("--camera-movement", "--light-source", "--profile", "--lora", "--preset", "--cache",
                   "--compile", "--attention", "--image-fit", "--decode-latents"):
        assert option in text


def test_cinematic_controls_go_into_the_prompt_and_the_profile_is_said(cli, tmp_path):
    from pipelines.video import read_settings

    status, out, err = cli("--prompt", "a red ball", "--camera-movement", "pan left",
                           "--shot-size", "close-up", "--light-source", "moonlight", "--style", "claymation",
                           "--device", "cpu")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["profile"] == "cpu" and "profile: cpu (float32" in err
    settings = read_settings(tmp_path / "clip.mp4")
    # text mode: the guide's order, camera movement last among the terms, then the style
    assert settings["request"]["prompt"] == "a red ball. Moonlight, close-up, pan left, claymation style."
    assert settings["profile"] == "cpu"


def test_image_mode_puts_camera_movement_first(cli, tmp_path):
    from PIL import Image

    from pipelines.video import read_settings

    image = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (30, 120, 200)).save(image)
    status, _, err = cli("--prompt", "the ball rolls", "--image", str(image), "--shot-size", "wide shot",
                         "--camera-movement", "push in", variant="i2v-a14b")
    assert status == 0, err
    assert read_settings(tmp_path / "clip.mp4")["request"]["prompt"] == "the ball rolls. Push in, wide shot."


@pytest.mark.parametrize("args,words", [
    (["--camera-movement", "zoom"], "'zoom' is not a camera movement; choose one of"),
    (["--lora", "nowhere.safetensors"], "No LoRA file 'nowhere.safetensors'"),
    (["--preset", "i2v-lightning-4step"], "made for i2v-a14b, not t2v-a14b"),
    (["--profile", "24gb", "--device", "cpu"], "The 24gb profile needs a CUDA GPU"),
    (["--cache", "magcache"], "MagCache needs magnitude ratios"),
    (["--guidance", "1", "--guidance-low", "3"], "turns the negative prompt off for both experts"),
])
def test_bad_levers_exit_2_with_one_line(cli, args, words):
    status, out, err = cli("--prompt", "x", *args)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("profile:")]
    assert status == 2 and out == ""
    assert len(lines) == 1 and words in lines[0], err


def test_a_lora_is_applied_and_recorded(cli, tmp_path):
    (tmp_path / "data" / "loras").mkdir(parents=True)
    write_diffusers(tmp_path / "data" / "loras" / "style.safetensors", seed=1)
    status, out, err = cli("--prompt", "x", "--lora", "style:high=1.5,low=0.5", "--cache", "first-block")
    assert status == 0, err
    lora, = json.loads(out)["loras"]
    assert (lora["name"], lora["high"], lora["low"]) == ("style.safetensors", 1.5, 0.5)
    assert len(lora["sha256"]) == 64


def test_a_failed_decode_saves_the_latents_and_decode_latents_finishes(cli, tmp_path, monkeypatch):
    from diffusers import AutoencoderKLWan

    real = AutoencoderKLWan.decode

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 25.40 GiB")

    monkeypatch.setattr(AutoencoderKLWan, "decode", out_of_memory)
    status, out, err = cli("--prompt", "a red ball")
    kept = tmp_path / "clip.latents.safetensors"
    assert status == 1 and out == "" and kept.is_file()
    assert f"--decode-latents {kept}" in err.splitlines()[-1]
    monkeypatch.setattr(AutoencoderKLWan, "decode", real)
    status, out, err = cli("--prompt", "a red ball", "--decode-latents", str(kept))
    assert status == 0, err
    assert json.loads(out)["frames"] == 5 and (tmp_path / "clip.mp4").is_file()
