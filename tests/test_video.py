"""pipelines/video.py: browser-playable MP4 with embedded settings, posters, reading back."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.request import DEFAULT_NEGATIVE_PROMPT
from pipelines.video import (VideoFileError, last_frame, read_frames, read_settings, write_mp4,
                             write_poster)

SETTINGS = {
    "variant": "ti2v-5b",
    "prompt": "一只红色的球滚过草地 — a red ball rolls across the meadow, café crème ☕",
    "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
    "seed": 4294967295,
    "width": 96,
    "height": 64,
    "frames": 9,
    "fps": 24,
    "guidance": 5.0,
    "guidance_low": None,
    "preview": {"enabled": True, "max_side": 256, "decode_every": 0},
    "weights_source": "/models/Wan2.2-TI2V-5B-Diffusers",
    "studio_version": "0.1.0",
}


def moving_frames(count: int = 9, height: int = 64, width: int = 96) -> np.ndarray:
    """A colour gradient with a bright square moving right: smooth, so H.264 keeps it close."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1),
                     np.full_like(x, 96)], axis=-1).astype(np.uint8)
    frames = np.repeat(base[None], count, axis=0)
    for i in range(count):
        frames[i, 8:24, 4 + 4 * i: 20 + 4 * i] = (250, 250, 40)
    return frames


def top_level_atoms(data: bytes) -> list[str]:
    """The names of an MP4's top-level boxes, in file order."""
    names, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        names.append(data[offset + 4:offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        if size < 8:
            break
        offset += size
    return names


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    frames = moving_frames()
    path = write_mp4(frames, tmp_path_factory.mktemp("video") / "clip.mp4", fps=24, metadata=SETTINGS)
    return path, frames


def test_settings_round_trip_with_unicode_and_chinese_negative_prompt(clip):
    path, _ = clip
    assert read_settings(path) == SETTINGS


def test_stream_is_browser_playable_h264(clip):
    path, _ = clip
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.profile in ("High", "Main")
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 24
        assert stream.frames == 9


def test_faststart_puts_moov_before_mdat(clip):
    path, _ = clip
    atoms = top_level_atoms(path.read_bytes())
    assert "moov" in atoms and "mdat" in atoms
    assert atoms.index("moov") < atoms.index("mdat")


def test_frames_read_back_close_to_the_input(clip):
    path, frames = clip
    decoded = read_frames(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 3.0
    np.testing.assert_array_equal(np.asarray(last_frame(path)), decoded[-1])


@pytest.mark.parametrize("height,width", [(63, 96), (64, 95), (33, 47)])
def test_odd_sizes_are_padded_by_one_pixel(tmp_path, height, width):
    frames = moving_frames(5, height, width)
    path = write_mp4(frames, tmp_path / "odd.mp4", fps=16, metadata={})
    decoded = read_frames(path)
    assert decoded.shape == (5, height + height % 2, width + width % 2, 3)
    assert np.abs(decoded[:, :height, :width].astype(int) - frames.astype(int)).mean() < 4.0


@pytest.mark.parametrize("fps", [1, 16, 24, 60])
def test_fps_and_frame_count_are_kept(tmp_path, fps):
    path = write_mp4(moving_frames(7), tmp_path / "rate.mp4", fps=fps, metadata={"fps": fps})
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == fps
        assert stream.frames == 7
        assert float(stream.duration * stream.time_base) == pytest.approx(7 / fps, abs=1e-3)


def test_single_frame_video(tmp_path):
    path = write_mp4(moving_frames(1), tmp_path / "one.mp4", fps=16, metadata={"n": 1})
    assert read_frames(path).shape == (1, 64, 96, 3)


def test_write_is_atomic_and_replaces_an_old_file(tmp_path):
    target = tmp_path / "nested" / "take.mp4"
    write_mp4(moving_frames(3), target, fps=16, metadata={"take": 1})
    write_mp4(moving_frames(5), target, fps=16, metadata={"take": 2})
    assert read_settings(target) == {"take": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["take.mp4"]


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "broken.mp4"
    with pytest.raises(ValueError, match="JSON-serializable"):
        write_mp4(moving_frames(3), target, fps=16, metadata={"bad": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("frames,message", [
    (moving_frames(3).astype(np.float32), "must be uint8"),
    (moving_frames(3)[..., :2], r"shape \(frames, height, width, 3\)"),
    (moving_frames(3)[0], r"shape \(frames, height, width, 3\)"),
    (np.zeros((0, 64, 64, 3), np.uint8), "must not be empty"),
    (np.zeros((2, 0, 64, 3), np.uint8), "must not be empty"),
    (moving_frames(3).tolist(), "must be a numpy array"),
])
def test_bad_frames_are_refused(tmp_path, frames, message):
    with pytest.raises(ValueError, match=message):
        write_mp4(frames, tmp_path / "bad.mp4", fps=16, metadata={})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps", [0, -5, 241, 12.5, True])
def test_bad_fps_is_refused(tmp_path, fps):
    with pytest.raises(ValueError, match="fps must be a whole number"):
        write_mp4(moving_frames(3), tmp_path / "bad.mp4", fps=fps, metadata={})


def test_bad_metadata_and_file_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must be a mapping"):
        write_mp4(moving_frames(3), tmp_path / "a.mp4", fps=16, metadata=["not", "a", "dict"])
    with pytest.raises(ValueError, match="NaN|JSON-serializable"):
        write_mp4(moving_frames(3), tmp_path / "a.mp4", fps=16, metadata={"guidance": float("nan")})
    with pytest.raises(ValueError, match=r"must end in \.mp4"):
        write_mp4(moving_frames(3), tmp_path / "a.avi", fps=16, metadata={})


def test_read_settings_of_a_file_that_is_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    with pytest.raises(VideoFileError, match="cannot be read as a video"):
        read_settings(text)
    with pytest.raises(VideoFileError, match="cannot be read as a video"):
        read_frames(text)


def test_read_settings_of_a_missing_file(tmp_path):
    with pytest.raises(VideoFileError, match="No video file"):
        read_settings(tmp_path / "gone.mp4")
    with pytest.raises(VideoFileError, match="No video file"):
        last_frame(tmp_path / "gone.mp4")


def foreign_mp4(path, comment=None):
    """An MP4 written by someone else's tool (plain PyAV), optionally with a comment tag."""
    with av.open(str(path), "w") as container:
        if comment is not None:
            container.metadata["comment"] = comment
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for frame in moving_frames(2, 64, 64):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_read_settings_of_a_video_without_settings(tmp_path):
    path = foreign_mp4(tmp_path / "plain.mp4")
    with pytest.raises(VideoFileError, match="carries no generation settings"):
        read_settings(path)


def test_read_settings_of_a_comment_that_is_not_json(tmp_path):
    path = foreign_mp4(tmp_path / "commented.mp4", comment="shot on my phone")
    with pytest.raises(VideoFileError, match="not studio settings JSON"):
        read_settings(path)


def test_read_settings_error_is_a_value_error():
    assert issubclass(VideoFileError, ValueError)


def test_metadata_json_keeps_unicode_unescaped(clip):
    path, _ = clip
    with av.open(str(path)) as container:
        raw = container.metadata["comment"]
    assert "色调艳丽" in raw and json.loads(raw)["seed"] == 4294967295


@pytest.mark.parametrize("name,fmt", [("poster.jpg", "JPEG"), ("poster.jpeg", "JPEG"), ("poster.png", "PNG")])
def test_poster_formats(tmp_path, name, fmt):
    frame = moving_frames(1)[0]
    path = write_poster(frame, tmp_path / name)
    with Image.open(path) as image:
        assert image.format == fmt and image.size == (96, 64) and image.mode == "RGB"
        assert np.abs(np.asarray(image).astype(int) - frame.astype(int)).mean() < 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("frame,name,message", [
    (moving_frames(2), "p.jpg", r"\(height, width, 3\)"),
    (moving_frames(1)[0].astype(np.float64), "p.jpg", "must be uint8"),
    (np.zeros((0, 4, 3), np.uint8), "p.jpg", "must not be empty"),
    (moving_frames(1)[0], "p.gif", r"\.jpg, \.jpeg or \.png"),
    ("not an array", "p.jpg", r"\(height, width, 3\)"),
])
def test_bad_posters_are_refused(tmp_path, frame, name, message):
    with pytest.raises(ValueError, match=message):
        write_poster(frame, tmp_path / name)
    assert list(tmp_path.iterdir()) == []
