"""The media folder: generated names, atomic writes, and paths that cannot escape it."""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Literal, Union

from .errors import InvalidInputError, MediaPathError, StorageError

MediaKind = Literal["video", "poster", "image", "end_image", "latents", "shot"]
# A file to store: its bytes, the path of a file to copy, or an open binary stream.
Source = Union[bytes, str, "os.PathLike[str]", BinaryIO]

TEMP_PREFIX = ".tmp-"
_STEMS: dict[str, str] = {"video": "video", "poster": "poster", "image": "input",
                          "end_image": "end", "latents": "latents", "shot": "shot"}
_ACCEPTED: dict[str, tuple[str, ...]] = {
    "video": (".mp4",),
    "poster": (".jpg", ".png", ".webp"),
    "image": (".png", ".jpg", ".webp"),
    "end_image": (".png", ".jpg", ".webp"),  # first-last-frame takes: the frame to end on
    # an extended take's whole shot: its parent chain and itself assembled into one MP4
    "shot": (".mp4",),
    # a failed decode's final latents, kept so the take can be decoded again
    "latents": (".safetensors",),
}
_COPY_CHUNK = 1 << 20
MAX_IMAGE_PIXELS = 40_000_000  # a start image larger than this is refused, never decoded
# What generated paths look like: parts of letters, digits, '_', '-' and '.', never starting with
# '.', so no '.', '..', hidden or temporary names, no empty parts, no leading '/', '\\' or NUL.
_SAFE_RELATIVE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")


def sniff_suffix(head: bytes) -> str | None:
    """The file suffix its first bytes announce (MP4, PNG, JPEG, WebP, safetensors), or None."""
    if head[4:8] == b"ftyp":
        return ".mp4"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    # safetensors: an 8-byte little-endian header length (under 100 MB), then the JSON header
    if len(head) > 9 and head[8:10] in (b'{"', b"{ ") and int.from_bytes(head[:8], "little") < 10**8:
        return ".safetensors"
    return None


class MediaStore:
    """Owns `<data>/media`: `p<project>/t<take>/{video,poster,input}-<32 hex>.<ext>`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root_path = Path(root)
        try:
            root_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot create the media folder {root_path}: {exc.strerror}.") from exc
        self.root = Path(os.path.realpath(root_path))
        self._root_str = str(self.root)

    # Layout -------------------------------------------------------------------------------------

    @staticmethod
    def project_relative(project_id: int) -> str:
        """The relative folder of a project's media."""
        return f"p{int(project_id)}"

    @staticmethod
    def take_relative(project_id: int, take_id: int) -> str:
        """The relative folder of a take's media."""
        return f"p{int(project_id)}/t{int(take_id)}"

    def take_dir(self, project_id: int, take_id: int) -> Path:
        """The absolute folder of a take's media (it may not exist yet)."""
        return self.root / self.take_relative(project_id, take_id)

    def project_dir(self, project_id: int) -> Path:
        """The absolute folder of a project's media (it may not exist yet)."""
        return self.root / self.project_relative(project_id)

    # Resolving ----------------------------------------------------------------------------------

    def resolve(self, relative: str) -> Path:
        """The absolute path of a stored relative path, refusing anything outside the media folder.

        Refused: empty, absolute, drive-letter, NUL, backslash, '.', '..' or empty parts, and any
        symlink on the way (the store never makes links, so one is a sign of tampering).
        """
        return Path(self._walk(relative, None)[0])

    def exists(self, relative: str | None, memo: dict[str, int | None] | None = None) -> bool:
        """True when a stored path names a regular file inside the media folder.

        `memo` (any dict, reused across calls) saves looking at the same folders twice.
        """
        if relative is None:
            return False
        try:
            mode = self._walk(relative, memo)[1]
        except MediaPathError:
            return False
        return mode is not None and stat.S_ISREG(mode)

    def _walk(self, relative: str, memo: dict[str, int | None] | None) -> tuple[str, int | None]:
        """Check a stored path part by part without following links: (absolute path, its lstat mode)."""
        if not isinstance(relative, str) or len(relative) > 1024 or not _SAFE_RELATIVE.fullmatch(relative):
            raise MediaPathError(_why_refused(relative))
        memo = {} if memo is None else memo
        mode: int | None = None
        end = -1
        while True:
            end = relative.find("/", end + 1)
            current = f"{self._root_str}/{relative if end < 0 else relative[:end]}"
            if current in memo:
                mode = memo[current]
            else:
                try:
                    mode = os.lstat(current).st_mode
                except OSError:
                    mode = None
                memo[current] = mode
            if mode is None:
                break  # the rest does not exist, so nothing below can lead elsewhere
            if stat.S_ISLNK(mode):
                raise MediaPathError("A media path may not lead outside the media folder through a link.")
            if end < 0:
                return current, mode
        return f"{self._root_str}/{relative}", None

    # Writing ------------------------------------------------------------------------------------

    def relative_for(self, project_id: int, take_id: int, kind: MediaKind, suffix: str) -> str:
        """A new generated relative path for a take's file of this kind and suffix."""
        if kind not in _STEMS:
            raise InvalidInputError(f"Unknown media kind {kind!r}; use one of {', '.join(_STEMS)}.")
        if suffix not in _ACCEPTED[kind]:
            allowed = ", ".join(s.lstrip(".").upper() for s in _ACCEPTED[kind])
            raise InvalidInputError(f"The {kind} file must be {allowed}.")
        # 128 random bits in every name: knowing a take's ids is never enough to fetch its files.
        return f"{self.take_relative(project_id, take_id)}/{_STEMS[kind]}-{secrets.token_hex(16)}{suffix}"

    def write(self, project_id: int, take_id: int, kind: MediaKind, source: Source) -> str:
        """Store a take's file atomically under its generated name; returns the relative path.

        A start or end image (`kind="image"` or `"end_image"`) is stored re-encoded without its metadata (EXIF, XMP, text
        chunks: camera, place, time, software), its EXIF rotation applied to the pixels.
        """
        if kind in ("image", "end_image"):
            source = clean_image(source)
        with _open_source(source) as stream:
            head = stream.read(16)
            suffix = sniff_suffix(head)
            if suffix is None:
                allowed = ", ".join(s.lstrip(".").upper() for s in _ACCEPTED.get(kind, ()))
                raise InvalidInputError(f"The {kind} file is not a recognised {allowed or 'media'} file.")
            relative = self.relative_for(project_id, take_id, kind, suffix)
            target = self.resolve(relative)
            _atomic_copy(stream, head, target)
        return relative

    # Removing -----------------------------------------------------------------------------------

    def remove(self, relative: str) -> None:
        """Remove one stored file or folder (missing is fine)."""
        path = self.resolve(relative)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        _remove_empty_parents(path.parent, self.root)

    def remove_take_files(self, project_id: int, take_id: int, keep: tuple[str, ...] = ()) -> None:
        """Remove a take's files, except the relative paths in `keep`."""
        folder = self.take_dir(project_id, take_id)
        if not folder.is_dir():
            return
        kept = {self.resolve(k) for k in keep if self.exists(k)}
        for entry in folder.iterdir():
            if entry in kept:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if not kept:
            self.remove(self.take_relative(project_id, take_id))

    def remove_project_files(self, project_id: int) -> None:
        """Remove every file of a project."""
        self.remove(self.project_relative(project_id))

    def sweep_temp_files(self) -> int:
        """Remove temporary files left by writes that never finished; returns how many."""
        removed = 0
        for folder, _dirs, files in os.walk(self.root):  # never follows links out of the folder
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    Path(folder, name).unlink(missing_ok=True)
                    removed += 1
        return removed


def clean_image(source: Source) -> bytes:
    """The image re-encoded with no metadata but its colour profile: JPEG stays JPEG (quality 95),
    anything else becomes PNG. Refuses what Pillow cannot read or what is over MAX_IMAGE_PIXELS."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with _open_source(source) as stream:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(stream) as opened:
                    if opened.width * opened.height > MAX_IMAGE_PIXELS:
                        raise InvalidInputError(
                            f"The image is {opened.width}x{opened.height}; the most stored is "
                            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels.")
                    is_jpeg = opened.format == "JPEG"
                    icc = opened.info.get("icc_profile")
                    image = ImageOps.exif_transpose(opened)
                    image.load()
        except InvalidInputError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
                OSError, SyntaxError, ValueError) as exc:
            raise InvalidInputError(f"The image cannot be read as PNG, JPEG or WebP ({exc}).") from None
    out = io.BytesIO()
    options = {"icc_profile": icc} if icc else {}
    if is_jpeg and image.mode in ("RGB", "L", "CMYK"):
        image.save(out, format="JPEG", quality=95, **options)
    else:
        image.save(out, format="PNG", **options)
    return out.getvalue()


@contextmanager
def _open_source(source: Source) -> Iterator[BinaryIO]:
    """Open bytes, a file path or a binary stream for reading."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"The media file {path.name!r} does not exist or is not a file.")
        with open(path, "rb") as stream:
            yield stream
    elif hasattr(source, "read"):
        yield source
    else:
        raise InvalidInputError("A media file must be given as bytes, a file path or a binary stream.")


def _atomic_copy(stream: BinaryIO, head: bytes, target: Path) -> None:
    """Write `head` then the rest of `stream` to a temporary file beside `target`, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}-{target.name}")
    try:
        with open(temp, "xb") as out:
            out.write(head)
            shutil.copyfileobj(stream, out, _COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some platforms cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_empty_parents(folder: Path, root: Path) -> None:
    """Remove now-empty folders between `folder` and the media root."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _why_refused(relative: object) -> str:
    """The reason a stored path does not have the shape of one the store generated."""
    if not isinstance(relative, str) or not relative:
        return "A media path must be a non-empty relative path."
    if len(relative) > 1024:
        return "A media path may not be longer than 1024 characters."
    if "\x00" in relative or "\\" in relative:
        return "A media path may not contain NUL or backslash characters."
    if relative.startswith("/") or (len(relative) > 1 and relative[1] == ":"):
        return "A media path must be relative to the media folder."
    if any(part in ("", ".", "..") for part in relative.split("/")):
        return "A media path may not contain '.', '..' or empty parts."
    return "A media path may only hold letters, digits, '_', '-' and '.', as generated names do."
