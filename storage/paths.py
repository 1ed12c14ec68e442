"""Where the data folder is: explicit argument, $WAN_STUDIO_DATA, /data (Spaces), or ./data."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .errors import InvalidInputError

ENV_VAR = "WAN_STUDIO_DATA"
SPACE_DATA_DIR = Path("/data")
DB_FILENAME = "studio.db"
MEDIA_DIRNAME = "media"


def resolve_data_dir(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    space_dir: Path = SPACE_DATA_DIR,
    cwd: Path | None = None,
) -> Path:
    """The data folder as an absolute path; nothing is created here (Database.open does that)."""
    environ = os.environ if environ is None else environ
    base = Path.cwd() if cwd is None else cwd
    if explicit is not None:
        if not str(explicit).strip():
            raise InvalidInputError("The data folder path is empty; pass a folder such as ./data.")
        chosen = Path(explicit)
    elif environ.get(ENV_VAR, "").strip():
        chosen = Path(environ[ENV_VAR])
    elif space_dir.is_dir() and os.access(space_dir, os.W_OK | os.X_OK):
        chosen = space_dir
    else:
        chosen = Path("data")
    chosen = chosen.expanduser()
    return chosen if chosen.is_absolute() else (base / chosen).absolute()
