"""Shared helpers for the studio tests: tiny-size forms and a built studio."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from studio import forms

TINY = dict(width=64, height=64, frames=9, steps=6, seed=7)


def form_values(**overrides: Any) -> dict[str, Any]:
    """A complete form for a tiny t2v run (every control unpicked), with overrides."""
    form: dict[str, Any] = {name: "" for name in forms.CONTROL_FIELDS}
    form.update(variant="t2v-a14b", prompt="a red ball rolls across the meadow", image=None,
                negative_prompt="", guidance=4.0, guidance_low=3.0, flow_shift=12.0, **TINY)
    form.update(overrides)
    return form


def ordered(form: Mapping[str, Any]) -> list[Any]:
    """Form values in FORM_FIELDS order, as the UI passes them."""
    return [form.get(name) for name in forms.FORM_FIELDS]


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weights_map(tiny_weights: Mapping[str, Path]) -> dict[str, str]:
    """The tiny_weights fixture as the `weights` mapping build_studio takes."""
    return {variant: str(folder) for variant, folder in tiny_weights.items()}


def wait_for(condition: Callable[[], Any], seconds: float, why: Callable[[], str] = lambda: "",
             poll_s: float = 0.2) -> Any:
    """Poll `condition` until it gives a true value (returned), or fail after `seconds` with the
    tail of `why()` (a log, say)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {seconds} s\n{why()[-3000:]}")
