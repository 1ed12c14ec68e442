"""Speed levers of one take: step caches, regional compile and the attention backend, undone after.

- Step cache: one per expert through diffusers' hooks (`transformer.enable_cache(config)`), since
  each expert sees only its own steps. MagCache needs magnitude ratios calibrated on these weights
  per expert; each expert's MagCache is told its own step count, which works around diffusers'
  two-expert step-count bug (#14025: one count for the whole run). Disabled after every take.
- Compile: `compile_repeated_blocks(fullgraph=True)` on the experts. It stays while takes keep
  asking for it (recompiling costs minutes on a GPU) and is undone before a take that does not.
  Not combined with group offload (a Dynamo error on Wan2.2, diffusers #12728).
- Attention: diffusers' `attention_backend` context around the denoise (the dispatcher that
  `set_attention_backend` configures), falling back to PyTorch's native SDPA with a notice when
  the kernel is missing or there is no CUDA device.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator, Sequence

from .request import SpeedSettings

log = logging.getLogger(__name__)

COMPILE_BACKEND_ENV = "WAN_STUDIO_COMPILE_BACKEND"  # torch.compile backend; "eager" for quick checks


def cache_config(settings: SpeedSettings, expert_index: int, steps: int, dtype: Any) -> Any:
    """The diffusers cache config for one expert that runs `steps` of the take's steps."""
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    if settings.cache == "first-block":
        return FirstBlockCacheConfig(threshold=settings.cache_threshold or 0.05)
    if settings.cache == "taylorseer":
        # diffusers' default warm-up (3 full steps) would leave a 2-step expert uncached, and its
        # default module patterns ("^blocks.*attn", matched whole) miss Wan's attn1/attn2: lite
        # mode skips the blocks ("blocks.N") and predicts "proj_out", both names Wan has
        warmup = max(1, min(3, steps // 3))
        return TaylorSeerCacheConfig(cache_interval=settings.cache_interval or 5,
                                     disable_cache_before_step=warmup, taylor_factors_dtype=dtype,
                                     use_lite_mode=True)
    if settings.cache == "magcache":
        ratios = (settings.mag_ratios_high, settings.mag_ratios_low)[expert_index]
        kwargs: dict[str, Any] = {"threshold": settings.cache_threshold} if settings.cache_threshold else {}
        return MagCacheConfig(mag_ratios=list(ratios), num_inference_steps=max(1, steps), **kwargs)
    raise ValueError(f"no cache config for {settings.cache!r}")


def steps_per_expert(scheduler: Any, steps: int, boundary: float | None, experts: int) -> list[int]:
    """How many of the take's steps each expert runs, by the pipeline's own boundary rule."""
    import copy

    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(steps)
    if experts == 1 or boundary is None:
        return [len(probe.timesteps)]
    high = sum(1 for t in probe.timesteps if float(t) >= boundary)
    return [high, len(probe.timesteps) - high]


def uncompile(model: Any) -> None:
    """Undo `compile_repeated_blocks`: each block calls its eager forward again.

    nn.Module.compile stores the compiled call in `_compiled_call_impl`; clearing it is the only
    way back that keeps the module (and its weights, adapters and hooks) in place.
    """
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None


class SpeedState:
    """What stays between takes: whether the experts are compiled."""

    def __init__(self) -> None:
        self.compiled: list[Any] = []

    def set_compiled(self, experts: Sequence[Any], wanted: bool) -> None:
        """Compile the experts' repeated blocks, or undo it, as the take asks."""
        if not wanted:
            for model in self.compiled:
                uncompile(model)
            self.compiled = []
            return
        if self.compiled:
            return
        backend = os.environ.get(COMPILE_BACKEND_ENV, "").strip() or None
        for model in experts:
            kwargs = {"backend": backend} if backend else {}
            model.compile_repeated_blocks(fullgraph=True, **kwargs)
            self.compiled.append(model)


@contextmanager
def speed_levers(pipe: Any, expert_names: Sequence[str], settings: SpeedSettings, state: SpeedState,
                 steps: Sequence[int], device: str, group_offload: bool,
                 notices: list[str]) -> Iterator[None]:
    """Apply the take's levers around the denoise; caches and the backend are undone on exit."""
    experts = [getattr(pipe, name) for name in expert_names]
    compile_wanted = settings.compile
    if compile_wanted and group_offload:
        notices.append("Compile was skipped: it does not work with group offload (the 24gb and "
                       "low-ram profiles) in diffusers yet.")
        compile_wanted = False
    state.set_compiled(experts, compile_wanted)
    cached: list[Any] = []
    with ExitStack() as stack:
        try:
            if settings.cache != "none":
                for index, model in enumerate(experts):
                    model.enable_cache(cache_config(settings, index, steps[index], model.dtype))
                    cached.append(model)
            _enter_attention(stack, settings.attention, device, notices)
            yield
        finally:
            for model in cached:
                model.disable_cache()


def _enter_attention(stack: ExitStack, name: str, device: str, notices: list[str]) -> None:
    """Use diffusers' attention backend `name` for the take, or native SDPA with a notice."""
    if name == "native":
        return
    if not device.startswith("cuda"):
        notices.append(f"The {name} attention backend needs a CUDA GPU; native attention was used.")
        return
    from diffusers import attention_backend

    try:
        stack.enter_context(attention_backend(name))
    except (RuntimeError, ValueError, ImportError) as exc:
        log.warning("attention backend %s unavailable: %s", name, exc)
        notices.append(f"The {name} attention backend is not available here ({exc}); native "
                       "attention was used.")
