"""LoRAs in high/low-noise pairs: find the files, check them, load each into its expert, switch per take.

A take names LoRAs by source (a file in the studio's LoRA folder, a path, or a Hub id) and gives
each a strength per expert. The engine resolves every source (and the take's distill preset
files), hashes the files, then `LoraState.apply` makes the experts hold exactly those adapters:

- loading goes through diffusers' Wan LoRA loader, which converts the original Wan / ComfyUI
  (`diffusion_model.*`, `lora_down`/`lora_up`, `alpha`, `diff_b`) and musubi (`lora_unet_*`)
  formats to the diffusers / PEFT one; `load_into_transformer_2` picks the low-noise expert;
- a file is checked against the expert BEFORE it is loaded (every layer must exist, with the
  shapes of this model), and a failed load is rolled back, so a bad file leaves the pipeline
  exactly as it was;
- adapters stay loaded between takes that use them (strengths are `set_adapters`); the others are
  deleted, and an expert left without adapters gets its PEFT layers removed (`unload_lora`), so a
  plain take after a LoRA take runs the original modules.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .errors import StudioError, WeightsError
from .events import LoraRecord
from .loader import HUB_ID, check_safetensors

if TYPE_CHECKING:
    from .manager import LoadedModel

log = logging.getLogger(__name__)

LORA_SUFFIX = ".safetensors"
EXPERTS = ("transformer", "transformer_2")


class LoraError(StudioError):
    """A LoRA could not be found, read, or does not fit the model; nothing was changed."""


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file offered in the picker."""

    name: str  # path relative to the LoRA folder, with forward slashes
    size_bytes: int


@dataclass(frozen=True)
class ResolvedLora:
    """A take's LoRA with its file found and hashed."""

    name: str
    path: Path
    sha256: str
    high: float
    low: float

    def record(self) -> LoraRecord:
        """What the recipe keeps: name, content hash, strengths."""
        return LoraRecord(self.name, self.sha256, self.high, self.low)


def list_loras(folder: str | Path) -> list[LoraFile]:
    """The .safetensors files under a LoRA folder (subfolders too), sorted by name; [] if absent."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = [p for p in folder.rglob(f"*{LORA_SUFFIX}") if p.is_file() and not p.name.startswith(".")]
    return sorted((LoraFile(p.relative_to(folder).as_posix(), p.stat().st_size) for p in files),
                  key=lambda f: f.name.lower())


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, remembered while its size and modification time stay."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def resolve_lora_source(source: str, lora_dir: Path | None, cache_dir: Path) -> tuple[str, Path]:
    """(display name, local file) for a LoRA source, or a LoraError saying what to fix.

    Tried in order: a file (or a folder holding one .safetensors) at the path; a name in the
    LoRA folder, with or without its suffix; a Hub id `owner/name` (one .safetensors in the repo)
    or `owner/name/path/in/repo.safetensors`, from the local Hub cache when offline.
    """
    path = Path(os.path.expanduser(source))
    if path.exists():
        return path.name, _single_file(path, source)
    if lora_dir is not None:
        for candidate in (lora_dir / source, lora_dir / f"{source}{LORA_SUFFIX}"):
            if candidate.is_file():
                return candidate.relative_to(lora_dir).as_posix(), candidate
    parts = source.split("/")
    if len(parts) >= 2 and HUB_ID.match("/".join(parts[:2])) and not source.startswith((".", "/", "~")):
        return source, _from_hub("/".join(parts[:2]), "/".join(parts[2:]) or None, cache_dir)
    where = f" or in the LoRA folder {lora_dir}" if lora_dir is not None else ""
    raise LoraError(f"No LoRA file {source!r} at that path{where}; check the name, or give a path "
                    "or a Hub id.")


def _single_file(path: Path, source: str) -> Path:
    if path.is_file():
        return path
    files = sorted(path.glob(f"*{LORA_SUFFIX}"))
    if len(files) != 1:
        raise LoraError(f"The LoRA folder {source} holds {len(files)} .safetensors files; name the "
                        "file itself.")
    return files[0]


def _from_hub(repo: str, filename: str | None, cache_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        if filename:
            return Path(hf_hub_download(repo, filename, cache_dir=str(cache_dir)))
        folder = Path(snapshot_download(repo, allow_patterns=[f"*{LORA_SUFFIX}"], cache_dir=str(cache_dir)))
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        if offline or isinstance(exc, LocalEntryNotFoundError):
            raise LoraError(f"The LoRA {repo}{'/' + filename if filename else ''} is not in the local "
                            "Hub cache and the studio is offline; download it once with network "
                            "access or put the file in the LoRA folder.") from None
        raise LoraError(f"The Hub repo {repo} has no file {filename}.") from None
    except EntryNotFoundError:
        raise LoraError(f"The Hub repo {repo} has no file {filename}.") from None
    except RepositoryNotFoundError:
        raise LoraError(f"There is no Hub repo {repo}; check the LoRA's id.") from None
    except (OSError, HfHubHTTPError) as exc:
        raise LoraError(f"Could not download the LoRA {repo} from the Hub ({exc}).") from None
    return _single_file(folder, repo)


# --- checking a file against an expert --------------------------------------------------------


def read_lora(pipe: Any, path: Path, name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The file's state dict in diffusers' naming (converted by diffusers) and its PEFT metadata."""
    try:
        check_safetensors(path)
    except WeightsError:
        raise LoraError(f"The LoRA file {name} is damaged or truncated; download or copy it again.") from None
    try:
        state_dict, metadata = pipe.lora_state_dict(str(path), return_lora_metadata=True)
    except Exception as exc:  # noqa: BLE001 - diffusers' converters raise bare ValueError/KeyError
        raise LoraError(f"The LoRA file {name} is not a Wan LoRA in a format the studio reads "
                        "(diffusers/PEFT, original Wan or ComfyUI, musubi): "
                        f"{type(exc).__name__}: {exc}.") from None
    if not state_dict or not all("lora" in key for key in state_dict):
        raise LoraError(f"The LoRA file {name} holds no LoRA layers (its keys name no lora_A/lora_B "
                        "or lora_down/lora_up weights).")
    return _complete_biases(state_dict), metadata


def _complete_biases(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Give every LoRA layer a zero `lora_B.bias` when some layers have one (`diff_b` files).

    PEFT makes every targeted layer carry a bias as soon as one does; layers whose bias is not in
    the file stay on the meta device and the first forward fails. A zero bias is what the file means.
    """
    import torch

    if not any(key.endswith("lora_B.bias") for key in state_dict):
        return state_dict
    out = dict(state_dict)
    for key, value in state_dict.items():
        if key.endswith("lora_B.weight"):
            bias = key[: -len("weight")] + "bias"
            if bias not in out:
                out[bias] = torch.zeros(value.shape[0], dtype=value.dtype)
    return out


def check_fits(state_dict: dict[str, Any], model: Any, name: str, label: str) -> None:
    """Refuse a LoRA whose layers are not all in `model` with matching shapes, in one sentence."""
    layers: dict[str, dict[str, Any]] = {}
    for key, value in state_dict.items():
        if not key.startswith("transformer."):
            continue
        path, _, kind = key[len("transformer."):].rpartition(".lora_")
        layers.setdefault(path, {})[kind] = value
    if not layers:
        raise LoraError(f"The LoRA file {name} has no layers for a Wan transformer.")
    missing, wrong = [], []
    for path, parts in layers.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            missing.append(path)
            continue
        base = getattr(module, "base_layer", module)  # a layer that already holds another adapter
        shape = getattr(base, "weight", None)
        down, up = parts.get("A.weight"), parts.get("B.weight")
        if shape is None or down is None or up is None or shape.ndim != 2:
            wrong.append(path)
            continue
        if (up.shape[0], down.shape[1]) != tuple(shape.shape) or up.shape[1] != down.shape[0]:
            wrong.append(path)
    if len(missing) == len(layers):
        raise LoraError(f"The LoRA {name} does not fit {label}: none of its {len(layers)} layers "
                        "exist in this model; it is made for another model.")
    if wrong:
        raise LoraError(f"The LoRA {name} was made for a model of another size: {len(wrong)} of its "
                        f"{len(layers)} layers have other shapes than in {label} (first: {wrong[0]}).")
    if missing:
        raise LoraError(f"The LoRA {name} only partly matches {label}: {len(missing)} of its "
                        f"{len(layers)} layers are not in this model (first: {missing[0]}); it was "
                        "not applied.")


# --- adapters per take ------------------------------------------------------------------------


def adapter_name(sha256: str) -> str:
    """The adapter name of a file in an expert: its content, so equal files share one name."""
    return f"lora_{sha256[:16]}"


class LoraState:
    """The adapters loaded into one pipeline's experts, made to match each take."""

    def __init__(self, loaded: "LoadedModel") -> None:
        self.loaded = loaded
        self.loaded_adapters: dict[str, set[str]] = {name: set() for name in EXPERTS}

    def experts(self) -> list[str]:
        """The expert attribute names of this pipeline (`transformer`, and `transformer_2` on A14B)."""
        return list(EXPERTS[: self.loaded.spec.experts])

    def apply(self, pipe: Any, loras: Sequence[ResolvedLora]) -> tuple[LoraRecord, ...]:
        """Make the experts hold exactly these LoRAs at these strengths; returns their records.

        A file that does not fit raises LoraError before anything changes. Loading more than
        one new file: a failure on a later one unloads the earlier ones loaded by this call.
        """
        wanted: dict[str, dict[str, float]] = {name: {} for name in self.experts()}
        for lora in loras:
            for expert, strength in zip(self.experts(), (lora.high, lora.low)):
                if strength != 0.0:
                    adapter = adapter_name(lora.sha256)
                    wanted[expert][adapter] = wanted[expert].get(adapter, 0.0) + strength
        new = [(expert, lora) for lora in loras for expert, strength in
               zip(self.experts(), (lora.high, lora.low))
               if strength != 0.0 and adapter_name(lora.sha256) not in self.loaded_adapters[expert]]
        checked = self._check(pipe, new)
        added: list[tuple[str, str]] = []
        try:
            for (expert, lora), (state_dict, metadata) in zip(new, checked):
                adapter = adapter_name(lora.sha256)
                if adapter in self.loaded_adapters[expert]:
                    continue  # the same file listed twice
                self._load(pipe, expert, adapter, state_dict, metadata)
                added.append((expert, adapter))
        except BaseException:
            for expert, adapter in added:
                self._delete(expert, [adapter])
            raise
        for expert in self.experts():
            model = getattr(pipe, expert)
            stale = sorted(self.loaded_adapters[expert] - set(wanted[expert]))
            if stale:
                self._delete(expert, stale)
            if wanted[expert]:
                names = list(wanted[expert])
                model.set_adapters(names, [wanted[expert][n] for n in names])
        return tuple(lora.record() for lora in loras)

    def clear(self, pipe: Any) -> None:
        """Remove every adapter: the experts run their original modules again."""
        for expert in self.experts():
            if self.loaded_adapters[expert]:
                self._delete(expert, sorted(self.loaded_adapters[expert]))

    def _check(self, pipe: Any, new: Iterable[tuple[str, ResolvedLora]]) -> list[Any]:
        """Read and check every new file before touching any expert."""
        label = f"{self.loaded.spec.id}"
        out = []
        for expert, lora in new:
            state_dict, metadata = read_lora(pipe, lora.path, lora.name)
            which = "the high-noise expert of " if expert == "transformer" and len(self.experts()) == 2 else (
                "the low-noise expert of " if expert == "transformer_2" else "")
            check_fits(state_dict, getattr(pipe, expert), lora.name, which + label)
            out.append((state_dict, metadata))
        return out

    def _load(self, pipe: Any, expert: str, adapter: str, state_dict: dict[str, Any],
              metadata: dict[str, Any] | None) -> None:
        """Load one checked file into one expert through diffusers; undo it if loading fails."""
        model = getattr(pipe, expert)
        try:
            pipe.load_lora_into_transformer(dict(state_dict), transformer=model, adapter_name=adapter,
                                            metadata=metadata, _pipeline=pipe)
        except Exception as exc:  # noqa: BLE001 - roll back whatever PEFT injected
            if adapter in (getattr(model, "peft_config", None) or {}):
                model.delete_adapters(adapter)
            if not self.loaded_adapters[expert] and getattr(model, "peft_config", None) is not None:
                model.unload_lora()
            raise LoraError(f"The LoRA could not be loaded into {expert} ({type(exc).__name__}: "
                            f"{exc}); nothing was changed.") from exc
        self.loaded_adapters[expert].add(adapter)

    def _delete(self, expert: str, adapters: list[str]) -> None:
        """Delete adapters from an expert; remove its PEFT layers when none is left."""
        for pipe in (self.loaded.pipe,):
            model = getattr(pipe, expert)
            model.delete_adapters(adapters)
            self.loaded_adapters[expert] -= set(adapters)
            if not self.loaded_adapters[expert]:
                model.unload_lora()


def resolve_take_loras(choices: Sequence[Any], preset: Any, lora_dir: Path | None, cache_dir: Path,
                       preset_source: str | None) -> list[ResolvedLora]:
    """Every LoRA of a take (the preset's first), found and hashed; LoraError names what is missing."""
    resolved: list[ResolvedLora] = []
    if preset is not None:
        source = preset_source or preset.suggested_source
        if not source:
            raise LoraError(f"The preset {preset.id} needs its LoRA file{'s' if preset.low_file else ''} "
                            f"({', '.join(f for f, _, _ in preset.files())}): give the folder or Hub "
                            "repo holding them with --preset-source or WAN_STUDIO_PRESET_LORAS.")
        for file, high, low in preset.files():
            local = Path(os.path.expanduser(source))
            if local.is_dir():
                path = local / file if (local / file).is_file() else local / Path(file).name
                if not path.is_file():
                    raise LoraError(f"The preset {preset.id} needs {Path(file).name}, which is not in "
                                    f"{source}.")
                name = Path(file).name
            else:
                name, path = resolve_lora_source(f"{source}/{file}", None, cache_dir)
            resolved.append(ResolvedLora(name, path, sha256_file(path), high, low))
    for choice in choices:
        name, path = resolve_lora_source(choice.source, lora_dir, cache_dir)
        resolved.append(ResolvedLora(name, path, sha256_file(path), float(choice.high), float(choice.low)))
    return resolved
