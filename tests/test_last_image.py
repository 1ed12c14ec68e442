"""First and last frame (issue 27, item 1): an end image for i2v-a14b, checked like the start image,
fitted to the video's size, passed to diffusers as `last_image`, and named by hash in the recipe."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipelines.images as images
from pipelines.engine import Engine
from pipelines.errors import RequestError
from pipelines.manager import ModelManager
from pipelines.recipe import Recipe
from pipelines.request import GenerationRequest, VariantDefaults, build_request
from pipelines.variants import get_variant

DEMO = Path(__file__).resolve().parent.parent / "weights" / "demo"


def picture(path: Path, size: tuple[int, int], sky: tuple[int, int, int],
            ground: tuple[int, int, int]) -> str:
    """A two-band picture (sky over ground), saved as PNG."""
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2], pixels[height // 2:] = sky, ground
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def pictures(tmp_path: Path) -> tuple[str, str]:
    return (picture(tmp_path / "start.png", (64, 64), (120, 170, 230), (60, 150, 60)),
            picture(tmp_path / "end.png", (64, 64), (40, 30, 70), (150, 120, 60)))


def request(**raw) -> GenerationRequest:
    raw = {"variant": "i2v-a14b", "prompt": "a red ball", "width": 64, "height": 64, "frames": 5,
           "steps": 2, "seed": 3, "preview": {"enabled": False}, **raw}
    return build_request(raw, rng=random.Random(0)).request


def refused(field: str, **raw) -> str:
    with pytest.raises(RequestError) as info:
        request(**raw)
    assert info.value.field == field, str(info.value)
    message = str(info.value)
    assert message.count(". ") == 0 and message.endswith("."), message  # one sentence
    return message


# the request ------------------------------------------------------------------------------------

def test_an_end_image_is_kept_on_the_request_and_round_trips(pictures) -> None:
    start, end = pictures
    made = request(image_path=start, last_image_path=end)
    assert made.last_image_path == end
    assert GenerationRequest.from_dict(json.loads(made.to_json())) == made
    assert request(image_path=start, last_image_path="  ").last_image_path is None


def test_requests_stored_before_end_images_still_load(pictures) -> None:
    old = {k: v for k, v in request(image_path=pictures[0]).to_dict().items()
           if k != "last_image_path"}
    assert GenerationRequest.from_dict(old).last_image_path is None


@pytest.mark.parametrize("variant, words", [("t2v-a14b", "text only"),
                                            ("ti2v-5b", "cannot end on a chosen image")])
def test_only_i2v_takes_an_end_image(pictures, variant: str, words: str) -> None:
    start, end = pictures
    image = start if variant == "ti2v-5b" else None
    message = refused("last_image_path", variant=variant, image_path=image, last_image_path=end)
    assert words in message and "i2v-a14b" in message


def test_an_end_image_needs_a_start_image(pictures) -> None:
    assert "needs a start image" in refused("image_path", last_image_path=pictures[1])


def test_a_file_that_is_not_an_image_is_refused_as_the_end_image(pictures, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("hello, I am text")
    message = refused("last_image_path", image_path=pictures[0], last_image_path=str(notes))
    assert message.startswith("The end image could not be read")


def test_a_missing_end_image_is_refused(pictures, tmp_path: Path) -> None:
    message = refused("last_image_path", image_path=pictures[0],
                      last_image_path=str(tmp_path / "gone.png"))
    assert "end image 'gone.png' was not found" in message


def test_an_end_image_over_the_pixel_limit_is_refused_before_decoding(pictures, tmp_path: Path,
                                                                      monkeypatch) -> None:
    big = picture(tmp_path / "big.png", (80, 60), (0, 0, 0), (9, 9, 9))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 64 * 64)  # the start image (64x64) still fits
    message = refused("last_image_path", image_path=pictures[0], last_image_path=big)
    assert message.startswith("The end image is 80x60") and "megapixels" in message


def test_an_end_image_of_another_shape_is_cropped_with_a_notice(pictures, tmp_path: Path) -> None:
    wide = picture(tmp_path / "wide.png", (128, 64), (0, 0, 0), (9, 9, 9))
    validated = build_request({"variant": "i2v-a14b", "prompt": "x", "width": 64, "height": 64,
                               "image_path": pictures[0], "last_image_path": wide, "seed": 1})
    assert (validated.request.width, validated.request.height) == (64, 64)  # the start image rules
    assert any("end image is 128x64" in n and "cut off" in n for n in validated.notices)
    same = build_request({"variant": "i2v-a14b", "prompt": "x", "width": 64, "height": 64,
                          "image_path": pictures[0], "last_image_path": pictures[1], "seed": 1})
    assert not any("end image" in n for n in same.notices)


# the recipe -------------------------------------------------------------------------------------

def test_the_recipe_names_the_end_image_by_hash_and_never_by_path(pictures) -> None:
    start, end = pictures
    recipe = Recipe(request(image_path=start, last_image_path=end), "a red ball", start_image="a" * 64,
                    end_image="b" * 64)
    stored = recipe.to_dict()
    assert stored["end_image"] == "b" * 64 and stored["start_image"] == "a" * 64
    assert "last_image_path" not in stored["request"] and end not in json.dumps(stored)
    again = Recipe.from_dict(stored)
    assert again == recipe and again.request.last_image_path is None


def test_recipes_written_before_end_images_still_load(pictures) -> None:
    stored = Recipe(request(image_path=pictures[0]), start_image="a" * 64).to_dict()
    del stored["end_image"]
    assert Recipe.from_dict(stored).end_image is None
    flat = {**request(image_path=pictures[0]).to_dict(), "last_image_path": "/srv/leak.png"}
    assert Recipe.from_dict(flat).request.last_image_path is None  # an old flat request


# the engine -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_engine(tiny_weights, tmp_path_factory) -> Engine:
    manager = ModelManager({"i2v-a14b": str(tiny_weights["i2v-a14b"])},
                           tmp_path_factory.mktemp("last-image-cache"), device="cpu", demo_dir=None)
    return Engine(manager)


def test_diffusers_gets_the_end_image_at_the_videos_size(tiny_engine, pictures, tmp_path) -> None:
    """The tiny random VAE decodes almost everything to the same grey, so the plumbing is checked
    where the end image enters diffusers: the last conditioning frame, and the latents it makes."""
    start, _ = pictures
    end = picture(tmp_path / "end-wide.png", (96, 48), (250, 10, 10), (10, 250, 10))
    pipe = tiny_engine.manager.get("i2v-a14b").pipeline_for(with_image=True)
    seen: list[dict] = []
    original = pipe.prepare_latents

    def spy(image, *args, **kwargs):
        seen.append({"image": image, "last_image": args[-1] if len(args) >= 10 else kwargs.get("last_image")})
        outputs = original(image, *args, **kwargs)
        seen[-1]["condition"] = outputs[1]
        return outputs

    pipe.prepare_latents = spy
    try:
        tiny_engine.generate(request(image_path=start))
        tiny_engine.generate(request(image_path=start, last_image_path=end))
    finally:
        del pipe.prepare_latents
    without, with_end = seen
    assert without["last_image"] is None
    last = with_end["last_image"]
    assert tuple(last.shape[-2:]) == (64, 64) == tuple(with_end["image"].shape[-2:])
    # the end image was centre-cropped like a start image: the red/green bands survive, in order
    assert last[0, 0, 5].mean() > 0.5 and last[0, 1, -5].mean() > 0.5
    # mask channel 3 of the last latent frame stands for the video's last frame: "given" only now
    assert with_end["condition"][:, 3, -1].min() == 1 and without["condition"][:, 3, -1].max() == 0
    assert not np.allclose(without["condition"].numpy(), with_end["condition"].numpy())


def test_the_engine_refuses_an_end_image_a_variant_would_ignore(tiny_weights, pictures, tmp_path) -> None:
    from dataclasses import replace

    manager = ModelManager({"ti2v-5b": str(tiny_weights["ti2v-5b"])}, tmp_path, device="cpu",
                           demo_dir=None)
    sneaked = replace(request(variant="ti2v-5b", image_path=pictures[0]), last_image_path=pictures[1])
    with pytest.raises(RequestError, match="cannot end on a chosen image"):
        Engine(manager).generate(sneaked)


@pytest.mark.skipif(not (DEMO / "i2v-a14b" / "model_index.json").is_file(), reason="no demo weights")
def test_on_the_demo_weights_the_video_ends_towards_the_end_image(pictures, tmp_path) -> None:
    """Trained weights: the last frame lands nearer the end image than the same take without it."""
    start, end = pictures
    studio = json.loads((DEMO / "i2v-a14b" / "studio.json").read_text())["defaults"]
    defaults = VariantDefaults.official(get_variant("i2v-a14b")).updated(studio)
    engine = Engine(ModelManager({"i2v-a14b": str(DEMO / "i2v-a14b")}, tmp_path, device="cpu",
                                 demo_dir=None))
    target = np.asarray(Image.open(end), np.float64)
    raw = {"variant": "i2v-a14b", "prompt": "a red ball, in a green meadow, it stays still",
           "image_path": start, "seed": 0, "steps": 4, "frames": 9}
    plain = engine.generate(build_request(raw, defaults).request).frames[-1].astype(np.float64)
    ended = engine.generate(build_request({**raw, "last_image_path": end}, defaults).request
                            ).frames[-1].astype(np.float64)
    # measured 82 -> 60 (pixels) and 51 -> 12 (mean colour), 0-255; over seeds 0-3 the colour
    # gap shrank by 17-40 and the pixel gap by 15-24, so these margins leave room
    assert np.abs(ended - target).mean() < np.abs(plain - target).mean() - 8
    colour = lambda frame: frame.reshape(-1, 3).mean(axis=0)  # noqa: E731
    assert np.abs(colour(ended) - colour(target)).mean() < np.abs(colour(plain) - colour(target)).mean() - 12
