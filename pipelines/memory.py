"""Memory needs from shapes alone: weights of the real configs, activation peaks traced on meta tensors.

Nothing here holds a real full-size weight. Models are built on the `meta` device from the
official configs (../shared/WAN22.md), so parameter bytes are exact; activation peaks come from
running the real diffusers forward (transformer, UMT5 encoder, VAE decode) on meta tensors under
`ActivationTracker`, a dispatch mode that adds up the bytes of every storage an op creates and
takes them off when the last tensor using it dies. Attention is counted as a fused kernel would
allocate it on a GPU (flash / memory-efficient SDPA: the output only, no score matrix).

The same tracker runs on real tensors too, which is how tests check the meta trace, and how
`benchmarks/bench_gpu.py` compares these figures with `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

GIB = 1 << 30
TEXT_TOKENS = 512  # the Wan text encoder always reads 512 tokens (padded)

# The official shapes (WAN22.md); tuples so they can key caches.
A14B_TRANSFORMER = (("patch_size", (1, 2, 2)), ("num_attention_heads", 40), ("attention_head_dim", 128),
                    ("text_dim", 4096), ("freq_dim", 256), ("ffn_dim", 13824), ("num_layers", 40),
                    ("cross_attn_norm", True), ("qk_norm", "rms_norm_across_heads"), ("eps", 1e-6),
                    ("rope_max_seq_len", 1024))
TI2V_5B_TRANSFORMER = (("patch_size", (1, 2, 2)), ("num_attention_heads", 24), ("attention_head_dim", 128),
                       ("text_dim", 4096), ("freq_dim", 256), ("ffn_dim", 14336), ("num_layers", 30),
                       ("cross_attn_norm", True), ("qk_norm", "rms_norm_across_heads"), ("eps", 1e-6),
                       ("rope_max_seq_len", 1024))
UMT5_XXL = (("vocab_size", 256384), ("d_model", 4096), ("d_kv", 64), ("d_ff", 10240), ("num_layers", 24),
            ("num_heads", 64), ("relative_attention_num_buckets", 32),
            ("relative_attention_max_distance", 128), ("feed_forward_proj", "gated-gelu"),
            ("tie_word_embeddings", False))
WAN21_VAE = (("base_dim", 96), ("z_dim", 16), ("dim_mult", (1, 2, 4, 4)), ("num_res_blocks", 2),
             ("temperal_downsample", (False, True, True)))
WAN22_VAE = (("base_dim", 160), ("decoder_base_dim", 256), ("z_dim", 48), ("dim_mult", (1, 2, 4, 4)),
             ("num_res_blocks", 2), ("temperal_downsample", (False, True, True)), ("in_channels", 12),
             ("out_channels", 12), ("is_residual", True), ("patch_size", 2),
             ("scale_factor_spatial", 16), ("scale_factor_temporal", 4))

Config = tuple[tuple[str, Any], ...]


def config_kwargs(config: Config) -> dict[str, Any]:
    """Constructor keyword arguments from a hashable config (tuples of flags become lists)."""
    return {k: list(v) if isinstance(v, tuple) and k in ("dim_mult", "temperal_downsample") else v
            for k, v in config}


def frozen(config: Mapping[str, Any]) -> Config:
    """A hashable config from a dict (lists become tuples)."""
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(config.items()))


@dataclass(frozen=True)
class ModelShapes:
    """The component configs of one variant: what the estimates are computed from."""

    transformer: Config  # without in/out channels
    in_channels: int
    out_channels: int
    experts: int
    text_encoder: Config
    vae: Config
    spatial_stride: int
    expand_timesteps: bool = False  # TI2V-5B: one timestep per token, so one time embedding per token

    @property
    def z_dim(self) -> int:
        """Latent channels of the VAE."""
        return int(dict(self.vae)["z_dim"])

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ModelShapes":
        """The shapes of a diffusers weights folder, read from its config files (no weights)."""
        import inspect

        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from transformers import UMT5Config

        folder = Path(folder)

        def read(name: str, accepted: set[str]) -> dict[str, Any]:
            data = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
            return {k: v for k, v in data.items() if k in accepted and not isinstance(v, dict)}

        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        transformer = read("transformer", set(inspect.signature(WanTransformer3DModel).parameters))
        vae = read("vae", set(inspect.signature(AutoencoderKLWan).parameters) - {"latents_mean", "latents_std"})
        encoder = read("text_encoder", {k for k, _ in UMT5_XXL} | set(UMT5Config().to_dict()) - {
            "architectures", "task_specific_params", "id2label", "label2id"})
        in_channels, out_channels = transformer.pop("in_channels"), transformer.pop("out_channels")
        experts = 2 if (folder / "transformer_2").is_dir() else 1
        vae_frozen = frozen(vae)
        stride = int(dict(vae_frozen).get("scale_factor_spatial") or 8)
        return cls(frozen(transformer), int(in_channels), int(out_channels), experts, frozen(encoder),
                   vae_frozen, stride, bool(index.get("expand_timesteps")))


REAL_SHAPES: dict[str, ModelShapes] = {
    "t2v-a14b": ModelShapes(A14B_TRANSFORMER, 16, 16, 2, UMT5_XXL, WAN21_VAE, 8),
    "i2v-a14b": ModelShapes(A14B_TRANSFORMER, 36, 16, 2, UMT5_XXL, WAN21_VAE, 8),
    "ti2v-5b": ModelShapes(TI2V_5B_TRANSFORMER, 48, 48, 1, UMT5_XXL, WAN22_VAE, 16, True),
}


class ActivationTracker:
    """A dispatch mode counting the bytes of storages created inside it; `peak` is the high mark.

    Storages that existed before (weights, inputs) are never counted, nor are views of them. Works
    on meta tensors (shapes only) and on real ones alike.
    """

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage id -> [tensors alive, bytes]

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                tracker._record(args, kwargs, out)
                return out

        self._mode = _Mode()

    def _record(self, args: Any, kwargs: Any, out: Any) -> None:
        import torch
        from torch.utils._pytree import tree_leaves

        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            entry = self._storages.get(key)
            if entry is None:
                if key in inputs:
                    continue  # a view or alias of something made before the trace
                entry = self._storages[key] = [0, storage.nbytes()]
                self.live += entry[1]
                self.peak = max(self.peak, self.live)
            entry[0] += 1
            weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            self.live -= entry[1]
            del self._storages[key]

    def __enter__(self) -> "ActivationTracker":
        self._attention = _FusedAttention()
        self._attention.__enter__()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
        self._attention.__exit__(*exc)


class _FusedAttention:
    """Counts SDPA as a fused GPU kernel does: on meta tensors, return an output-shaped tensor.

    On a CPU or meta device PyTorch would pick the math path and materialize the whole score
    matrix (hundreds of GiB at 720p), which no GPU run allocates. Real tensors are left alone.
    """

    def __enter__(self) -> "_FusedAttention":
        import torch
        from torch.overrides import TorchFunctionMode

        class _Mode(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                if func is torch.nn.functional.scaled_dot_product_attention:
                    query = kwargs.get("query", args[0] if args else None)
                    value = kwargs.get("value", args[2] if len(args) > 2 else None)
                    if query is not None and query.device.type == "meta":
                        return torch.empty((*query.shape[:-1], value.shape[-1]), dtype=query.dtype,
                                           device=query.device)
                return func(*args, **kwargs)

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)


# --- models on meta ---------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _meta_transformer(config: Config, in_channels: int, out_channels: int, dtype_name: str) -> Any:
    import torch
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(in_channels=in_channels, out_channels=out_channels, **config_kwargs(config))
    _cast_like_from_pretrained(model, getattr(torch, dtype_name))
    return model.eval()


@lru_cache(maxsize=4)
def _meta_text_encoder(config: Config, dtype_name: str) -> Any:
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**config_kwargs(config)))
    return model.to(getattr(torch, dtype_name)).eval()


@lru_cache(maxsize=4)
def _meta_vae(config: Config) -> Any:
    import torch
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        model = AutoencoderKLWan(**config_kwargs(config))
    return model.eval()  # float32, as the studio loads it


def _cast_like_from_pretrained(model: Any, dtype: Any) -> None:
    """Cast as diffusers' from_pretrained does: `_keep_in_fp32_modules` stay float32."""
    import torch

    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        param.data = param.data.to(torch.float32 if any(k in name for k in keep) else dtype)
    for name, buffer in model.named_buffers():
        if buffer.is_floating_point() and not any(k in name for k in keep):
            buffer.data = buffer.data.to(dtype)


def _param_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of each component's weights as the studio loads them (bf16, VAE float32)."""

    transformer: int  # one expert
    experts: int
    text_encoder: int
    vae: int
    transformer_fp8: int  # one expert with its layers stored in float8 (layerwise casting)
    largest_layer: int  # the biggest leaf module of an expert (one group-offload unit), bf16
    unmatched: int  # parameters held by non-leaf modules (onloaded with the model under group offload)
    text_encoder_largest_layer: int

    @property
    def total(self) -> int:
        """All components, both experts included."""
        return self.transformer * self.experts + self.text_encoder + self.vae


@lru_cache(maxsize=16)
def weight_bytes(shapes: ModelShapes, dtype_name: str = "bfloat16") -> WeightBytes:
    """Weight bytes per component from models built on the meta device."""
    import torch

    transformer = _meta_transformer(shapes.transformer, shapes.in_channels, shapes.out_channels, dtype_name)
    encoder = _meta_text_encoder(shapes.text_encoder, dtype_name)
    vae = _meta_vae(shapes.vae)
    return WeightBytes(
        transformer=_param_bytes(transformer), experts=shapes.experts,
        text_encoder=_param_bytes(encoder), vae=_param_bytes(vae),
        transformer_fp8=_fp8_bytes(transformer, torch.float8_e4m3fn.itemsize),
        largest_layer=_largest_leaf(transformer), unmatched=_unmatched(transformer),
        text_encoder_largest_layer=_largest_leaf(encoder),
    )


def _fp8_bytes(model: Any, fp8_size: int) -> int:
    """Bytes after `enable_layerwise_casting(float8)`, with the skip rules diffusers applies."""
    import re

    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    patterns = tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(
        getattr(model, "_keep_in_fp32_modules", None) or ()) + tuple(
        getattr(model, "_skip_layerwise_casting_patterns", None) or ())

    def skipped(name: str) -> bool:  # diffusers stops descending at the first matching prefix
        parts = name.split(".")
        return any(re.search(p, ".".join(parts[:i])) for i in range(1, len(parts) + 1) for p in patterns)

    total = 0
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        cast = bool(name) and isinstance(module, _GO_LC_SUPPORTED_PYTORCH_LAYERS) and not skipped(name)
        total += sum(p.numel() * (fp8_size if cast else p.element_size()) for p in own)
    return total


def _largest_leaf(model: Any) -> int:
    return max((_param_bytes(m) for m in model.modules() if not list(m.children())), default=0)


def _unmatched(model: Any) -> int:
    return sum(sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
               for m in model.modules() if list(m.children()))


# --- activation peaks -------------------------------------------------------------------------


def latent_grid(shapes: ModelShapes, width: int, height: int, frames: int) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width) of a take."""
    return (frames - 1) // 4 + 1, height // shapes.spatial_stride, width // shapes.spatial_stride


@lru_cache(maxsize=64)
def transformer_peak(shapes: ModelShapes, width: int, height: int, frames: int,
                     dtype_name: str = "bfloat16") -> int:
    """Activation bytes at the peak of one expert forward (one guidance pass) at this size."""
    import torch

    model = _meta_transformer(shapes.transformer, shapes.in_channels, shapes.out_channels, dtype_name)
    dtype = getattr(torch, dtype_name)
    t, h, w = latent_grid(shapes, width, height, frames)
    hidden = torch.empty(1, shapes.in_channels, t, h, w, dtype=dtype, device="meta")
    text = torch.empty(1, TEXT_TOKENS, dict(shapes.transformer)["text_dim"], dtype=dtype, device="meta")
    # as the pipelines pass it: one timestep per (frame, 2x2 patch) token with expand_timesteps
    tokens = t * (h // 2) * (w // 2)
    timestep = torch.empty(1, tokens, device="meta") if shapes.expand_timesteps else torch.empty(
        1, device="meta")
    with torch.no_grad(), ActivationTracker() as tracker:
        model(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text, return_dict=False)
    return tracker.peak


def text_encoder_peak(shapes: ModelShapes, dtype_name: str = "bfloat16") -> int:
    """Activation bytes at the peak of encoding one prompt (512 tokens)."""
    return _text_encoder_peak(shapes.text_encoder, dtype_name)


@lru_cache(maxsize=8)
def _text_encoder_peak(config: Config, dtype_name: str) -> int:
    import torch

    model = _meta_text_encoder(config, dtype_name)
    ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long, device="meta")
    # no padding mask: building it reads values (mask.all()), which meta tensors do not have; the
    # mask itself is 512x512 booleans, nothing beside the layers' activations
    with torch.no_grad(), ActivationTracker() as tracker:
        model(ids)
    return tracker.peak


def vae_decode_peak(shapes: ModelShapes, width: int, height: int, frames: int,
                    tile: int | None = None, stride: int | None = None) -> int:
    """Activation bytes at the peak of decoding a take, untiled or with (tile, stride) px tiles.

    Untiled: the decode is traced whole. Tiled: one tile is traced over all frames, and the tiles
    diffusers keeps until it blends them (every tile of the frame grid) plus the blended rows, the
    joined video and its clamped copy are added: tracing the whole tiled decode at 720p takes a
    minute on meta tensors, one tile a second.
    """
    t, h, w = latent_grid(shapes, width, height, frames)
    if tile is None or (w * shapes.spatial_stride <= tile and h * shapes.spatial_stride <= tile):
        return _traced_decode(shapes.vae, t, h, w)
    stride = stride or tile * 3 // 4
    tile_latent, stride_latent = tile // shapes.spatial_stride, stride // shapes.spatial_stride
    rows, cols = math.ceil(h / stride_latent), math.ceil(w / stride_latent)
    one_tile = _traced_decode(shapes.vae, t, min(h, tile_latent), min(w, tile_latent))
    out_frames = (t - 1) * 4 + 1
    channels = 3 * int(dict(shapes.vae).get("patch_size") or 1) ** 2  # before unpatchify
    scale = int(dict(shapes.vae).get("patch_size") or 1)
    tile_out = channels * out_frames * (min(h, tile_latent) * shapes.spatial_stride // scale) * (
        min(w, tile_latent) * shapes.spatial_stride // scale) * 4
    video = 3 * out_frames * h * shapes.spatial_stride * w * shapes.spatial_stride * 4
    during = (rows * cols - 1) * tile_out + one_tile
    blending = rows * cols * tile_out + 3 * video
    return max(during, blending)


def _traced_decode(config: Config, t: int, h: int, w: int) -> int:
    return _traced_vae(config, "decode", (1, int(dict(config)["z_dim"]), t, h, w))


def vae_encode_peak(shapes: ModelShapes, width: int, height: int, frames: int,
                    tile: int | None = None) -> int:
    """Activation bytes of encoding a video of this size (I2V encodes its whole condition video).

    The input video itself is not counted (it exists before the encode); with tiles, one tile
    is traced over all frames.
    """
    if tile is not None and (width > tile or height > tile):
        width, height = min(width, tile), min(height, tile)
    return _traced_encode(shapes.vae, frames, height, width)


def _traced_encode(config: Config, frames: int, height: int, width: int) -> int:
    return _traced_vae(config, "encode", (1, 3, frames, height, width))


@lru_cache(maxsize=96)
def _traced_vae(config: Config, method: str, shape: tuple[int, ...]) -> int:
    """Peak activation bytes of one untiled VAE `encode` or `decode` of a meta tensor of `shape`."""
    import torch

    vae = _meta_vae(config)
    saved = vae.use_tiling
    vae.use_tiling = False
    tensor = torch.empty(*shape, device="meta")
    try:
        with torch.no_grad(), ActivationTracker() as tracker:
            getattr(vae, method)(tensor, return_dict=False)
    finally:
        vae.use_tiling = saved
    return tracker.peak


def working_bytes(shapes: ModelShapes, width: int, height: int, frames: int) -> int:
    """Latents, guidance outputs, scheduler history and prompt embeddings kept on the device."""
    t, h, w = latent_grid(shapes, width, height, frames)
    latents = shapes.z_dim * t * h * w * 4  # float32, as diffusers keeps them
    embeds = 2 * TEXT_TOKENS * dict(shapes.transformer)["text_dim"] * 2
    return 8 * latents + embeds  # latents, noise, two guidance outputs, x0, scheduler history
