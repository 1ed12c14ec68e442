"""Many GPUs for one take, as far as the CPU and gloo allow: real 2-process groups (spawned, and
under torchrun) run diffusers' context parallelism on tiny Wan transformers and the parallel
worker's rank coordination on a real store; the refusals say what to do. What no test here can
reach (NCCL, CUDA devices, speed) is listed in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from storage_support import migrated, postgres_database, postgres_template  # noqa: F401 (fixtures)

import parallel_support
import storage
from pipelines.events import CancelledEvent, FailedEvent, PreviewEvent, StepEvent
from pipelines.parallel import (ParallelError, engine_preflight, lead_stream, start_group,
                                take_problem, video_tokens)
from pipelines.recipe import Recipe
from pipelines.request import build_request
from pipelines.stream import event_stream
from pipelines.variants import VARIANTS
from studio_helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
TAKE = {"variant": "t2v-a14b", "prompt": "a red ball rolls across the meadow", "width": 64,
        "height": 64, "frames": 9, "steps": 6}


def request(**settings: Any) -> Any:
    """A tiny T2V-A14B request."""
    return build_request({**TAKE, **settings}).request


def run_ranks(fn: Any, *args: Any, world: int = 2, timeout_s: float = 300) -> None:
    """Run fn(rank, world, port, *args) in `world` spawned processes; fail (never hang) if one
    fails or they outlast the timeout."""
    context = mp.start_processes(fn, args=(world, free_port(), *args), nprocs=world, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=2):
            if time.monotonic() > deadline:
                raise AssertionError(f"the {world} ranks did not finish in {timeout_s} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


# diffusers' context parallelism itself ------------------------------------------------------------

def test_context_parallel_runs_on_gloo_and_gives_the_one_process_output(tmp_path: Path) -> None:
    run_ranks(parallel_support.forward_rank, str(tmp_path))
    for rank in (0, 1):
        seen = torch.load(tmp_path / f"forward-{rank}.pt")
        assert seen["enabled"] == ["transformer", "transformer_2", "transformer"]
        assert seen["all_to_all"] > 0, "attention ran through Ulysses' all-to-all"
        for case, whole in seen["whole"].items():
            split = seen["split"][case]
            assert split.shape == whole.shape, case  # gathered back after proj_out
            assert torch.allclose(split, whole, atol=1e-5), (case, (split - whole).abs().max())


# The worker's rank coordination -------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, migrated: Path) -> Iterator[tuple[Path, str | None]]:
    data = tmp_path / "data"
    if request.param == "sqlite":
        data.mkdir()
        (data / "studio.db").write_bytes(migrated.read_bytes())
        yield data, None
        return
    with postgres_database(request.getfixturevalue("postgres_template")) as url:
        yield data, url


def test_two_ranks_run_each_take_in_step_and_only_rank_0_records(
        backend: tuple[Path, str | None], tiny_weights: dict[str, Path], tmp_path: Path) -> None:
    data, url = backend
    with storage.Database.open(data, url=url) as db:
        store = storage.Store(db)
        project = store.project_for_write("alice", None)
        takes = [(1, {}), (2, {"steps": 40}), (3, {"speed": {"cache": "first-block"}}), (4, {})]
        ids = [store.submit_take("alice", project, Recipe(request(seed=seed, **extra)).to_dict()).id
               for seed, extra in takes]
    out = tmp_path / "out"
    out.mkdir()
    run_ranks(parallel_support.take_rank, str(data), str(tiny_weights["t2v-a14b"]), url, str(out))

    lead = json.loads((out / "ended-0.json").read_text())
    follower = json.loads((out / "ended-1.json").read_text())
    done, cancelled, refused, again = lead["ended"]
    assert [t["id"] for t in lead["ended"]] == ids
    assert done["status"] == again["status"] == "completed" and done["video"] and again["video"]
    assert all(t["attempts"] == 1 and t["worker"] is None for t in lead["ended"]), "claimed once"
    assert cancelled["status"] == "cancelled" and cancelled["step"] >= 2
    assert refused["status"] == "failed" and "step cache" in refused["error"]
    # The follower ran the same takes (never the refused one) and stopped at the same step.
    assert [(t["seed"], t["kind"]) for t in follower["ended"]] == [
        (1, "DoneEvent"), (2, "CancelledEvent"), (4, "DoneEvent")]
    assert cancelled["error"] == f"Cancelled after {follower['ended'][1]['steps_done']} of 40 steps."
    for seed in (1, 4):
        lead_frames = np.load(out / f"frames-0-seed{seed}.npy")
        assert np.array_equal(lead_frames, np.load(out / f"frames-1-seed{seed}.npy")), seed
    # ...and the frames are those of one process running the whole model.
    from pipelines.engine import Engine
    from pipelines.manager import ModelManager

    manager = ModelManager({"t2v-a14b": str(tiny_weights["t2v-a14b"])}, cache_dir=tmp_path / "c",
                           device="cpu", demo_dir=None)
    alone = Engine(manager).generate(request(seed=1)).frames
    assert np.abs(alone.astype(int) - np.load(out / "frames-0-seed1.npy").astype(int)).max() <= 1


def test_torchrun_worker_runs_a_take_on_two_ranks_and_stops_in_step(
        postgres_template: str, tiny_weights: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "WAN_STUDIO_DEMO_WEIGHTS": "off", "WAN_STUDIO_LOG": "INFO"}
    with postgres_database(postgres_template) as url, storage.Database.open(data, url=url) as db:
        store = storage.Store(db)
        project = store.project_for_write("alice", None)
        first = store.submit_take("alice", project, Recipe(request(seed=1)).to_dict()).id
        log = tmp_path / "torchrun.log"
        with open(log, "w") as sink:
            torchrun = subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
                 "2", "--master-port", str(free_port()), "app.py", "worker", "--parallel", "2",
                 "--device", "cpu", "--database-url", url, "--data-dir", str(data),
                 "--weights", f"t2v-a14b={tiny_weights['t2v-a14b']}"],
                cwd=ROOT, env=env, stdout=sink, stderr=sink)
        try:
            done = wait_for(lambda: (t := store.find_take(first)).finished and t, 240, log.read_text)
            assert done.status == "completed" and store.media_of(done, "video") is not None
            long = store.submit_take("alice", project, Recipe(request(seed=2, steps=100, width=128,
                                                                      height=128)).to_dict()).id
            wait_for(lambda: store.find_take(long).step >= 2, 120, log.read_text)
            torchrun.send_signal(signal.SIGTERM)  # torchrun passes it on to every rank
            stopped = wait_for(lambda: (t := store.find_take(long)).finished and t, 60, log.read_text)
            assert stopped.status == "cancelled", stopped
            torchrun.wait(timeout=60)
        finally:
            if torchrun.poll() is None:
                torchrun.kill()
    text = log.read_text()
    assert "running t2v-a14b across 2 GPUs (cpu, context parallel)" in text
    assert "rank 1: signal 15; stopping when rank 0 does" in text


# Rank 0's stream, without processes ----------------------------------------------------------------

class FakeGroup:
    """A one-process stand-in for RankGroup that records what rank 0 shares."""

    world_size, rank, lead, broken = 2, 0, True, None

    def __init__(self) -> None:
        self.said: list[Any] = []

    def share(self, message: Any = None) -> Any:
        self.said.append(message[:1] if message[0] == "take" else message)
        return message

    def agree(self, problem: str | None) -> str | None:
        return problem


@pytest.fixture(scope="module")
def engine(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pipelines.engine import Engine
    from pipelines.manager import ModelManager

    manager = ModelManager({"t2v-a14b": str(tiny_weights["t2v-a14b"])},
                           cache_dir=tmp_path_factory.mktemp("cache"), device="cpu", demo_dir=None)
    return Engine(manager)


def lead(engine: Any, group: FakeGroup) -> Any:
    return lead_stream(event_stream(engine), group, lambda r: None, engine_preflight(engine))


def test_a_cancel_reaches_every_rank_at_the_step_rank_0_sees_it(engine: Any) -> None:
    group, cancel = FakeGroup(), threading.Event()
    events = []
    for event in lead(engine, group)(request(steps=8), cancel):
        events.append(event)
        if isinstance(event, StepEvent) and event.index == 3:
            cancel.set()  # as the worker does when the database says so
    assert isinstance(events[-1], CancelledEvent) and events[-1].steps_done == 3
    assert group.said == [("take",), ("step", 1, False), ("step", 2, False), ("step", 3, True)]


def test_closing_rank_0_s_stream_mid_step_still_stops_everyone_in_step(engine: Any) -> None:
    for close_after in (StepEvent, PreviewEvent):
        group = FakeGroup()
        events = lead(engine, group)(request(steps=8), threading.Event())
        for event in events:
            if isinstance(event, close_after) and event.index == 2:
                break
        events.close()
        if close_after is StepEvent:  # the others waited for step 2's word: it is stop
            assert group.said[1:] == [("step", 1, False), ("step", 2, True)]
        else:  # step 2's word was said already: all run on to step 3 and stop there
            assert group.said[1:] == [("step", 1, False), ("step", 2, False), ("step", 3, True)]


def test_a_take_that_cannot_run_across_gpus_is_refused_without_a_word_to_the_others(engine: Any) -> None:
    group = FakeGroup()
    stream = lead_stream(event_stream(engine), group, lambda r: "no", engine_preflight(engine))
    assert [type(e) for e in stream(request())] == [FailedEvent]
    assert group.said == []
    pipe = engine.manager.get("t2v-a14b").pipe
    assert take_problem(request(), pipe, 2) is None
    assert "step cache" in take_problem(request(speed={"cache": "taylorseer"}), pipe, 2)
    assert "choose one of" in take_problem(request(speed={"attention": "flex"}), pipe, 2)
    # 64x64 and 9 frames is 3 x 4 x 4 = 48 tokens: not a multiple of 5
    assert "48 tokens, which do not split evenly across 5 GPUs" in take_problem(request(), pipe, 5)


def test_a_rank_whose_start_image_is_missing_says_so(engine: Any, tmp_path: Path) -> None:
    check = engine_preflight(engine)
    assert check(request()) is None
    from dataclasses import replace

    assert "same path on every rank" in check(replace(request(), image_path=str(tmp_path / "gone.png")))


def test_official_sizes_split_evenly_across_2_4_and_8_gpus() -> None:
    for spec in VARIANTS.values():
        stride = spec.vae_spatial_stride
        pipe = SimpleNamespace(transformer=SimpleNamespace(config=SimpleNamespace(patch_size=(1, 2, 2))),
                               vae_scale_factor_spatial=stride, vae_scale_factor_temporal=4)
        heads = 24 if spec.id == "ti2v-5b" else 40
        for width, height in spec.sizes:
            tokens = video_tokens(SimpleNamespace(width=width, height=height, frames=spec.frames), pipe)
            for degree in (2, 4, 8):
                assert tokens % degree == 0 and heads % degree == 0, (spec.id, width, height, degree)


# Refusals with a sentence ---------------------------------------------------------------------------

TORCHRUN = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29500"}


def test_starting_outside_torchrun_says_how_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ParallelError, match="torchrun --nproc-per-node 2 app.py worker --parallel 2"):
        start_group(2, "cpu")
    with pytest.raises(ParallelError, match="at least 2 GPUs"):
        start_group(1, "cpu")


def test_a_group_that_does_not_match_the_machine_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ParallelError, match="torchrun started 2 processes: pass --nproc-per-node 4"):
        start_group(4, "cpu")
    with pytest.raises(ParallelError, match="leave out --device cuda:1"):
        start_group(2, "cuda:1")
    if not torch.cuda.is_available():
        with pytest.raises(ParallelError, match="needs one CUDA GPU per process.*--device cpu"):
            start_group(2)


def test_app_worker_parallel_outside_torchrun_exits_with_a_sentence(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import app

    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    code = app.main(["worker", "--parallel", "2", "--device", "cpu", "--data-dir", str(tmp_path),
                     "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none"])
    err = capsys.readouterr().err
    assert code == 2 and "error: --parallel 2 runs one process per GPU under torchrun" in err
    assert "Traceback" not in err
    code = app.main(["worker", "--parallel", "2", "--device", "cpu", "--data-dir", str(tmp_path)])
    assert code == 2 and "needs the studio's PostgreSQL" in capsys.readouterr().err


def test_a_parallel_worker_serves_exactly_one_variant(tiny_weights: dict[str, Path], tmp_path: Path) -> None:
    from pipelines.manager import ModelManager
    from studio.parallel_worker import choose_variant

    both = ModelManager({v: str(tiny_weights[v]) for v in ("t2v-a14b", "ti2v-5b")},
                        cache_dir=tmp_path, device="cpu", demo_dir=None)
    with pytest.raises(ValueError, match="pass --variants with one of the variants"):
        choose_variant(both, None)
    assert choose_variant(both, ["ti2v-5b"]) == "ti2v-5b"
    with pytest.raises(ValueError, match="no weights for i2v-a14b"):
        choose_variant(both, ["i2v-a14b"])
    one = ModelManager({"t2v-a14b": str(tiny_weights["t2v-a14b"])}, cache_dir=tmp_path, device="cpu")
    assert choose_variant(one, None) == "t2v-a14b", "the bundled demo weights do not count"
