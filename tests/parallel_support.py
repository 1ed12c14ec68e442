"""What each rank of the CPU (gloo) process groups in tests/test_parallel.py runs.

Spawned processes import this module by name, so its functions must live at module level; each
writes what it saw into `out` (a folder) for the test to compare across ranks.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

TIMEOUT_S = 120.0  # no collective in these tests may wait longer than this


def join_group(rank: int, world: int, port: int) -> Any:
    """Set torchrun's variables for this rank and join a gloo group on the CPU."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from pipelines.parallel import start_group

    return start_group(world, "cpu", timeout_s=TIMEOUT_S)


def forward_rank(rank: int, world: int, port: int, out: str) -> None:
    """Tiny Wan transformers (two-expert 16-channel, and TI2V's 48-channel with per-token
    timesteps) run once whole, then with context parallelism on; both outputs and how many
    all-to-alls the second run made."""
    from diffusers.models import attention_dispatch

    from pipelines.parallel import enable_context_parallel
    from tiny_models import make_transformer

    group = join_group(rank, world, port)
    try:
        high, low, dense = make_transformer(16, 16, 0), make_transformer(16, 16, 1), make_transformer(48, 48, 2)
        torch.manual_seed(1)
        text = torch.randn(1, 7, 32)
        cases = {"high": (high, torch.randn(1, 16, 3, 8, 8), torch.tensor([900])),
                 "low": (low, torch.randn(1, 16, 3, 8, 8), torch.tensor([300])),
                 # TI2V-5B: a timestep per token (expand_timesteps), split like the tokens
                 "dense": (dense, torch.randn(1, 48, 3, 4, 4), torch.full((1, 12), 700.0))}
        with torch.no_grad():
            whole = {k: m(x, t, text, return_dict=False)[0] for k, (m, x, t) in cases.items()}
        enabled = enable_context_parallel(SimpleNamespace(transformer=high, transformer_2=low), group)
        enabled += enable_context_parallel(SimpleNamespace(transformer=dense), group)
        calls: list[tuple[int, ...]] = []
        real = attention_dispatch._all_to_all_single

        def counting(x: torch.Tensor, g: Any) -> torch.Tensor:
            calls.append(tuple(x.shape))
            return real(x, g)

        attention_dispatch._all_to_all_single = counting
        with torch.no_grad():
            split = {k: m(x, t, text, return_dict=False)[0] for k, (m, x, t) in cases.items()}
        torch.save({"whole": whole, "split": split, "all_to_all": len(calls), "enabled": enabled},
                   Path(out) / f"forward-{rank}.pt")
    finally:
        group.close()


def take_rank(rank: int, world: int, port: int, data: str, weights: str, url: str | None,
              out: str) -> None:
    """One rank of a parallel worker on the tiny T2V-A14B weights: rank 0 claims and records
    the queued takes from the real store (cancelling the second one at its step 2 from another
    thread, as a user would), the others follow; every rank writes what each take ended as."""
    import storage
    from pipelines.manager import ModelManager
    from pipelines.video import write_mp4
    from studio.bus import TakeBus
    from studio.parallel_worker import (ParallelWorker, load_on_rank, parallel_engine,
                                        serve_follower)

    out_dir = Path(out)
    group = join_group(rank, world, port)
    try:
        manager = ModelManager({"t2v-a14b": weights}, cache_dir=Path(data) / f"cache-{rank}",
                               device="cpu", demo_dir=None)
        load_on_rank(group, manager, "t2v-a14b")
        engine = parallel_engine(group, manager)
        ended: list[dict[str, Any]] = []
        if not group.lead:
            def on_take(request: Any, final: Any) -> None:
                record = {"seed": request.seed, "kind": type(final).__name__}
                if hasattr(final, "steps_done"):
                    record["steps_done"] = final.steps_done
                if hasattr(final, "result"):
                    np.save(out_dir / f"frames-{rank}-seed{request.seed}.npy", final.result.frames)
                ended.append(record)

            runs = serve_follower(group, engine, on_take)
            (out_dir / f"ended-{rank}.json").write_text(json.dumps({"runs": runs, "ended": ended}))
            return

        store = storage.Store(storage.Database.open(Path(data), url=url))

        def write_video(frames: np.ndarray, path: Path, fps: int, metadata: Any) -> Path:
            np.save(out_dir / f"frames-0-seed{metadata['request']['seed']}.npy", frames)
            return write_mp4(frames, path, fps, metadata)

        worker = ParallelWorker(store, engine, TakeBus(), group, "t2v-a14b", write_video=write_video,
                                poll_s=0.1)
        queued = [take.id for take in store.list_unfinished()]
        canceller = threading.Thread(target=_cancel_at_step, args=(store, queued[1], 2), daemon=True)
        canceller.start()
        while worker.run_once():
            pass
        canceller.join(timeout=5)
        worker.finish()
        for take_id in queued:
            take = store.find_take(take_id)
            ended.append({"id": take.id, "status": str(take.status), "error": take.error,
                          "step": take.step, "attempts": take.attempts, "worker": take.worker,
                          "video": take.video_path, "seed": take.request["request"]["seed"]})
        (out_dir / "ended-0.json").write_text(json.dumps({"name": worker.name, "ended": ended}))
        store.db.close()
    finally:
        group.close()


def _cancel_at_step(store: Any, take_id: int, step: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        take = store.find_take(take_id)
        if take.status == "running" and take.step >= step:
            store.request_cancel(take_id)
            return
        time.sleep(0.02)
