"""The model manager: which weights serve each variant, what is loaded, where, and when it goes.

One pipeline is loaded at a time; asking for another variant lets the first go. On CUDA the
pipeline runs in bf16 (VAE in float32) with diffusers' model CPU offload, which keeps one
component on the GPU at a time: the high-noise expert is moved off before the low-noise expert
arrives, and the text encoder and VAE sit in host memory while idle. On CPU everything stays in
place in float32.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from .errors import WeightsError
from .loader import FolderInfo, check_variant, inspect_folder, resolve_source
from .request import VariantDefaults
from .variants import VARIANTS, VariantSpec, get_variant

log = logging.getLogger(__name__)

DEMO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "demo"
DEMO_ENV = "WAN_STUDIO_DEMO_WEIGHTS"  # "off" disables the bundled demo weights; a path replaces them


def default_demo_dir() -> Path | None:
    """The bundled demo weights folder, unless WAN_STUDIO_DEMO_WEIGHTS turns it off or moves it."""
    setting = os.environ.get(DEMO_ENV, "").strip()
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    return Path(setting).expanduser() if setting else DEMO_WEIGHTS_DIR


@dataclass(frozen=True)
class Placement:
    """Where and in which precision a pipeline runs."""

    device: str
    dtype_name: Literal["float32", "bfloat16"]
    offload: Literal["none", "model"]
    vae_tiling: bool = False

    @property
    def dtype(self) -> Any:
        """The torch dtype for transformers and text encoder."""
        import torch

        return getattr(torch, self.dtype_name)


def choose_placement(device: str | None = None, vae_tiling: bool = False) -> Placement:
    """bf16 with model offload on CUDA, float32 in place elsewhere; `device=None` picks CUDA if present."""
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return Placement(device, "bfloat16", "model", vae_tiling)
    return Placement(device, "float32", "none", vae_tiling)


@dataclass
class LoadedModel:
    """A loaded pipeline and what it was loaded from."""

    spec: VariantSpec
    info: FolderInfo
    source: str
    placement: Placement
    pipe: Any
    _image_pipe: Any = None
    _hooked: Any = field(default=None, repr=False)

    @property
    def profile_name(self) -> str:
        """The name of the memory profile this pipeline was loaded with."""
        return getattr(self.placement, "name", self.placement.offload)

    def pipeline_for(self, with_image: bool) -> Any:
        """The diffusers pipeline that serves a text-only or an image-conditioned run."""
        wanted = self.pipe
        if with_image and self.spec.image_pipeline_class != self.spec.pipeline_class:
            if self._image_pipe is None:
                from diffusers import WanImageToVideoPipeline

                self._image_pipe = WanImageToVideoPipeline.from_pipe(self.pipe)
            wanted = self._image_pipe
        self._place(wanted)
        return wanted

    def _place(self, pipe: Any) -> None:
        """Apply offload hooks to `pipe` (once), taking them off the sibling pipeline first."""
        if self.placement.offload != "model" or self._hooked is pipe:
            return
        if self._hooked is not None:
            self._hooked.remove_all_hooks()
        pipe.enable_model_cpu_offload(device=self.placement.device)
        self._hooked = pipe

    def release(self) -> None:
        """Drop hooks and references so the memory can be reclaimed."""
        for pipe in (self.pipe, self._image_pipe):
            if pipe is not None and self.placement.offload != "none":
                pipe.remove_all_hooks()
        self.pipe = self._image_pipe = self._hooked = None


class ModelManager:
    """Maps variants to weights sources and keeps at most one pipeline loaded."""

    def __init__(self, weights: Mapping[str, str] | None, cache_dir: Path,
                 device: str | None = None, vae_tiling: bool = False,
                 demo_dir: Path | None | Literal["default"] = "default") -> None:
        self._sources: dict[str, str] = {}
        for variant_id, source in (weights or {}).items():
            get_variant(variant_id)
            self._sources[variant_id] = str(source)
        self._demo: set[str] = set()
        if demo_dir == "default":
            demo_dir = default_demo_dir()
        if demo_dir is not None:
            for variant_id in VARIANTS:
                folder = Path(demo_dir) / variant_id
                if variant_id not in self._sources and (folder / "model_index.json").is_file():
                    self._sources[variant_id] = str(folder)
                    self._demo.add(variant_id)
        self.cache_dir = Path(cache_dir)
        self._device = device
        self._vae_tiling = vae_tiling
        self._lock = threading.RLock()
        self._loaded: LoadedModel | None = None
        self._infos: dict[str, FolderInfo] = {}

    def available(self) -> list[str]:
        """Variant ids that have a weights source, in registry order."""
        return [v for v in VARIANTS if v in self._sources]

    def source_for(self, variant_id: str) -> str | None:
        """The weights source configured for a variant, if any."""
        return self._sources.get(variant_id)

    def is_demo(self, variant_id: str) -> bool:
        """Whether a variant is served by the studio's bundled demo weights."""
        if variant_id in self._demo:
            return True
        info = self._local_info(variant_id)
        return bool(info and info.is_demo)

    def defaults_for(self, variant_id: str) -> VariantDefaults:
        """Official defaults, updated by the `studio.json` of a local weights folder if it has one."""
        defaults = VariantDefaults.official(get_variant(variant_id))
        info = self._local_info(variant_id)
        if info is not None:
            defaults = defaults.updated(info.studio.get("defaults") or {})
        return defaults

    def _local_info(self, variant_id: str) -> FolderInfo | None:
        source = self._sources.get(variant_id)
        if source is None or not Path(source).expanduser().is_dir():
            return None
        if variant_id not in self._infos:
            try:
                self._infos[variant_id] = inspect_folder(Path(source).expanduser())
            except WeightsError:
                return None
        return self._infos[variant_id]

    def projection_cache(self, variant_id: str) -> Path:
        """Where the fitted latent->RGB preview map for a variant's weights is cached."""
        source = self._sources.get(variant_id, variant_id)
        key = hashlib.sha256(str(Path(source).expanduser().resolve() if Path(source).expanduser().exists()
                                  else source).encode()).hexdigest()[:16]
        return self.cache_dir / "previews" / f"{variant_id}-{key}.safetensors"

    def loaded_variant(self) -> str | None:
        """The variant whose pipeline is in memory now, if any."""
        return self._loaded.spec.id if self._loaded else None

    def get(self, variant_id: str) -> LoadedModel:
        """The loaded pipeline for a variant, loading it (and letting the previous one go) if needed."""
        spec = get_variant(variant_id)
        with self._lock:
            if self._loaded is not None and self._loaded.spec.id == spec.id:
                return self._loaded
            source = self._sources.get(spec.id)
            if source is None:
                raise WeightsError(
                    f"No weights are configured for {spec.id}: start the studio with "
                    f"--weights {spec.id}=PATH_OR_HUB_ID (e.g. {spec.hub_repo})."
                )
            self.unload()
            self._loaded = self._load(spec, source)
            return self._loaded

    def unload(self) -> None:
        """Let the loaded pipeline go and return its memory."""
        with self._lock:
            if self._loaded is None:
                return
            log.info("unloading %s", self._loaded.spec.id)
            self._loaded.release()
            self._loaded = None
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _load(self, spec: VariantSpec, source: str) -> LoadedModel:
        folder = resolve_source(source, self.cache_dir / "hub")
        info = inspect_folder(folder)
        check_variant(info, spec)
        placement = choose_placement(self._device, self._vae_tiling)
        log.info("loading %s from %s on %s (%s)", spec.id, folder, placement.device,
                 placement.dtype_name)
        pipe = _from_pretrained(folder, spec, placement)
        return LoadedModel(spec=spec, info=info, source=source, placement=placement, pipe=pipe)


def _from_pretrained(folder: Path, spec: VariantSpec, placement: Placement) -> Any:
    """Load the variant's diffusers pipeline class from a checked folder."""
    import torch
    import diffusers
    from diffusers import AutoencoderKLWan

    pipeline_class = getattr(diffusers, spec.pipeline_class)
    try:
        vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32)
        pipe = pipeline_class.from_pretrained(folder, vae=vae, dtype=placement.dtype)
    except (OSError, ValueError, RuntimeError, EnvironmentError) as exc:
        raise WeightsError(f"The weights at {folder} could not be loaded: {exc}") from None
    if placement.offload == "none":
        pipe.to(placement.device)
    if placement.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe
