"""HTML for the live preview (a small looping animated WebP, inline) and the progress line."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image

from pipelines.events import EXPERT_ROLES

PREVIEW_LOOP_FPS = 8
EXPERT_NAMES = {"high-noise": "High-noise expert", "low-noise": "Low-noise expert",
                "single": "Dense model"}


def animated_webp(frames: np.ndarray, fps: int = PREVIEW_LOOP_FPS) -> bytes:
    """Encode uint8 frames (T, H, W, 3) as a looping animated WebP (fast settings, small file)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"Preview frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}.")
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="WEBP", save_all=True, append_images=images[1:], loop=0,
                   duration=max(1, round(1000 / fps)), quality=70, method=0)
    return buffer.getvalue()


def preview_html(webp: bytes, step: int, total: int, expert: str) -> str:
    """The preview panel: the looping clip (an animated WebP), captioned with the step and expert."""
    data = base64.b64encode(webp).decode("ascii")
    label = f"Preview after step {step} of {total} ({EXPERT_NAMES.get(expert, expert)})"
    return (f'<div class="preview-frame" data-step="{step}" data-expert="{html.escape(expert)}">'
            f'<img src="data:image/webp;base64,{data}" alt="{html.escape(label)}" '
            f'title="{html.escape(label)}"></div>')


def empty_preview_html(message: str = "Previews appear here while the model denoises.") -> str:
    """The preview panel before or after a run."""
    return f'<div class="preview-frame preview-empty"><p>{html.escape(message)}</p></div>'


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "estimating"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def progress_html(step: int, total: int, expert: str | None, elapsed_s: float,
                  eta_s: float | None, phase: str = "denoising") -> str:
    """The progress line: step count, which expert works on what, elapsed time and ETA."""
    percent = 0 if total <= 0 else min(100, round(100 * step / total))
    if phase == "decoding":
        stage = '<span class="expert expert-decoding">VAE: decoding the final video</span>'
    elif expert:
        role = EXPERT_ROLES.get(expert, "")
        stage = (f'<span class="expert expert-{html.escape(expert)}">'
                 f'{html.escape(EXPERT_NAMES.get(expert, expert))}: {html.escape(role)}</span>')
    else:
        stage = '<span class="expert">Loading the model</span>'
    return (f'<div class="progress-line" data-step="{step}" data-total="{total}">'
            f'<div class="progress-bar"><div style="width:{percent}%"></div></div>'
            f'<span class="steps">Step {step} / {total}</span>{stage}'
            f'<span class="clock">elapsed {_clock(elapsed_s)} · ETA {_clock(eta_s)}</span></div>')


def message_html(text: str, kind: str = "info") -> str:
    """A status message (info, notice, error) for the progress area."""
    return f'<div class="status-msg status-{html.escape(kind)}">{html.escape(text)}</div>'
