"""Faults: a writer killed with SIGKILL mid-loop, and eight threads writing at once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

import storage
from storage.media import TEMP_PREFIX
from storage.models import Take

ROOT = Path(__file__).parents[1]
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x03" * 100

WRITER = r'''
import sys
from sqlalchemy import func, select
import storage

def video(i):
    return b"\x00\x00\x00\x18ftypisom" + str(i).encode().rjust(12, b"0") * 20000

db = storage.Database.open(sys.argv[1])
with db.session() as s, s.begin():
    project = storage.get_or_create_default_project(s, "alice")
    i = s.scalar(select(func.count()).select_from(storage.models.Take))
print("ready", flush=True)
while True:
    request = {"variant": "ti2v-5b", "prompt": f"take {i}", "seed": i, "pad": "x" * 4000}
    with db.session() as s, s.begin():
        take = storage.add_take(s, "alice", project.id, request)
    with db.session() as s, s.begin():
        storage.start_take(s, "alice", take.id)
    for step in range(1, 4):
        with db.session() as s, s.begin():
            storage.update_progress(s, "alice", take.id, step, 3)
    with db.session() as s, s.begin():
        storage.finish_take(s, "alice", take.id, "completed", video=video(i), poster=%r)
    print(take.id, i, flush=True)
    i += 1
''' % (JPEG,)


def expected_video(i: int) -> bytes:
    return b"\x00\x00\x00\x18ftypisom" + str(i).encode().rjust(12, b"0") * 20000


def run_and_kill(data: Path, committed: int) -> list[tuple[int, int]]:
    """Start the writer, let it commit `committed` takes, SIGKILL it at a random moment."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(data)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    done: list[tuple[int, int]] = []
    watchdog = threading.Timer(120, child.kill)  # a hung writer fails the test instead of hanging it
    watchdog.start()
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        while len(done) < committed:
            line = child.stdout.readline()
            assert line, "the writer died on its own"
            take_id, index = map(int, line.split())
            done.append((take_id, index))
        time.sleep(random.uniform(0, 0.03))  # land somewhere inside the next take's writes
    finally:
        watchdog.cancel()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return done


@pytest.mark.slow
def test_sigkill_mid_write_loses_no_committed_take_and_corrupts_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    confirmed: list[tuple[int, int]] = []
    for _ in range(2):  # kill, reopen and carry on, twice
        confirmed += run_and_kill(data, committed=8)
        with storage.Database.open(data) as db:
            with db.session() as s, s.begin():
                assert s.execute(text("PRAGMA integrity_check")).scalar() == "ok"
                assert s.execute(text("PRAGMA foreign_key_check")).all() == []
                project = storage.get_or_create_default_project(s, "alice")
                takes = storage.list_takes(s, "alice", project.id, limit=200)
            by_id = {t.id: t for t in takes}
            for take_id, index in confirmed:  # every take the writer saw committed is whole
                take = by_id[take_id]
                assert take.status == "completed" and not take.media_missing
                assert take.request["prompt"] == f"take {index}" and take.request["pad"] == "x" * 4000
                assert db.media.resolve(take.video_path).read_bytes() == expected_video(index)
                assert db.media.resolve(take.poster_path).read_bytes() == JPEG
            for take in takes:  # and the one it was writing is whole or queued to run again
                assert take.status in ("completed", "pending")
                assert take.request["prompt"] == f"take {take.seed}"
                if take.status == "pending":
                    assert take.video_path is None and take.step == 0
                    assert not list(db.media.take_dir(project.id, take.id).glob("*"))
            assert not list(db.media.root.rglob(f"{TEMP_PREFIX}*"))
    con = sqlite3.connect(data / "studio.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


@pytest.mark.slow
def test_eight_threads_writing_for_ten_seconds_lose_nothing(tmp_path: Path) -> None:
    with storage.Database.open(tmp_path / "data") as db:
        with db.session() as s, s.begin():
            project = storage.create_project(s, "alice", "Busy")
        deadline = time.monotonic() + 10.0
        errors: list[BaseException] = []
        outcomes: dict[int, tuple[str, bool, int]] = {}
        lock = threading.Lock()

        def worker(n: int) -> None:
            rng = random.Random(n)
            try:
                while time.monotonic() < deadline:
                    with db.session() as s, s.begin():
                        take = storage.add_take(s, "alice", project.id,
                                                {"variant": "ti2v-5b", "prompt": f"thread {n}", "seed": n})
                    with db.session() as s, s.begin():
                        storage.start_take(s, "alice", take.id)
                        storage.update_progress(s, "alice", take.id, 1, 2)
                    status = rng.choice(["completed", "failed", "cancelled"])
                    favourite = rng.random() < 0.5
                    with db.session() as s, s.begin():
                        storage.finish_take(s, "alice", take.id, status,
                                            video=b"\x00\x00\x00\x18ftypisom" if status == "completed" else None)
                        storage.set_favourite(s, "alice", take.id, favourite)
                    with db.read_session() as s, s.begin():
                        storage.list_takes(s, "alice", project.id, limit=20)
                    with lock:
                        outcomes[take.id] = (status, favourite, n)
            except BaseException as exc:  # report in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert len(outcomes) >= 8
        with db.read_session() as s, s.begin():
            assert s.scalar(select(func.count()).select_from(Take)) == len(outcomes)
            takes = {t.id: t for t in storage.list_takes(s, "alice", project.id, limit=200)}
            offset = 200
            while len(takes) < len(outcomes):
                page = storage.list_takes(s, "alice", project.id, limit=200, offset=offset)
                assert page
                takes.update((t.id, t) for t in page)
                offset += 200
        for take_id, (status, favourite, n) in outcomes.items():
            take = takes[take_id]
            assert (take.status, take.favourite, take.prompt) == (status, favourite, f"thread {n}")
            assert take.step == (2 if status == "completed" else 1)
