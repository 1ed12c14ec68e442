"""Start images: formats, EXIF rotation, fitting, and what broken or huge files get."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import RequestError
from pipelines.images import MAX_IMAGE_PIXELS, check_image, load_start_image


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (120, 60), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise when shown
    image.save(path, exif=exif)
    assert check_image(path) == (60, 120)


def test_fit_covers_and_centre_crops(tmp_path):
    path = tmp_path / "wide.png"
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:200] = (0, 255, 0)
    pixels[:, 200:] = (0, 0, 255)
    Image.fromarray(pixels).save(path)
    fitted = load_start_image(path, 64, 64)
    assert fitted.size == (64, 64) and fitted.mode == "RGB"
    assert np.asarray(fitted)[32, 32].tolist() == [0, 255, 0]  # the centre third survives


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("L", "PNG"), ("P", "GIF"), ("CMYK", "TIFF"),
                                      ("RGB", "WEBP"), ("I;16", "PNG")])
def test_any_pillow_format_becomes_rgb(tmp_path, mode, fmt):
    path = tmp_path / f"img.{fmt.lower()}"
    Image.new(mode, (80, 48)).save(path, format=fmt)
    assert load_start_image(path, 64, 48).mode == "RGB"


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(path)
    assert np.asarray(load_start_image(path, 64, 64))[0, 0].tolist() == [255, 255, 255]


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(RequestError, match="was not found"):
        check_image(tmp_path / "nope.png")


def test_not_an_image_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, I am text")
    with pytest.raises(RequestError, match="not an image format"):
        check_image(path)


def test_truncated_image_is_refused(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RequestError, match="damaged or truncated"):
        check_image(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    side = int(MAX_IMAGE_PIXELS**0.5) + 200  # a little over 40 megapixels, tiny on disk
    Image.new("1", (side, side)).save(path)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(RequestError, match="megapixels"):
        check_image(path)
