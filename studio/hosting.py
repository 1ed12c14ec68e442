"""Where the studio runs: Hugging Face Space detection, ZeroGPU, sign-in, storage and public URLs.

Everything here reads the environment when called (never at import), so one process can be
tested under several pretend hosts. For the UI and the composition root:

- `gpu_task(fn)`: on ZeroGPU hardware (`SPACES_ZERO_GPU=true`) returns
  `spaces.GPU(duration=request_gpu_seconds)(fn)`; elsewhere returns `fn` itself. `fn` must take
  the `GenerationRequest` as its first argument or as `request=`; a generator function works
  too (ZeroGPU streams what it yields). ZeroGPU runs `fn` in a forked worker: pass results back
  by return value or `yield`, not through callbacks that mutate the parent's state.
- `sign_in_enabled()`: show `gr.LoginButton()` only when this is true (a Space with `hf_oauth`).
- `owner_key(profile, browser_key, server_secret)`: the owner key storage and the API use: an
  HMAC of the Hugging Face username under the server-only secret when signed in (same on every
  browser), else the browser's key.
- `history_note(data_dir)`: a line for the UI when the Space has no persistent storage (storage's
  `resolve_data_dir` already picks `/data` when it is mounted), else None.
- `public_base_url(request)`: the absolute base for share links and their preview tags.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import urlsplit

from pipelines.request import GenerationRequest
from pipelines.variants import get_variant

from .owners import ACCOUNT_PREFIX, account_owner_key

F = TypeVar("F", bound=Callable[..., Any])

SPACE_DATA_DIR = Path("/data")

# Denoising cost grows a little faster than linearly with tokens (the published 480p -> 720p
# T2V-A14B timings give an exponent of about 1.39, attention being quadratic); the reference
# seconds per step at a token count are each variant's data (pipelines.variants).
_TOKEN_EXPONENT = 1.39
_FIXED_OVERHEAD_S = 20.0  # text encoding, moving weights in, writing the video
_DECODE_S_PER_720P_81F = 30.0  # VAE decode of 81 frames at 1280x720
_SAFETY = 1.2
MIN_GPU_SECONDS = 30


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "t", "true", "yes")


def on_space(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs inside a Hugging Face Space (which sets SPACE_ID)."""
    env = os.environ if env is None else env
    return bool(env.get("SPACE_ID"))


def on_zero_gpu(env: Mapping[str, str] | None = None) -> bool:
    """Whether this is ZeroGPU hardware (the `spaces` package reads the same variable)."""
    env = os.environ if env is None else env
    return _truthy(env.get("SPACES_ZERO_GPU"))


def sign_in_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether to show "Sign in with Hugging Face": only on a Space whose README sets hf_oauth."""
    env = os.environ if env is None else env
    return on_space(env) and bool(env.get("OAUTH_CLIENT_ID"))


def owner_key(profile: Any | None, browser_key: str, server_secret: str) -> str:
    """The owner key for storage: derived from the account when signed in, else the browser's key.

    Owner keys are bearer secrets, so a signed-in key is an HMAC of the username under the
    server-only secret (`studio.owners.StudioSecrets.server`): the same on every browser for one
    account, and not computable from anything a browser sees.
    """
    username = signed_in_username(profile)
    if username:
        return account_owner_key(username, server_secret)
    if not browser_key:
        raise ValueError("A browser key is needed when nobody is signed in.")
    return browser_key


def is_account_key(owner: str) -> bool:
    """Whether an owner key is a signed-in account's (derived here; clients cannot name one)."""
    return owner.startswith(ACCOUNT_PREFIX)


def signed_in_username(profile: Any | None) -> str | None:
    """The Hugging Face username of a signed-in visitor, else None."""
    username = getattr(profile, "username", None) if profile is not None else None
    return str(username) if username else None


def latent_tokens(request: GenerationRequest) -> int:
    """Transformer tokens for one forward pass: latent frames x latent height x width / patch."""
    spec = get_variant(request.variant)
    latent_frames = (request.frames - 1) // 4 + 1
    patch_stride = spec.vae_spatial_stride * 2
    return latent_frames * max(1, request.height // patch_stride) * max(1, request.width // patch_stride)


def estimate_gpu_seconds(request: GenerationRequest) -> int:
    """Seconds of GPU time to ask ZeroGPU for: steps x per-step cost at this size, plus decode."""
    spec = get_variant(request.variant)
    per_step = spec.reference_step_s * (latent_tokens(request) / spec.reference_tokens) ** _TOKEN_EXPONENT
    pixels = request.width * request.height * request.frames
    decode = _DECODE_S_PER_720P_81F * pixels / (1280 * 720 * 81)
    total = (_FIXED_OVERHEAD_S + request.steps * per_step + decode) * _SAFETY
    return max(MIN_GPU_SECONDS, math.ceil(total))


def request_gpu_seconds(*args: Any, **kwargs: Any) -> int:
    """ZeroGPU dynamic duration: the estimate for the GenerationRequest among the call's arguments."""
    for value in (kwargs.get("request"), *args, *kwargs.values()):
        if isinstance(value, GenerationRequest):
            return estimate_gpu_seconds(value)
    raise TypeError("The GPU task must receive the GenerationRequest as an argument.")


def gpu_task(
    fn: F,
    duration: Callable[..., int] = request_gpu_seconds,
    env: Mapping[str, str] | None = None,
) -> F:
    """`fn` wrapped in `spaces.GPU(duration=...)` on ZeroGPU hardware; `fn` unchanged elsewhere."""
    if not on_zero_gpu(env):
        return fn
    try:
        import spaces  # present on ZeroGPU Spaces; not a dependency elsewhere
    except ImportError:
        raise RuntimeError(
            "SPACES_ZERO_GPU is set but the `spaces` package is missing; add `spaces` to requirements.txt."
        ) from None
    return spaces.GPU(duration=duration)(fn)


def has_persistent_storage(root: Path = SPACE_DATA_DIR, env: Mapping[str, str] | None = None) -> bool:
    """Whether a Space has persistent storage mounted (a writable `/data`)."""
    return on_space(env) and root.is_dir() and os.access(root, os.W_OK)


def history_note(
    folder: Path, root: Path = SPACE_DATA_DIR, env: Mapping[str, str] | None = None
) -> str | None:
    """A line for the UI when history will vanish with the Space's disk; None when it persists."""
    if not on_space(env) or (has_persistent_storage(root, env) and folder.resolve() == root.resolve()):
        return None
    return (
        "History is not permanent: this Space has no persistent storage, so projects and takes "
        "are lost when it restarts. Download the takes you want to keep."
    )


def _checked_base(url: str, source: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{source} must be an absolute http(s) URL such as https://example.org, got {url!r}.")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def public_base_url(request: Any | None = None, env: Mapping[str, str] | None = None) -> str:
    """Absolute base URL for links: WAN_STUDIO_PUBLIC_URL, else https://$SPACE_HOST, else the request's."""
    env = os.environ if env is None else env
    if env.get("WAN_STUDIO_PUBLIC_URL"):
        return _checked_base(env["WAN_STUDIO_PUBLIC_URL"], "WAN_STUDIO_PUBLIC_URL")
    if env.get("SPACE_HOST"):
        return _checked_base(f"https://{env['SPACE_HOST']}", "SPACE_HOST")
    base = getattr(request, "base_url", None) if request is not None else None
    if base is None and request is not None:  # gr.Request wraps the Starlette request
        base = getattr(getattr(request, "request", None), "base_url", None)
    if base is None:
        raise ValueError("No public URL is known: set WAN_STUDIO_PUBLIC_URL or pass the incoming request.")
    return _checked_base(str(base), "The request's base URL")
