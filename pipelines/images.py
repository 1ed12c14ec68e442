"""Start (and end) images: read any format Pillow knows, refuse bombs and broken files, fit to the output.

The same checks serve both images of a take; `field` names the request field at fault
("image_path" for the start image, "last_image_path" for the end image) and the messages say which.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import RequestError

MAX_IMAGE_PIXELS = 40_000_000
# how messages name the image a request field holds
IMAGE_ROLES = {"image_path": "start image", "last_image_path": "end image"}


def _open_checked(path: str | Path, field: str = "image_path") -> Image.Image:
    """Open, size-check and fully decode an image, raising RequestError on any problem."""
    path = Path(path)
    role = IMAGE_ROLES.get(field, "image")
    if not path.is_file():
        raise RequestError(f"The {role} {path.name!r} was not found; upload it again.", field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            if image.width * image.height > MAX_IMAGE_PIXELS:
                megapixels = image.width * image.height / 1e6
                raise RequestError(
                    f"The {role} is {image.width}x{image.height} ({megapixels:.0f} megapixels); "
                    f"use one of at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels.",
                    field,
                )
            image.load()
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(
            f"The {role} is too large to open safely; use one of at most "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels.", field) from None
    except UnidentifiedImageError:
        raise RequestError(f"The {role} could not be read: it is not an image format Pillow knows.",
                           field) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(f"The {role} is damaged or truncated ({exc}); export it again.",
                           field) from None
    return image


def check_image(path: str | Path, field: str = "image_path") -> tuple[int, int]:
    """Make sure a start (or end) image can be used; returns its (width, height) after EXIF rotation."""
    image = ImageOps.exif_transpose(_open_checked(path, field))
    return image.width, image.height


def load_start_image(path: str | Path, width: int, height: int,
                     field: str = "image_path") -> Image.Image:
    """The image EXIF-rotated, in RGB, scaled to cover (width, height) and centre-cropped to it."""
    image = ImageOps.exif_transpose(_open_checked(path, field))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    image = image.convert("RGB")
    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def fit_to_area(image_size: tuple[int, int], size: tuple[int, int], multiple: int,
                min_side: int, max_side: int) -> tuple[int, int]:
    """The (width, height) with the image's aspect and about the area of `size`, on the grid.

    As the official Wan2.2 image-to-video code: sides from sqrt(area * aspect), floored to
    `multiple`. A request that already has the image's aspect is kept as it is; sides are kept
    within [min_side, max_side] by scaling both, so the aspect survives the limits too.
    """
    image_w, image_h = image_size
    width, height = size
    if image_w * height == image_h * width:
        return width, height
    area, aspect = width * height, image_h / image_w
    w, h = math.sqrt(area / aspect), math.sqrt(area * aspect)
    scale = min(1.0, max_side / max(w, h))  # a very long image: shrink both sides
    w, h = w * scale, h * scale
    scale = max(1.0, min_side / min(w, h))  # a very thin one: grow both (the long side is capped below)
    w, h = w * scale, h * scale
    lowest = math.ceil(min_side / multiple) * multiple
    highest = max_side // multiple * multiple

    def snap(side: float) -> int:  # the 1e-9 keeps 63.99999 from flooring to 48
        return min(highest, max(lowest, int(math.floor(side / multiple + 1e-9)) * multiple))

    return snap(w), snap(h)
