"""Wan Studio's composition root: `python app.py [serve ...]`, `worker ...`, `generate ...` or
`admin ...`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

COMMANDS = """commands:
  serve      start the web studio (the default when no command is given); serve --help
  worker     run queued takes on one GPU for a studio on PostgreSQL; worker --help
  generate   make one clip from the command line, no web UI; generate --help
  admin      operator commands on a data folder, beside a running studio; admin --help
"""
DATABASE_ENV = "WAN_STUDIO_DATABASE_URL"


def _database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder for media and caches, and the SQLite database (default ./data, "
                             "$WAN_STUDIO_DATA, or /data on a Space); shared by every process")
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_ENV) or None,
                        help="PostgreSQL shared by the studio and its workers, e.g. "
                             "postgresql+psycopg://user@host:5432/wanstudio (default: SQLite in the "
                             f"data folder, or ${DATABASE_ENV})")
    parser.add_argument("--weights", action="append", default=[], metavar="VARIANT=SOURCE",
                        help="weights for a variant: a local diffusers folder or a Hub repo id "
                             "(repeatable; also $WAN_STUDIO_WEIGHTS_T2V_A14B and the like)")
    parser.add_argument("--device", default=None,
                        help="where takes run: cpu, cuda or cuda:N (default: CUDA when present)")


def _data_dir(explicit: str | None) -> Path:
    from storage.paths import resolve_data_dir

    return resolve_data_dir(explicit)


def serve(argv: Sequence[str]) -> int:
    """Start the web studio."""
    from pipelines.cli import UsageError, parse_weights

    parser = argparse.ArgumentParser(prog="app.py serve", description="Start the Wan Studio web UI.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1, or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port to listen on (default 7860, or $GRADIO_SERVER_PORT)")
    _database_options(parser)
    parser.add_argument("--no-worker", action="store_true",
                        help="run no takes in this process (workers started with `app.py worker` "
                             "on the same PostgreSQL database run them)")
    parser.add_argument("--prompt-model", default=os.environ.get("WAN_STUDIO_PROMPT_MODEL") or None,
                        metavar="FOLDER",
                        help="a local instruction-tuned language model folder (transformers) for "
                             "'Improve prompt', run on the CPU; off by default "
                             "(or $WAN_STUDIO_PROMPT_MODEL)")
    args = parser.parse_args(argv)
    import storage
    from pipelines.errors import StudioError
    from studio.server import serve as serve_studio

    try:
        weights = parse_weights(args.weights)
        serve_studio(_data_dir(args.data_dir), weights, host=args.host, port=args.port,
                     database_url=args.database_url, worker=not args.no_worker,
                     device=args.device, prompt_model=args.prompt_model)
    except (UsageError, storage.StorageError, StudioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # a folder in use or read-only, a bad setting
        return 2
    return 0


def worker(argv: Sequence[str]) -> int:
    """Run queued takes on one device until interrupted."""
    from pipelines.cli import UsageError, parse_weights

    parser = argparse.ArgumentParser(
        prog="app.py worker", description="Run queued takes on one GPU for a studio whose database "
        "is PostgreSQL (start one per GPU, on this or other machines sharing the data folder).")
    _database_options(parser)
    parser.add_argument("--variants", default=None, metavar="ID,ID",
                        help="only these variants (default: every variant this worker has weights for)")
    parser.add_argument("--parallel", type=int, default=None, metavar="N",
                        help="run each take across N GPUs at once (diffusers context parallelism, "
                             "one variant): start with `torchrun --nproc-per-node N app.py worker "
                             "--parallel N ...`; --device cpu tries it on gloo without GPUs")
    args = parser.parse_args(argv)
    import storage
    from pipelines.errors import StudioError
    from studio.worker_process import run_worker

    try:
        weights = parse_weights(args.weights)
        return run_worker(_data_dir(args.data_dir), weights, args.database_url, device=args.device,
                          variants=args.variants.split(",") if args.variants else None,
                          parallel=args.parallel)
    except (UsageError, storage.StorageError, StudioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def admin(argv: Sequence[str]) -> int:
    """Operator commands: cancel any take, list what is queued or running."""
    import storage

    parser = argparse.ArgumentParser(
        prog="app.py admin", description="Operator commands on a studio's data folder; they work "
        "while the studio runs (a running take stops within one step).")
    parser.add_argument("--data-dir", default=None, help="the studio's data folder (default as serve)")
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_ENV) or None,
                        help="the studio's PostgreSQL, if it uses one (default as serve)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cancel = commands.add_parser("cancel", help="cancel any owner's queued or running take")
    cancel.add_argument("take_id", type=int, help="the take's id (as shown in the history)")
    commands.add_parser("queue", help="list every queued or running take as JSON lines")
    args = parser.parse_args(argv)
    try:
        with storage.Database.open(_data_dir(args.data_dir), exclusive=False,
                                   url=args.database_url) as db:
            store = storage.Store(db)
            if args.command == "cancel":
                take = store.request_cancel(args.take_id)
                state = ("cancelled" if take.status == "cancelled"
                         else "stopping at its next step" if take.cancel_requested
                         else f"already {take.status}")
                print(f"take {take.id}: {state}")
            else:
                for take in store.list_unfinished():
                    print(json.dumps({"id": take.id, "status": str(take.status), "step": take.step,
                                      "total_steps": take.total_steps, "variant": take.variant,
                                      "worker": take.worker,
                                      "queued_at": take.queued_at.isoformat()}))
    except storage.StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to `serve` (the default), `worker`, `generate` or `admin`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("WAN_STUDIO_LOG", "WARNING"))
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: app.py [COMMAND] [OPTIONS]\n\nWan Studio: a browser studio for the Wan2.2 "
              f"video models.\n\n{COMMANDS}")
        return 0
    if argv and argv[0] == "generate":
        from pipelines.cli import main as generate_main

        rest = argv[1:]
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--data-dir", default=None)
        known, _ = pre.parse_known_args(rest)
        return generate_main(rest, _data_dir(known.data_dir))
    if argv and argv[0] == "admin":
        return admin(argv[1:])
    if argv and argv[0] == "worker":
        return worker(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
