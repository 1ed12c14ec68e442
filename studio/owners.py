"""Anonymous per-browser owner keys, kept encrypted in the browser by gr.BrowserState."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

OWNER_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
SECRET_FILE = "browser-state.secret"


def new_owner_key() -> str:
    """A fresh random owner key (192 bits)."""
    return secrets.token_urlsafe(24)


def is_owner_key(value: object) -> bool:
    """Whether `value` looks like an owner key this studio hands out (or an API client chose)."""
    return isinstance(value, str) and OWNER_PATTERN.fullmatch(value) is not None


def ensure_owner_key(value: object) -> str:
    """The browser's key if it has a valid one, else a new one."""
    return value if is_owner_key(value) else new_owner_key()  # type: ignore[return-value]


def check_owner_key(value: object) -> str:
    """Return a valid owner key or raise ValueError saying what one looks like (API calls)."""
    if not is_owner_key(value):
        raise ValueError("owner must be 16-128 characters of letters, digits, '-' or '_'; "
                         "make one with secrets.token_urlsafe(24) and keep it.")
    return str(value)


def browser_state_secret(data_dir: Path) -> str:
    """The secret that encrypts owner keys in browsers; made once and kept in the data folder."""
    path = Path(data_dir) / SECRET_FILE
    if path.is_file():
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 32:
            return text
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret)
    return secret
