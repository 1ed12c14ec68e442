"""Find and check Wan2.2 weights: a local diffusers folder or a Hub repo id.

Everything here answers with a `WeightsError` whose message is one sentence a user can act on:
a missing folder, a missing component, a truncated safetensors file, an id that is not in the
local cache while offline, or a folder holding another variant than the one asked for.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import WeightsError
from .variants import VARIANTS, VariantSpec

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
STUDIO_FILE = "studio.json"  # optional: {"demo": bool, "variant": id, "defaults": {...}}
WEIGHT_SUFFIXES = (".safetensors",)


@dataclass(frozen=True)
class FolderInfo:
    """What a diffusers pipeline folder holds, read from its configs (no weights loaded)."""

    path: Path
    pipeline_class: str
    components: tuple[str, ...]
    variant_id: str
    transformer_in_channels: int
    has_transformer_2: bool
    boundary_ratio: float | None
    expand_timesteps: bool
    studio: dict[str, Any] = field(default_factory=dict)

    @property
    def is_demo(self) -> bool:
        """Whether the folder declares itself as the studio's small demo weights."""
        return bool(self.studio.get("demo"))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{what} is missing: {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{what} at {path} could not be read ({exc}).") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{what} at {path} is not a JSON object.")
    return data


def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file whose size does not match its own header (truncated or padded)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError("header length beyond end of file")
            header = json.loads(handle.read(header_len))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(
            f"The weights file {path} is damaged or truncated ({exc}); download or copy it again."
        ) from None
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if size != expected:
        raise WeightsError(
            f"The weights file {path} is truncated: {size} bytes on disk, {expected} expected; "
            "download or copy it again."
        )


def detect_variant(model_index: dict[str, Any], transformer_config: dict[str, Any],
                   has_transformer_2: bool) -> str:
    """Tell which Wan2.2 variant a folder holds from its configs, or raise WeightsError."""
    in_channels = int(transformer_config.get("in_channels", -1))
    if model_index.get("expand_timesteps") or in_channels == 48:
        return "ti2v-5b"
    if has_transformer_2 and in_channels == 36:
        return "i2v-a14b"
    if has_transformer_2 and in_channels == 16:
        return "t2v-a14b"
    kind = "a single-expert Wan2.1-style model" if not has_transformer_2 else "an unknown layout"
    raise WeightsError(
        f"This folder holds {kind} (transformer in_channels {in_channels}), not one of the Wan2.2 "
        f"variants {', '.join(VARIANTS)}."
    )


def inspect_folder(path: str | Path) -> FolderInfo:
    """Read a pipeline folder's configs and check every listed component is present and whole."""
    path = Path(path)
    if not path.is_dir():
        raise WeightsError(f"No weights folder at {path}: check the path.")
    model_index = _read_json(path / "model_index.json", "model_index.json")
    components = tuple(
        name for name, value in model_index.items()
        if not name.startswith("_") and isinstance(value, list) and value and value[0] is not None
    )
    for name in components:
        folder = path / name
        if not folder.is_dir():
            raise WeightsError(
                f"The component {name!r} listed in {path / 'model_index.json'} is missing: "
                f"no {name}/ folder in {path}."
            )
        if name in ("transformer", "transformer_2", "vae", "text_encoder"):
            weight_files = [p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES]
            if not weight_files and not any(folder.glob("*.bin")):
                raise WeightsError(f"The component {name!r} in {path} has no weights file.")
            for weight_file in weight_files:
                check_safetensors(weight_file)
    if "transformer" not in components:
        raise WeightsError(f"{path} has no transformer/: it is not a Wan pipeline folder.")
    transformer_config = _read_json(path / "transformer" / "config.json", "transformer/config.json")
    has_transformer_2 = "transformer_2" in components
    variant_id = detect_variant(model_index, transformer_config, has_transformer_2)
    studio = _read_json(path / STUDIO_FILE, STUDIO_FILE) if (path / STUDIO_FILE).is_file() else {}
    return FolderInfo(
        path=path,
        pipeline_class=str(model_index.get("_class_name", "")),
        components=components,
        variant_id=variant_id,
        transformer_in_channels=int(transformer_config.get("in_channels", -1)),
        has_transformer_2=has_transformer_2,
        boundary_ratio=model_index.get("boundary_ratio"),
        expand_timesteps=bool(model_index.get("expand_timesteps")),
        studio=studio,
    )


def check_variant(info: FolderInfo, spec: VariantSpec) -> None:
    """Refuse a folder that holds another variant than `spec`, naming both."""
    if info.variant_id != spec.id:
        raise WeightsError(
            f"The weights at {info.path} hold {info.variant_id}, but they were given for {spec.id}; "
            f"pass them as --weights {info.variant_id}=... or choose {spec.id} weights."
        )


def resolve_source(source: str, cache_dir: Path) -> Path:
    """A local folder for `source`: the folder itself, or a Hub repo fetched into `cache_dir`."""
    local = Path(os.path.expanduser(source))
    if local.exists():
        return local
    if not HUB_ID.match(source) or source.startswith((".", "/", "~")):
        raise WeightsError(f"No weights folder at {source}: check the path.")
    from diffusers import DiffusionPipeline
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(DiffusionPipeline.download(source, cache_dir=str(cache_dir)))
    except GatedRepoError:
        raise WeightsError(f"The Hub repo {source} is gated: accept its licence and log in "
                           "(HF_TOKEN) first.") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"There is no Hub repo {source}; check the id "
                           "(e.g. Wan-AI/Wan2.2-TI2V-5B-Diffusers).") from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, HfHubHTTPError) as exc:
        if offline or isinstance(exc, LocalEntryNotFoundError):
            raise WeightsError(
                f"The weights {source} are not in the local cache ({cache_dir}) and the studio is "
                "offline; download them once with network access or pass a local folder."
            ) from None
        raise WeightsError(f"Could not download {source} from the Hub ({exc}).") from None
