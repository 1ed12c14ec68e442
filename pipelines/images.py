"""Start images: read any format Pillow knows, refuse bombs and broken files, fit to the output."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import RequestError

MAX_IMAGE_PIXELS = 40_000_000


def _open_checked(path: str | Path) -> Image.Image:
    """Open, size-check and fully decode an image, raising RequestError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise RequestError(f"The start image {path.name!r} was not found; upload it again.", "image_path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            if image.width * image.height > MAX_IMAGE_PIXELS:
                megapixels = image.width * image.height / 1e6
                raise RequestError(
                    f"The start image is {image.width}x{image.height} ({megapixels:.0f} megapixels); "
                    f"use one of at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels.",
                    "image_path",
                )
            image.load()
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(
            f"The start image is too large to open safely; use one of at most "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels.", "image_path") from None
    except UnidentifiedImageError:
        raise RequestError("The start image could not be read: it is not an image format Pillow knows.",
                           "image_path") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(f"The start image is damaged or truncated ({exc}); export it again.",
                           "image_path") from None
    return image


def check_image(path: str | Path) -> tuple[int, int]:
    """Make sure a start image can be used; returns its (width, height) after EXIF rotation."""
    image = ImageOps.exif_transpose(_open_checked(path))
    return image.width, image.height


def load_start_image(path: str | Path, width: int, height: int) -> Image.Image:
    """The image EXIF-rotated, in RGB, scaled to cover (width, height) and centre-cropped to it."""
    image = ImageOps.exif_transpose(_open_checked(path))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    image = image.convert("RGB")
    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
