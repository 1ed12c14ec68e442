"""The model manager: which weights serve each variant, what is loaded, where, and when it goes.

One pipeline is loaded at a time (plus any variant preloaded at start-up); asking for another
variant lets the first go. Where and how a pipeline sits is a memory profile
(pipelines.profiles): chosen from the GPU's memory and the host's RAM unless one is named
(`profile=`, or WAN_STUDIO_PROFILE), checked against the machine before anything loads, and
applied with diffusers' APIs (pipelines.placement). On CPU everything stays in place in float32.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from .errors import ProfileError, WeightsError
from .loader import FolderInfo, check_variant, inspect_folder, resolve_source
from .profiles import (PROFILE_ENV, PROFILES, Profile, check_profile, choose_profile, get_profile,
                       machine_memory)
from .presets import PRESET_SOURCE_ENV
from .request import VariantDefaults
from .speed import SpeedState
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


@dataclass
class LoadedModel:
    """A loaded pipeline, what it was loaded from, and how it is placed (its memory profile)."""

    spec: VariantSpec
    info: FolderInfo | None  # None for a pipeline built in memory (ModelManager.adopt)
    source: str
    profile: Profile
    device: str
    pipe: Any
    notes: tuple[str, ...] = ()  # how the profile was applied on this machine (e.g. float8 method)
    offload_dir: Path | None = None
    loras: Any = None  # pipelines.loras.LoraState: the adapters loaded into the experts
    speed: SpeedState = field(default_factory=SpeedState)  # what stays compiled between takes
    _image_pipe: Any = None
    _hooked: Any = field(default=None, repr=False)

    @property
    def profile_name(self) -> str:
        """The name of the memory profile this pipeline was loaded with."""
        return self.profile.name

    def pipeline_for(self, with_image: bool) -> Any:
        """The diffusers pipeline that serves a text-only or an image-conditioned run."""
        wanted = self.pipe
        if with_image and self.spec.image_pipeline_class != self.spec.pipeline_class:
            if self._image_pipe is None:
                self._image_pipe = image_pipeline(self.pipe)
            wanted = self._image_pipe
        self._place(wanted)
        return wanted

    def _place(self, pipe: Any) -> None:
        """Apply model offload hooks to `pipe` (once), taking them off the sibling pipeline first."""
        if self.profile.offload != "model" or self._hooked is pipe:
            return
        if self._hooked is not None:
            self._hooked.remove_all_hooks()
        pipe.enable_model_cpu_offload(device=self.device)
        self._hooked = pipe

    def release(self) -> None:
        """Drop hooks and references so the memory can be reclaimed."""
        for pipe in (self.pipe, self._image_pipe):
            if pipe is not None and self.profile.offload == "model":
                pipe.remove_all_hooks()
        self.pipe = self._image_pipe = self._hooked = self.loras = None
        if self.offload_dir is not None:
            shutil.rmtree(self.offload_dir, ignore_errors=True)


def image_pipeline(pipe: Any) -> Any:
    """A WanImageToVideoPipeline on the same modules as `pipe`, without any cast.

    `WanImageToVideoPipeline.from_pipe(pipe)` without a dtype casts the shared modules to float32,
    which turned a bf16 TI2V-5B into float32 for every later run; building the pipeline from the
    components keeps every module exactly as it is.
    """
    from diffusers import WanImageToVideoPipeline

    image = WanImageToVideoPipeline(**pipe.components, boundary_ratio=pipe.config.boundary_ratio,
                                    expand_timesteps=pipe.config.expand_timesteps)
    image.set_progress_bar_config(disable=True)
    return image


class ModelManager:
    """Maps variants to weights sources and keeps at most one pipeline loaded."""

    def __init__(self, weights: Mapping[str, str] | None, cache_dir: Path,
                 device: str | None = None, vae_tiling: bool = False,
                 demo_dir: Path | None | Literal["default"] = "default",
                 profile: str | Profile | None = None, lora_dir: Path | None = None,
                 preset_source: str | None = None) -> None:
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
        # LoRAs: <data>/loras beside <data>/cache unless given; preset files: a folder or Hub repo
        self.lora_dir = Path(lora_dir) if lora_dir is not None else self.cache_dir.parent / "loras"
        self.preset_source = preset_source or os.environ.get(PRESET_SOURCE_ENV, "").strip() or None
        self._device = device
        self._vae_tiling = vae_tiling
        if profile is None and os.environ.get(PROFILE_ENV, "").strip():
            profile = os.environ[PROFILE_ENV].strip()
        self._profile = get_profile(profile) if isinstance(profile, str) else profile
        self._lock = threading.RLock()
        self._loaded: dict[str, LoadedModel] = {}
        self._pinned: set[str] = set()
        self._last: str | None = None
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

    def demo_knowledge(self, variant_id: str) -> dict[str, list[str]] | None:
        """What a demo weights folder says its models know (words and controls), if it says."""
        info = self._local_info(variant_id)
        knows = info.studio.get("knows") if info is not None else None
        return knows if isinstance(knows, dict) else None

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

    def device(self) -> str:
        """The device runs go to ("cuda", "cuda:1", "cpu"), without loading anything."""
        return self._device_name()

    def loaded_variant(self) -> str | None:
        """The variant whose pipeline was loaded or served last, if it is still in memory."""
        return self._last if self._last in self._loaded else None

    def loaded(self, variant_id: str) -> LoadedModel | None:
        """The loaded pipeline of a variant, without loading it."""
        return self._loaded.get(variant_id)

    def get(self, variant_id: str) -> LoadedModel:
        """The loaded pipeline for a variant, loading it (and letting others go) if needed.

        Variants preloaded with `preload` stay; any other loaded variant is let go first, so at
        most one pipeline that was not preloaded is in memory.
        """
        spec = get_variant(variant_id)
        with self._lock:
            if spec.id in self._loaded:
                self._last = spec.id
                return self._loaded[spec.id]
            source = self._sources.get(spec.id)
            if source is None:
                raise WeightsError(
                    f"No weights are configured for {spec.id}: start the studio with "
                    f"--weights {spec.id}=PATH_OR_HUB_ID (e.g. {spec.hub_repo})."
                )
            for other in [v for v in self._loaded if v not in self._pinned]:
                self._unload(other)
            self._loaded[spec.id] = self._load(spec, source)
            self._last = spec.id
            return self._loaded[spec.id]

    def preload(self, variant_ids: Sequence[str]) -> list[LoadedModel]:
        """Load these variants now and keep them loaded (ZeroGPU: at start-up, outside GPU calls).

        On ZeroGPU, pass `profile="zerogpu"` to the manager: the weights are then placed on `cuda`
        here, where ZeroGPU emulates the device, so a GPU call only denoises and decodes.
        """
        loaded = []
        with self._lock:
            for variant_id in variant_ids:
                spec = get_variant(variant_id)
                self._pinned.add(spec.id)
                loaded.append(self.get(spec.id))
        return loaded

    def available_loras(self) -> list[Any]:
        """The LoRA files in the studio's LoRA folder (`pipelines.loras.LoraFile`), for a picker."""
        from .loras import list_loras

        return list_loras(self.lora_dir)

    def resolve_loras(self, request: Any) -> list[Any]:
        """A request's LoRAs (its preset's first) found and hashed: LoraError names what is missing.

        Cheap (files are hashed once), so callers can check a request before loading a model.
        """
        from .loras import resolve_take_loras
        from .presets import get_preset

        preset = get_preset(request.preset) if request.preset else None
        return resolve_take_loras(request.loras, preset, self.lora_dir, self.cache_dir / "hub",
                                  self.preset_source)

    def adopt(self, variant_id: str, pipe: Any, profile: str | Profile, device: str | None = None,
              source: str = "in-memory") -> LoadedModel:
        """Serve a pipeline built in memory (benchmarks on random weights) under a profile.

        It is placed as `_load` places loaded weights and kept like a preloaded variant.
        """
        from .loras import LoraState
        from .placement import place_pipeline

        spec = get_variant(variant_id)
        profile = get_profile(profile) if isinstance(profile, str) else profile
        device = device or profile.device
        with self._lock:
            if spec.id in self._loaded:
                self._unload(spec.id)
            notes = place_pipeline(pipe, spec, profile, device, self._offload_root())
            loaded = LoadedModel(spec=spec, info=None, source=source, profile=profile, device=device,
                                 pipe=pipe, notes=tuple(notes))
            loaded.loras = LoraState(loaded)
            self._loaded[spec.id] = loaded
            self._pinned.add(spec.id)
            self._last = spec.id
            return loaded

    def profile_for(self, variant_id: str) -> Profile:
        """The memory profile a variant would be loaded with (it is only checked when loading)."""
        if self._profile is not None:
            return self._profile
        device = self._device_name()
        if device == "cpu":
            return PROFILES["cpu"]
        from .memory import ModelShapes

        vram, ram = machine_memory(device)
        folder = self._local_folder(variant_id)
        return choose_profile(vram, ram, variant_id,
                              shapes=ModelShapes.from_folder(folder) if folder else None)

    def _device_name(self) -> str:
        if self._device is not None:
            return self._device
        if self._profile is not None:
            return self._profile.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _local_folder(self, variant_id: str) -> Path | None:
        source = self._sources.get(variant_id)
        if source and (Path(source).expanduser() / "model_index.json").is_file():
            return Path(source).expanduser()
        return None

    def unload(self) -> None:
        """Let every loaded pipeline go (preloaded ones too) and return the memory."""
        with self._lock:
            for variant_id in list(self._loaded):
                self._unload(variant_id)
            self._pinned.clear()

    def _unload(self, variant_id: str) -> None:
        loaded = self._loaded.pop(variant_id)
        log.info("unloading %s", variant_id)
        loaded.release()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _load(self, spec: VariantSpec, source: str) -> LoadedModel:
        from .memory import ModelShapes
        from .placement import load_pipeline

        folder = resolve_source(source, self.cache_dir / "hub")
        info = inspect_folder(folder)
        check_variant(info, spec)
        shapes = ModelShapes.from_folder(folder)
        profile = self._profile
        device = self._device_name()
        vram, ram = machine_memory(device)
        if profile is None:
            profile = PROFILES["cpu"] if device == "cpu" else choose_profile(vram, ram, spec.id, shapes=shapes)
        if profile.device == "cuda" and not device.startswith("cuda"):
            raise ProfileError(f"The {profile.name} profile needs a CUDA GPU; this run is on {device} "
                               "(use --profile cpu).")
        if profile.device == "cpu":
            device = "cpu"
        check_profile(profile, spec.id, ram, vram if device.startswith("cuda") else None, shapes=shapes)
        if self._vae_tiling and not profile.vae_tiling:
            profile = replace(profile, vae_tiling=True)
        offload_dir = None
        if profile.offload == "group-disk":
            offload_dir = Path(tempfile.mkdtemp(prefix=f"{spec.id}-", dir=self._offload_root()))
        log.info("loading %s from %s with the %s profile on %s", spec.id, folder, profile.name, device)
        pipe, notes = load_pipeline(folder, spec, profile, device, offload_dir or self.cache_dir)
        from .loras import LoraState

        loaded = LoadedModel(spec=spec, info=info, source=source, profile=profile, device=device,
                             pipe=pipe, notes=tuple(notes), offload_dir=offload_dir)
        loaded.loras = LoraState(loaded)
        return loaded

    def _offload_root(self) -> Path:
        root = self.cache_dir / "offload"
        root.mkdir(parents=True, exist_ok=True)
        return root
