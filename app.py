"""Wan Studio's composition root: `python app.py [serve ...]` or `python app.py generate ...`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _data_dir(explicit: str | None) -> Path:
    from storage.paths import resolve_data_dir

    return resolve_data_dir(explicit)


def serve(argv: Sequence[str]) -> int:
    """Start the web studio."""
    from pipelines.cli import UsageError, parse_weights

    parser = argparse.ArgumentParser(prog="app.py serve", description="Start the Wan Studio web UI.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--weights", action="append", default=[], metavar="VARIANT=SOURCE")
    args = parser.parse_args(argv)
    try:
        weights = parse_weights(args.weights)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from studio.server import serve as serve_studio

    serve_studio(_data_dir(args.data_dir), weights, host=args.host, port=args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to `serve` (the default) or `generate`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("WAN_STUDIO_LOG", "WARNING"))
    if argv and argv[0] == "generate":
        from pipelines.cli import main as generate_main

        rest = argv[1:]
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--data-dir", default=None)
        known, _ = pre.parse_known_args(rest)
        return generate_main(rest, _data_dir(known.data_dir))
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
