"""Frames -> browser-playable MP4 with the generation settings embedded, and back (PyAV only).

Files are H.264 (High profile), yuv420p with BT.709 colour tags, `+faststart` (the `moov` index
before the media data, so browsers start playing before the download ends). The settings travel
as one JSON object in the container's `comment` tag, which the mp4 muxer writes as iTunes-style
metadata and every player ignores. Every file is written to a temporary name beside the target
and moved into place with `os.replace`, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import av
import numpy as np
from PIL import Image

from .errors import StudioError

SETTINGS_TAG = "comment"
MAX_FPS = 240

# x264 "superfast" keeps CABAC and 8x8 transforms (so High profile, unlike "ultrafast", which falls
# back to Constrained Baseline) at about a third of the time of diffusers' exporter; CRF 22 is just
# under x264's default 23 (visually clean) and a 2.5x smaller file than CRF 20 at 0.5 dB less.
# See benchmarks/bench_video.py and docs/benchmarks.md.
X264_OPTIONS = {"preset": "superfast", "crf": "22", "profile": "high"}

_POSTER_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


class VideoFileError(StudioError, ValueError):
    """A file cannot be read as a studio video, or carries no settings."""


def write_mp4(frames: np.ndarray, path: Path, fps: int, metadata: Mapping[str, Any]) -> Path:
    """Encode uint8 frames (T, H, W, 3) as an H.264 MP4 at `fps` with `metadata` as embedded JSON.

    An odd width or height is padded by one pixel (the last column or row repeated), because
    yuv420p needs even sizes; nothing of the input is cut off. Returns the final path.
    """
    path = Path(path)
    _check_frames(frames)
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or not 1 <= fps <= MAX_FPS:
        raise ValueError(f"fps must be a whole number from 1 to {MAX_FPS}, got {fps!r}.")
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"The video file name must end in .mp4, got {path.name!r}.")
    comment = _settings_json(metadata)
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2
    with _atomic_target(path) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            container.metadata[SETTINGS_TAG] = comment
            stream = container.add_stream("libx264", rate=int(fps))
            stream.width, stream.height = width + pad_w, height + pad_h
            stream.pix_fmt = "yuv420p"
            stream.options = dict(X264_OPTIONS)
            stream.codec_context.thread_count = 0  # x264 picks a thread count for this machine
            _tag_bt709(stream.codec_context)
            for index, frame in enumerate(frames):
                if pad_h or pad_w:
                    frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                rgb = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(frame), format="rgb24")
                yuv = rgb.reformat(format="yuv420p", dst_colorspace="ITU709")
                yuv.pts = index
                container.mux(stream.encode(yuv))
            container.mux(stream.encode(None))
    return path


def read_settings(path: Path) -> dict[str, Any]:
    """The settings JSON embedded by `write_mp4`, as a dict."""
    path = Path(path)
    try:
        with av.open(str(_existing(path))) as container:
            if not container.streams.video:
                raise VideoFileError(f"{path.name} holds no video stream, so it is not a studio video.")
            text = container.metadata.get(SETTINGS_TAG)
    except av.FFmpegError as exc:
        raise VideoFileError(f"{path.name} cannot be read as a video ({exc.strerror}).") from exc
    if not text:
        raise VideoFileError(f"{path.name} carries no generation settings; was it made by Wan Studio?")
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VideoFileError(f"{path.name} has a comment that is not studio settings JSON.") from exc
    if not isinstance(settings, dict):
        raise VideoFileError(f"{path.name} has a comment that is not studio settings JSON.")
    return settings


def rewrite_settings(path: Path, metadata: Mapping[str, Any]) -> Path:
    """Replace an MP4's embedded settings without re-encoding (the video stream is copied)."""
    path = Path(path)
    comment = _settings_json(metadata)
    try:
        with av.open(str(_existing(path))) as source, _atomic_target(path) as tmp:
            if not source.streams.video:
                raise VideoFileError(f"{path.name} holds no video stream.")
            with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
                out.metadata[SETTINGS_TAG] = comment
                stream = out.add_stream_from_template(source.streams.video[0])
                for packet in source.demux(source.streams.video[0]):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    packet.stream = stream
                    out.mux(packet)
    except av.FFmpegError as exc:
        raise VideoFileError(f"{path.name} cannot be read as a video ({exc.strerror}).") from exc
    return path


def read_frames(path: Path) -> np.ndarray:
    """All frames of the first video stream as uint8 (T, H, W, 3) RGB."""
    frames = list(_decode(path))
    if not frames:
        raise VideoFileError(f"{Path(path).name} holds no video frames.")
    return np.stack(frames)


def last_frame(path: Path) -> Image.Image:
    """The last frame of a video as an RGB image (e.g. to continue a clip from where it ends)."""
    last = None
    for last in _decode(path):
        pass
    if last is None:
        raise VideoFileError(f"{Path(path).name} holds no video frames.")
    return Image.fromarray(last, mode="RGB")


def write_poster(frame: np.ndarray, path: Path) -> Path:
    """Save one uint8 (H, W, 3) frame as a JPEG or PNG (chosen by the suffix), atomically."""
    path = Path(path)
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        got = getattr(frame, "shape", type(frame).__name__)
        raise ValueError(f"A poster frame must be a (height, width, 3) array, got {got}.")
    _check_frames(frame[None])
    image_format = _POSTER_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"A poster file name must end in .jpg, .jpeg or .png, got {path.name!r}.")
    options = {"quality": 90} if image_format == "JPEG" else {}
    with _atomic_target(path) as tmp:
        Image.fromarray(np.ascontiguousarray(frame), mode="RGB").save(tmp, format=image_format, **options)
    return path


def _check_frames(frames: Any) -> None:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"Frames must be a numpy array, got {type(frames).__name__}.")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Frames must have shape (frames, height, width, 3), got {frames.shape}.")
    if frames.dtype != np.uint8:
        raise ValueError(f"Frames must be uint8 (0-255), got {frames.dtype}; convert with "
                         "(x * 255).round().astype(np.uint8) for floats in 0..1.")
    if 0 in frames.shape:
        raise ValueError(f"Frames must not be empty, got shape {frames.shape}.")


def _settings_json(metadata: Mapping[str, Any]) -> str:
    if not isinstance(metadata, Mapping):
        raise ValueError(f"Video metadata must be a mapping, got {type(metadata).__name__}.")
    try:
        return json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Video metadata must be JSON-serializable: {exc}.") from exc


def _tag_bt709(codec: Any) -> None:
    """Say in the stream which colour matrix the frames were converted with (browsers honour it)."""
    codec.colorspace = av.video.reformatter.Colorspace.ITU709
    codec.color_primaries = av.video.reformatter.ColorPrimaries.BT709
    codec.color_trc = av.video.reformatter.ColorTrc.BT709
    codec.color_range = av.video.reformatter.ColorRange.MPEG


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise VideoFileError(f"No video file at {path}.")
    return path


def _decode(path: Path) -> Iterator[np.ndarray]:
    path = Path(path)
    try:
        with av.open(str(_existing(path))) as container:
            if not container.streams.video:
                raise VideoFileError(f"{path.name} holds no video stream.")
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        raise VideoFileError(f"{path.name} cannot be read as a video ({exc.strerror}).") from exc


@contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it on success and is removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp makes 0600; media files are meant to be served
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
