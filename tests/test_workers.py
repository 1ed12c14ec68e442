"""A studio past one process: `app.py serve --no-worker` and `app.py worker` processes sharing
PostgreSQL (skipped, saying why, when none is running). Takes from several owners all run once,
in turns; a worker killed mid-take costs exactly one re-run; a worker without weights fails its
take with a sentence and stays; a database restart loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from gradio_client import Client
from storage_support import postgres_database, postgres_template  # noqa: F401 (fixture)

import storage
from studio.owners import new_owner_key
from studio_helpers import TINY, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
LEASE_S = "3"


class Process:
    """One `python app.py ...` subprocess with its log."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._out = open(log, "w")
        self.popen = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=env,
                                      stdout=self._out, stderr=self._out)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self._out.close()


class Cluster:
    """A web process with no worker of its own, and workers, on one PostgreSQL database."""

    def __init__(self, url: str, data: Path, weights: dict[str, Path]) -> None:
        self.url, self.data = url, data
        self.weights = [arg for v, f in weights.items() for arg in ("--weights", f"{v}={f}")]
        self.env = {**os.environ, "WAN_STUDIO_DEMO_WEIGHTS": "off", "WAN_STUDIO_MAX_QUEUED": "10",
                    "WAN_STUDIO_LEASE_S": LEASE_S, "WAN_STUDIO_LOG": "INFO"}
        self.port = free_port()
        self.web = Process(["serve", "--database-url", url, "--data-dir", str(data), "--no-worker",
                            "--port", str(self.port), *self.weights], data.parent / "web.log",
                           self.env)
        self.workers: list[Process] = []
        self.submitted: list[int] = []
        wait_for(lambda: _listening(self.port), 120, lambda: self.web.log.read_text())
        self.client = Client(f"http://127.0.0.1:{self.port}/", verbose=False)
        self.store = storage.Store(storage.Database.open(data, url=url))

    def add_worker(self, weights: list[str] | None = None) -> Process:
        worker = Process(["worker", "--database-url", self.url, "--data-dir", str(self.data),
                          *(self.weights if weights is None else weights)],
                         self.data.parent / f"worker-{len(self.workers)}.log", self.env)
        self.workers.append(worker)
        return worker

    def submit(self, owner: str, **settings: Any) -> int:
        """Queue a take through the API; its id (the stream is left to run on its own)."""
        job = self.client.submit({"variant": "t2v-a14b", "prompt": f"a take of {owner[:6]}", **TINY,
                                  **settings}, owner, api_name="/generate")
        take_id = int(next(iter(job))["take_id"])
        self.submitted.append(take_id)
        return take_id

    def takes(self) -> list[storage.TakeRecord]:
        """Every take submitted here, as stored now."""
        return [self.store.find_take(take_id) for take_id in self.submitted]

    def close(self) -> None:
        self.client.close()
        for worker in self.workers:
            worker.stop()
        self.web.stop()
        self.store.db.close()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture()
def cluster(postgres_template: str, tiny_weights: dict[str, Path], tmp_path: Path) -> Iterator[Cluster]:
    with postgres_database(postgres_template) as url:
        running = Cluster(url, tmp_path / "data", {"t2v-a14b": tiny_weights["t2v-a14b"]})
        try:
            yield running
        finally:
            running.close()


def test_twenty_takes_from_four_owners_run_once_each_in_turns(cluster: Cluster) -> None:
    owners = [new_owner_key() for _ in range(4)]
    for owner in owners:  # each owner queues five before any worker starts
        for seed in range(5):
            cluster.submit(owner, seed=seed, steps=4)
    assert len(cluster.store.list_unfinished()) == 20
    cluster.add_worker()
    cluster.add_worker()
    takes = wait_for(lambda: (t := cluster.takes()) and all(x.finished for x in t) and t, 240,
                     lambda: cluster.workers[0].log.read_text())
    assert len(takes) == 20 and {t.status for t in takes} == {"completed"}
    assert all(t.attempts == 1 for t in takes), "no take ran twice"
    in_order = [t.owner for t in sorted(takes, key=lambda t: t.started_at)]
    for served in range(1, 21):  # owners take turns: no one gets ahead by more than the two
        counts = [in_order[:served].count(owner) for owner in owners]  # claims made at once
        assert max(counts) - min(counts) <= 2, in_order  # first come first served: 5 apart
    assert all(worker.alive() for worker in cluster.workers)


def test_a_killed_worker_s_take_runs_again_exactly_once(cluster: Cluster) -> None:
    owner = new_owner_key()
    first, second = cluster.add_worker(), cluster.add_worker()
    take_id = cluster.submit(owner, steps=100, frames=49)
    running = wait_for(lambda: (t := cluster.store.find_take(take_id)).status == "running"
                       and t.step >= 2 and t, 60)
    victim = first if first.popen.pid == int(running.worker.split(":")[1]) else second
    victim.stop(signal.SIGKILL)  # no goodbye: only the lease can tell
    done = wait_for(lambda: (t := cluster.store.find_take(take_id)).finished and t, 240,
                    lambda: (second if victim is first else first).log.read_text())
    assert done.status == "completed" and done.attempts == 2, "re-run once, by the other worker"
    assert done.worker is None


def test_a_worker_without_weights_fails_its_take_and_stays(cluster: Cluster, tmp_path: Path) -> None:
    owner = new_owner_key()
    broken = cluster.add_worker(["--weights", f"t2v-a14b={tmp_path / 'nowhere'}"])
    for _ in range(2):
        take_id = cluster.submit(owner)
        failed = wait_for(lambda: (t := cluster.store.find_take(take_id)).finished and t, 120,
                          lambda: f"{cluster.store.find_take(take_id)}\n{broken.log.read_text()}")
        assert failed.status == "failed" and "weights" in failed.error.lower()
        assert "Traceback" not in failed.error and broken.alive()


def test_a_database_restart_is_survived_by_every_process(cluster: Cluster) -> None:
    pgdata, pgbin = os.environ.get("WAN_STUDIO_TEST_PGDATA"), os.environ.get("WAN_STUDIO_TEST_PGBIN")
    if not pgdata or not pgbin:
        pytest.skip("restarting PostgreSQL needs the throwaway cluster of .ci/postgres")
    owner = new_owner_key()
    cluster.add_worker()
    before = cluster.submit(owner, steps=4)
    wait_for(lambda: cluster.store.find_take(before).finished, 120)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    log = str(Path(pgdata).parent / "log")  # the server must not hold our pipes open
    subprocess.run([*as_postgres, f"{pgbin}/pg_ctl", "-D", pgdata, "-l", log, "-m", "fast", "-w",
                    "restart"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60)
    after = wait_for(lambda: _try(lambda: cluster.submit(owner, steps=4)), 60)
    done = wait_for(lambda: _try(lambda: (t := cluster.store.find_take(after)).finished and t), 120,
                    lambda: cluster.workers[0].log.read_text())
    assert done.status == "completed"
    assert cluster.web.alive() and cluster.workers[0].alive()
    assert cluster.store.find_take(before).status == "completed", "nothing committed was lost"


def _try(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except Exception:  # noqa: BLE001 - the database or the web process is still coming back
        return None
