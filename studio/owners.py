"""Owner keys and the two secrets behind them.

- The **server secret** never leaves the server: it signs media URLs and derives the owner keys
  of signed-in people. It lives in `<data>/server.secret` (mode 0600, made with `secrets`) or in
  the `WAN_STUDIO_SECRET` environment variable (a Space secret).
- The **browser-state secret** is public: `gr.BrowserState` puts it in the page config, so it only
  keeps a browser's own anonymous key readable by that browser. Nothing may trust it.

Signed-in owner keys are an HMAC of the account name under the server secret, with a prefix of
their own (`hf2-`). Keys derived before the server secret existed (`hf-`, an HMAC under the
browser-state secret, which every visitor could read) are refused wherever a client names a key,
and are moved to the account's new key when that person signs in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

OWNER_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
BROWSER_SECRET_FILE = "browser-state.secret"
SERVER_SECRET_FILE = "server.secret"
SECRET_ENV = "WAN_STUDIO_SECRET"
MIN_SECRET_CHARS = 32
ACCOUNT_PREFIX = "hf2-"
LEGACY_ACCOUNT_PREFIX = "hf-"
RESERVED_PREFIXES = (ACCOUNT_PREFIX, LEGACY_ACCOUNT_PREFIX)


@dataclass(frozen=True, repr=False)
class StudioSecrets:
    """The server-only secret and the public browser-state secret of one data folder."""

    server: str
    browser_state: str

    def __repr__(self) -> str:  # never print a secret into a log or traceback
        return "StudioSecrets(<hidden>)"


def new_owner_key() -> str:
    """A fresh random owner key (192 bits) that is never in a reserved namespace."""
    while True:
        key = secrets.token_urlsafe(24)
        if not key.startswith(RESERVED_PREFIXES):
            return key


def is_owner_key(value: object) -> bool:
    """Whether a client may name `value` as its owner key (shape, and not an account's namespace)."""
    return (isinstance(value, str) and OWNER_PATTERN.fullmatch(value) is not None
            and not value.startswith(RESERVED_PREFIXES))


def ensure_owner_key(value: object) -> str:
    """The browser's key if it has a valid one, else a new one."""
    return value if is_owner_key(value) else new_owner_key()  # type: ignore[return-value]


def check_owner_key(value: object) -> str:
    """Return a valid owner key or raise ValueError saying what one looks like (API calls)."""
    if isinstance(value, str) and value.startswith(RESERVED_PREFIXES):
        raise ValueError("owner keys starting with 'hf-' or 'hf2-' belong to signed-in accounts; "
                         "make your own with secrets.token_urlsafe(24) and keep it.")
    if not is_owner_key(value):
        raise ValueError("owner must be 16-128 characters of letters, digits, '-' or '_'; "
                         "make one with secrets.token_urlsafe(24) and keep it.")
    return str(value)


def account_owner_key(username: str, server_secret: str) -> str:
    """The owner key of a signed-in account: the same on every browser, unguessable without the
    server secret."""
    return ACCOUNT_PREFIX + _account_digest(username, server_secret)


def legacy_account_owner_key(username: str, browser_state_secret: str) -> str:
    """The key an account had before the server secret existed (derived from a public secret)."""
    return LEGACY_ACCOUNT_PREFIX + _account_digest(username, browser_state_secret)


def _account_digest(username: str, secret: str) -> str:
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"The secret for owner keys must be at least {MIN_SECRET_CHARS} characters.")
    return hmac.new(secret.encode(), f"hf-user:{username}".encode(), hashlib.sha256).hexdigest()[:48]


def load_secrets(data_dir: Path, env: Mapping[str, str] | None = None) -> StudioSecrets:
    """The data folder's secrets, made on first use (the server one from the environment when set)."""
    env = os.environ if env is None else env
    configured = env.get(SECRET_ENV, "").strip()
    if configured and len(configured) < MIN_SECRET_CHARS:
        raise ValueError(f"{SECRET_ENV} must be at least {MIN_SECRET_CHARS} characters; make one "
                         "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'.")
    server = configured or _file_secret(Path(data_dir) / SERVER_SECRET_FILE)
    browser_state = _file_secret(Path(data_dir) / BROWSER_SECRET_FILE)
    if hmac.compare_digest(server, browser_state):
        raise ValueError(f"{SECRET_ENV} must differ from the browser-state secret, which is public.")
    return StudioSecrets(server=server, browser_state=browser_state)


def browser_state_secret(data_dir: Path) -> str:
    """The public secret gr.BrowserState encrypts a browser's key with (made once per data folder)."""
    return _file_secret(Path(data_dir) / BROWSER_SECRET_FILE)


def _file_secret(path: Path) -> str:
    """A secret kept in a file readable by this user alone, made with `secrets` if missing."""
    if path.is_file():
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)  # tighten a copy restored with wider permissions
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= MIN_SECRET_CHARS:
            return text
        damaged = True
    else:
        damaged = False
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        if damaged:
            os.replace(partial, path)
            return secret
        try:
            os.link(partial, path)  # never replaces: two processes starting at once agree
        except FileExistsError:
            return path.read_text(encoding="ascii").strip()
        return secret
    finally:
        partial.unlink(missing_ok=True)
