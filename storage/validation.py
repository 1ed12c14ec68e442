"""Checks on what callers hand to storage: owner keys, names, ids, pages, requests."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any

from .errors import InvalidInputError
from .models import NAME_MAX, OWNER_MAX, TOKEN_MAX, WORKER_MAX, dump_json

MAX_PAGE = 200
MAX_ID = 2**63 - 1  # the largest id SQLite and PostgreSQL (bigint) can hold
MAX_REQUEST_BYTES = 256 * 1024
MAX_ERROR_CHARS = 4000
# Bidi embeddings, overrides and isolates can make a name display as something it is not.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def check_owner(owner: Any) -> str:
    """An owner key: 1 to 256 printable characters without spaces."""
    if not isinstance(owner, str) or not owner:
        raise InvalidInputError("The owner key is missing; the studio must identify who is asking.")
    if len(owner) > OWNER_MAX:
        raise InvalidInputError(f"The owner key is longer than {OWNER_MAX} characters.")
    if any(ch.isspace() or not ch.isprintable() for ch in owner):
        raise InvalidInputError("The owner key may not contain spaces or control characters.")
    return owner


def check_worker(worker: Any) -> str:
    """A worker's name: 1 to 128 printable characters (host:pid:random, say)."""
    if not isinstance(worker, str) or not worker or len(worker) > WORKER_MAX:
        raise InvalidInputError(f"A worker needs a name of 1 to {WORKER_MAX} characters.")
    if any(not ch.isprintable() for ch in worker):
        raise InvalidInputError("A worker's name may not contain control characters.")
    return worker


def check_name(name: Any, what: str = "project name") -> str:
    """A display name with surrounding whitespace removed; everything else is kept exactly."""
    if not isinstance(name, str):
        raise InvalidInputError(f"The {what} must be text.")
    name = name.strip()
    if not name:
        raise InvalidInputError(f"The {what} is empty; type a name.")
    if len(name) > NAME_MAX:
        raise InvalidInputError(f"The {what} has {len(name)} characters; the most is {NAME_MAX}.")
    for ch in name:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs") or ch in _BIDI_CONTROLS:
            raise InvalidInputError(
                f"The {what} contains an invisible control character (U+{ord(ch):04X}); remove it.")
    return name


def check_id(value: Any, what: str) -> int:
    """A database id given by a caller: an int from 1 to 2**63 - 1 (bools and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"The {what} id must be a whole number, not {type(value).__name__}.")
    if not 1 <= value <= MAX_ID:
        raise InvalidInputError(f"There is no {what} {value}: ids are whole numbers from 1 to {MAX_ID}.")
    return value


def check_page(limit: Any, offset: Any) -> tuple[int, int]:
    """A page: 1 <= limit <= 200 and offset >= 0."""
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"The page {name} must be a whole number.")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"The page limit must be between 1 and {MAX_PAGE}, got {limit}.")
    if offset < 0:
        raise InvalidInputError(f"The page offset cannot be negative, got {offset}.")
    return limit, offset


def request_core(stored: Mapping[str, Any]) -> Mapping[str, Any]:
    """The generation settings inside a stored request: a recipe keeps them under "request"."""
    inner = stored.get("request")
    return inner if isinstance(inner, Mapping) else stored


def check_request(request: Any) -> dict[str, Any]:
    """A JSON-clean copy of a request dict (or a recipe holding one under "request") with at
    least a text `variant`."""
    if not isinstance(request, Mapping):
        raise InvalidInputError("The request to store must be a dict (GenerationRequest.to_dict()).")
    try:
        text = dump_json(dict(request))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"The request cannot be stored as JSON ({exc}).") from exc
    if len(text.encode("utf-8")) > MAX_REQUEST_BYTES:
        raise InvalidInputError(f"The request is larger than {MAX_REQUEST_BYTES // 1024} KiB.")
    clean = json.loads(text)
    core = request_core(clean)
    variant = core.get("variant")
    if not isinstance(variant, str) or not variant or len(variant) > 32:
        raise InvalidInputError("The request must name its variant (for example 'ti2v-5b').")
    seed = core.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 2**63):
        raise InvalidInputError("The request's seed must be a non-negative whole number.")
    prompt = core.get("prompt", "")
    if not isinstance(prompt, str):
        raise InvalidInputError("The request's prompt must be text.")
    return clean


def clip_error(error: Any) -> str:
    """An error message as text, shortened to a size worth showing."""
    text = str(error)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def is_token_shaped(token: Any) -> bool:
    """True when `token` could be one of our share tokens (URL-safe base64, not too long)."""
    return (isinstance(token, str) and 0 < len(token) <= TOKEN_MAX
            and all(ch in _TOKEN_CHARS for ch in token))
