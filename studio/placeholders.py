"""Poster stand-ins for takes without a video (pending, running, failed, cancelled)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"pending": (96, 110, 130), "running": (52, 120, 200), "failed": (190, 60, 60),
           "cancelled": (120, 120, 120), "interrupted": (190, 140, 40), "completed": (60, 150, 90)}


def write_placeholders(folder: Path) -> dict[str, str]:
    """Write one small PNG per take status into `folder`; returns status -> file path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for status, colour in COLOURS.items():
        image = Image.new("RGB", (160, 90), colour)
        draw = ImageDraw.Draw(image)
        draw.text((8, 38), status, fill=(255, 255, 255))
        path = folder / f"{status}.png"
        image.save(path)
        paths[status] = str(path)
    return paths
