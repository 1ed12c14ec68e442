"""generate(): run a Wan2.2 diffusers pipeline for one request and report typed events.

The denoising loop is diffusers' own (WanPipeline / WanImageToVideoPipeline). The engine adds:
the flow shift set explicitly per run, step events naming the expert at work, previews from each
step's x0 estimate, a cancel that stops within one step without decoding, and messages a user
can act on when something fails.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from .decode import SETTINGS_HINT
from .errors import GenerationCancelled, RequestError, StudioError
from .events import (CancelledEvent, DecodingEvent, DoneEvent, EventSink, Expert, FailedEvent,
                     GenerationResult, PreviewEvent, StepEvent)
from .images import load_start_image
from .manager import LoadedModel, ModelManager
from .request import GenerationRequest
from .variants import get_variant

log = logging.getLogger(__name__)

MAX_SEQUENCE_LENGTH = 512  # UMT5 tokens the Wan text encoder reads


class _Stop(Exception):
    """Raised from the step callback to leave diffusers' loop at once."""

    def __init__(self, steps_done: int) -> None:
        super().__init__(steps_done)
        self.steps_done = steps_done


class _FirstFrame:
    """An x0 estimate whose first latent frame is to be replaced by the start image's latent.

    TI2V with an image: diffusers puts the image latent back into frame 0 only after the loop,
    so previews take it from the transformer's input; the copy is made only when rendered.
    """

    def __init__(self, x0: Any, frame: Any) -> None:
        self.x0, self.frame = x0, frame


def _latents(x0: Any) -> Any:
    """The latents to preview: x0 itself, or x0 with the start image's latent as frame 0."""
    if not isinstance(x0, _FirstFrame):
        return x0
    latents = x0.x0.clone()
    latents[:, :, :1] = x0.frame.to(latents.device, latents.dtype)
    return latents


def _rendered_now(render: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """Render at once (a VAE decode cannot wait: the VAE's caches are busy again at the end)."""
    frames = render()
    return lambda: frames


def expert_for(timestep: float, boundary: float | None) -> Expert:
    """Which expert diffusers runs at `timestep`: the same rule as its denoising loop."""
    if boundary is None:
        return "single"
    return "high-noise" if timestep >= boundary else "low-noise"


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (any leading batch axis of 1) to uint8 (T, H, W, 3), frame by frame.

    One frame at a time keeps the temporaries small: at 1280x704x121 a whole-array conversion
    makes several float copies of over a gigabyte each.
    """
    frames = np.asarray(frames)
    while frames.ndim > 4:
        frames = frames[0]
    out = np.empty(frames.shape, dtype=np.uint8)
    for index, frame in enumerate(frames):
        out[index] = np.clip(frame * 255.0 + 0.5, 0.0, 255.0)
    return out


def prompt_notices(tokenizer: Any, request: GenerationRequest) -> list[str]:
    """Notices for prompts longer than the text encoder reads."""
    notices = []
    for label, text in (("prompt", request.prompt), ("negative prompt", request.negative_prompt)):
        if not text:
            continue
        count = len(tokenizer(text, add_special_tokens=True)["input_ids"])
        if count > MAX_SEQUENCE_LENGTH:
            notices.append(
                f"The {label} is {count} tokens long; the text encoder reads the first "
                f"{MAX_SEQUENCE_LENGTH} and the rest was ignored."
            )
    return notices


class Engine:
    """Runs requests on the model manager's pipelines."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self._projections: dict[str, Any] = {}

    def generate(self, request: GenerationRequest, on_event: EventSink | None = None,
                 cancel: threading.Event | None = None) -> GenerationResult:
        """Run one request; events go to `on_event`; setting `cancel` stops within one step."""
        emit = on_event or (lambda event: None)
        try:
            result = self._run(request, emit, cancel or threading.Event())
        except GenerationCancelled:
            raise
        except StudioError as exc:
            emit(FailedEvent(str(exc), latents=getattr(exc, "latents", None)))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must reach the user as a sentence
            message = failure_message(exc, request)
            log.exception("generation failed: %s", message)
            emit(FailedEvent(message))
            raise StudioError(message) from exc
        emit(DoneEvent(result))
        return result

    def _run(self, request: GenerationRequest, emit: EventSink,
             cancel: threading.Event) -> GenerationResult:
        started = time.monotonic()
        _check_last_image(request)  # before loading anything
        loaded = self.manager.get(request.variant)
        image = (load_start_image(request.image_path, request.width, request.height)
                 if request.image_path else None)
        last_image = (load_start_image(request.last_image_path, request.width, request.height,
                                       "last_image_path") if request.last_image_path else None)
        pipe = loaded.pipeline_for(with_image=image is not None)
        loras = self._apply_loras(loaded, pipe, request)  # a bad file stops here, nothing changed
        pipe.scheduler = _with_shift(pipe.scheduler, request.flow_shift)
        notices = prompt_notices(pipe.tokenizer, request)
        boundary = _boundary(pipe)
        projection = self._projection(loaded) if request.preview.enabled else None

        from .previews import (calibrate_projection, calibration_steps, capture_x0, decode_preview,
                               preview_frames)

        total = request.steps
        run_map = [projection]  # the map this run's previews use: recalibrated at the steps in `due`
        due = list(calibration_steps(total))

        def on_step_end(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            now = time.monotonic()
            index = i + 1
            expert = expert_for(float(t), boundary)
            eta = (now - denoise_started) / index * (total - index)
            emit(StepEvent(index, total, expert, float(t), now - started, eta))
            if cancel.is_set():
                raise _Stop(index)
            x0 = tap.latest if tap.latest is not None else kwargs["latents"]
            if first_frame:
                x0 = _FirstFrame(x0, first_frame[0])
            every = request.preview.decode_every
            if every and (index % every == 0 or index == total):
                emit(PreviewEvent(index, total, expert, _rendered_now(lambda x0=x0: decode_preview(
                    pipe.vae, _latents(x0), max_side=request.preview.max_side)), decoded=True))
            elif projection is not None:
                if due and due[0] <= index:  # one small VAE decode of the first latent frame
                    while due and due[0] <= index:
                        due.pop(0)
                    run_map[0] = calibrate_projection(projection, pipe.vae, _latents(x0))
                emit(PreviewEvent(index, total, expert, lambda x0=x0, shown=run_map[0]: preview_frames(
                    shown, _latents(x0), max_side=request.preview.max_side,
                    out_size=(request.width, request.height))))
            if cancel.is_set():
                raise _Stop(index)
            if index == total:
                emit(DecodingEvent(total))
            return {}

        import torch

        kwargs: dict[str, Any] = dict(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or None,
            height=request.height,
            width=request.width,
            num_frames=request.frames,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            generator=torch.Generator(device="cpu").manual_seed(request.seed),
            output_type="latent",  # decoded below, so an out-of-memory decode keeps the latents
            callback_on_step_end=on_step_end,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        )
        if boundary is not None and request.guidance_low is not None:
            kwargs["guidance_scale_2"] = request.guidance_low
        if image is not None:
            kwargs["image"] = image
        if last_image is not None:
            kwargs["last_image"] = last_image

        if cancel.is_set():
            emit(CancelledEvent(0))
            raise GenerationCancelled("Cancelled before the first step.")
        first_frame: list[Any] = []
        hook = None
        if image is not None and getattr(pipe.config, "expand_timesteps", False):
            def keep_first_frame(module: Any, args: Any, inputs: dict[str, Any]) -> None:
                if not first_frame:
                    first_frame.append(inputs["hidden_states"][:, :, :1].detach().float())

            hook = pipe.transformer.register_forward_pre_hook(keep_first_frame, with_kwargs=True)
        from .speed import speed_levers, steps_per_expert

        experts = loaded.loras.experts()
        steps = steps_per_expert(pipe.scheduler, request.steps, boundary, len(experts))
        denoise_started = time.monotonic()
        try:
            with speed_levers(pipe, experts, request.speed, loaded.speed, steps, loaded.device,
                              loaded.profile.offload in ("group", "group-disk"), notices), \
                    capture_x0(pipe.scheduler) as tap:
                output = pipe(**kwargs)
        except _Stop as stop:
            pipe.maybe_free_model_hooks()
            emit(CancelledEvent(stop.steps_done))
            raise GenerationCancelled(f"Cancelled after {stop.steps_done} of {total} steps.") from None
        except BaseException:
            pipe.maybe_free_model_hooks()
            raise
        finally:
            if hook is not None:
                hook.remove()
        frames = self._decode(pipe, output.frames, request, notices)
        return GenerationResult(
            request=request,
            frames=frames,
            weights_source=loaded.source,
            notices=tuple(notices),
            elapsed_s=time.monotonic() - started,
            profile=loaded.profile_name,
            loras=loras,
            preset=request.preset,
        )

    def _apply_loras(self, loaded: LoadedModel, pipe: Any, request: GenerationRequest) -> tuple[Any, ...]:
        """Find, hash and load the take's LoRAs (the preset's first); unload those it does not use."""
        return loaded.loras.apply(pipe, self.manager.resolve_loras(request))

    def _decode(self, pipe: Any, latents: Any, request: GenerationRequest,
                notices: list[str]) -> np.ndarray:
        """Decode final latents with the out-of-memory ladder, then let the offload hooks reset."""
        from .decode import decode_latents

        where = f"{request.width}x{request.height}, {request.frames} frames"
        try:
            return to_uint8(decode_latents(pipe, latents, where, notices.append))
        finally:
            pipe.maybe_free_model_hooks()

    def decode_again(self, request: GenerationRequest, latents: Any,
                     on_event: EventSink | None = None) -> GenerationResult:
        """Decode latents kept from a failed decode (same ladder); events end in Done or Failed."""
        emit = on_event or (lambda event: None)
        try:
            result = self._decode_again(request, latents, emit)
        except StudioError as exc:
            emit(FailedEvent(str(exc), latents=getattr(exc, "latents", None)))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must reach the user as a sentence
            message = failure_message(exc, request)
            log.exception("decode again failed: %s", message)
            emit(FailedEvent(message, latents=latents))
            raise StudioError(message) from exc
        emit(DoneEvent(result))
        return result

    def _decode_again(self, request: GenerationRequest, latents: Any,
                      emit: EventSink) -> GenerationResult:
        from .decode import latent_shape

        started = time.monotonic()
        loaded = self.manager.get(request.variant)
        spec = loaded.spec
        expected = latent_shape(spec.vae_z_dim, spec.vae_spatial_stride, request.width,
                                request.height, request.frames)
        if tuple(latents.shape) != expected:
            raise StudioError(f"These latents ({tuple(latents.shape)}) were not made by this request "
                              f"({expected} expected for {request.width}x{request.height}, "
                              f"{request.frames} frames); they cannot be decoded with it.")
        pipe = loaded.pipeline_for(with_image=request.image_path is not None)
        emit(DecodingEvent(request.steps))
        notices: list[str] = []
        frames = self._decode(pipe, latents, request, notices)
        return GenerationResult(request=request, frames=frames, weights_source=loaded.source,
                                notices=tuple(notices), elapsed_s=time.monotonic() - started,
                                profile=loaded.profile_name, preset=request.preset)

    def _projection(self, loaded: LoadedModel) -> Any:
        """The latent->RGB preview map for the loaded VAE, fitted once and cached on disk."""
        from .previews import load_or_fit_projection

        key = f"{loaded.spec.id}:{loaded.source}"
        if key not in self._projections:
            self._projections[key] = load_or_fit_projection(
                loaded.pipe.vae, self.manager.projection_cache(loaded.spec.id))
        return self._projections[key]


def _check_last_image(request: GenerationRequest) -> None:
    """Refuse an end image where diffusers would silently ignore it (a request rebuilt with
    `from_dict` has skipped build_request's check)."""
    if request.last_image_path and (not get_variant(request.variant).takes_last_image
                                    or not request.image_path):
        raise RequestError(f"{request.variant} cannot end on a chosen image here; remove the end "
                           "image, or pick i2v-a14b with a start image.", "last_image_path")


def _with_shift(scheduler: Any, shift: float) -> Any:
    """A fresh scheduler of the same kind with the request's flow shift set explicitly."""
    config = dict(scheduler.config)
    if "flow_shift" in config:
        config["flow_shift"] = shift
    elif "shift" in config:
        config["shift"] = shift
    return type(scheduler).from_config(config)


def _boundary(pipe: Any) -> float | None:
    """The boundary timestep of a two-expert pipeline, as diffusers computes it."""
    ratio = pipe.config.get("boundary_ratio") if hasattr(pipe.config, "get") else None
    if ratio is None or getattr(pipe, "transformer_2", None) is None:
        return None
    return ratio * pipe.scheduler.config.num_train_timesteps


def failure_message(exc: BaseException, request: GenerationRequest) -> str:
    """One sentence for the user about an unexpected failure."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return (
            f"Out of memory at {request.width}x{request.height}, {request.frames} frames: try a "
            f"smaller size or fewer frames, or {SETTINGS_HINT}."
        )
    return f"Generation failed ({type(exc).__name__}: {exc})."
