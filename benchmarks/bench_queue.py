"""The queue, measured by hand: `nice -n 10 python benchmarks/bench_queue.py [--database-url URL]`.

1. Claims: N tiny takes are submitted through `storage.Store.submit_take` (8 owners, taking turns),
   then 1, 2 and 4 worker *processes* each loop `store.claim` -> `store.end(..., "completed",
   video=<2 KB bytes with an MP4 signature>, poster=<a real 16x8 JPEG>)` until the queue is empty:
   the full claim + complete path a worker takes, with the files written to the media folder and
   nothing generated. Jobs per second = N / (last end - first claim). SQLite (a fresh data folder;
   the store allows several processes, though the studio itself runs one worker with SQLite) and
   PostgreSQL (a fresh database beside the one given, created and dropped here; CREATEDB needed)
   in the same run; PostgreSQL is skipped, saying why, when no URL is given.
2. Claim latency under that load: p50 and p95 of each successful `store.claim` call's own time
   (and the p50 of `store.end`, which writes and fsyncs the two files before its row).
3. Preview delivery: a worker publishes a `studio.take_events.PreviewImage` (a real animated WebP,
   9 frames at 256x144) every 50 ms; time until a watcher (`bus.watch(take).get()`) has it.
   Baseline: `studio.bus.TakeBus` in one process (publisher and watcher threads). Across
   processes: `studio.shared_bus.SharedTakeBus` over PostgreSQL LISTEN/NOTIFY, the publisher in
   another process writing the preview into the data folder's previews/ and the watcher's
   listener reading it back. Send and receive times are CLOCK_MONOTONIC, which every process on
   one machine shares. The browser's HTTP leg is not included (benchmarks/bench_studio.py).

Every measurement runs once per round (default 3), in alternating order, and the tables
show medians over rounds: the box these ran on is shared. `--quick` runs a few jobs and previews
in seconds (tests/test_bench_queue.py keeps it working).
Nothing here needs torch; the worker processes are started with `spawn`.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import storage  # noqa: E402
from postgres_admin import admin_sql, with_database  # noqa: E402

DATABASE_ENV = "WAN_STUDIO_TEST_DATABASE_URL"
OWNERS = 8
RECIPE = {"variant": "ti2v-5b", "prompt": "a red ball rolls across the meadow", "seed": 1,
          "steps": 4, "width": 64, "height": 64, "frames": 9}
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 8
PREVIEW_INTERVAL_S = 0.05


def now() -> float:
    """Seconds on CLOCK_MONOTONIC: one clock for every process on this machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def jpeg() -> bytes:
    """A real 16x8 JPEG poster."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 60, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


# Databases ---------------------------------------------------------------------------------------

class Backend:
    """Where one measurement's database lives: a fresh SQLite folder or a fresh PostgreSQL database."""

    def __init__(self, name: str, root: Path, admin_url: str | None = None) -> None:
        self.name, self.admin_url = name, admin_url
        self.data = root / f"{name}-{secrets.token_hex(3)}"
        self.url: str | None = None
        self._dbname: str | None = None
        if admin_url:
            self._dbname = f"wan_bench_{secrets.token_hex(5)}"
            admin_sql(admin_url, f'CREATE DATABASE "{self._dbname}"')
            self.url = with_database(admin_url, self._dbname)

    def open(self, exclusive: bool = False) -> storage.Database:
        """The database, migrated (SQLite beside others: never the folder's lock)."""
        return storage.Database.open(self.data, exclusive=exclusive, url=self.url)

    def drop(self) -> None:
        """Remove the PostgreSQL database made for this measurement."""
        if self._dbname and self.admin_url:
            admin_sql(self.admin_url, f'DROP DATABASE IF EXISTS "{self._dbname}" WITH (FORCE)')


def postgres_reason(url: str | None) -> str | None:
    """Why PostgreSQL cannot be measured (None when it can)."""
    if not url:
        return (f"no PostgreSQL: pass --database-url postgresql+psycopg://... or set {DATABASE_ENV} "
                "(`source .ci/postgres start` starts a throwaway one)")
    try:
        probe = Backend("probe", Path(tempfile.gettempdir()), url)
        probe.drop()
    except Exception as exc:  # noqa: BLE001 - say why and measure SQLite alone
        return f"PostgreSQL at {url.split('@')[-1]} cannot be used ({type(exc).__name__}: " \
               f"{str(exc).splitlines()[0][:160]}); a role that may CREATE DATABASE is needed"
    return None


# 1 + 2: claims ----------------------------------------------------------------------------------

def claim_loop(data: str, url: str | None, name: str, ready: Any, go: Any, out: Any) -> None:
    """One worker process: claim and complete takes until none is left; report its times."""
    database = storage.Database.open(Path(data), exclusive=False, url=url)
    store = storage.Store(database)
    poster = jpeg()
    latencies: list[float] = []
    ends: list[float] = []
    ended: list[float] = []
    ready.wait()
    go.wait()
    first = now()
    while True:
        start = now()
        take = store.claim(name)
        latencies.append(now() - start)
        if take is None:
            latencies.pop()  # the empty claim that ends the loop is not a claim under load
            break
        start = now()
        store.end(take.id, name, "completed", video=MP4, poster=poster)
        ended.append(now())
        ends.append(ended[-1] - start)
    database.close()
    out.put({"name": name, "first": first, "last": ended[-1] if ended else first,
             "latencies": latencies, "ends": ends, "done": len(ended)})


def submit_takes(store: storage.Store, count: int) -> float:
    """Queue `count` takes from OWNERS owners, interleaved; seconds per submission."""
    owners = [f"bench-owner-{i}" for i in range(OWNERS)]
    projects = {owner: store.project_for_write(owner, None) for owner in owners}
    start = now()
    for index in range(count):
        owner = owners[index % OWNERS]
        store.submit_take(owner, projects[owner], {**RECIPE, "seed": index})
    return (now() - start) / max(1, count)


def measure_claims(backend: Backend, workers: int, takes: int) -> dict[str, Any]:
    """Throughput and claim latency of `workers` processes emptying a queue of `takes`."""
    database = backend.open(exclusive=backend.url is None)
    store = storage.Store(database)
    submit_s = submit_takes(store, takes)
    context = mp.get_context("spawn")
    ready = context.Barrier(workers + 1)
    go = context.Event()
    out = context.Queue()
    procs = [context.Process(target=claim_loop, args=(str(backend.data), backend.url, f"w{i}",
                                                      ready, go, out)) for i in range(workers)]
    for proc in procs:
        proc.start()
    ready.wait()  # every worker has its database open
    go.set()
    reports = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    unfinished = len(store.list_unfinished())
    database.close()
    done = sum(r["done"] for r in reports)
    if done != takes or unfinished:
        raise RuntimeError(f"{backend.name}, {workers} workers: {done} of {takes} takes completed, "
                           f"{unfinished} left unfinished")
    wall = max(r["last"] for r in reports) - min(r["first"] for r in reports)
    latencies = [x for r in reports for x in r["latencies"]]
    ends = [x for r in reports for x in r["ends"]]
    return {"backend": backend.name, "workers": workers, "jobs_s": takes / wall, "wall_s": wall,
            "latencies": latencies, "ends": ends, "submit_ms": submit_s * 1000,
            "per_worker": sorted(r["done"] for r in reports)}


# 3: previews ------------------------------------------------------------------------------------

def preview_webp() -> bytes:
    """A real preview: 9 frames at 256x144, a moving gradient with a little grain."""
    from studio.progress_view import animated_webp

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:144, 0:256]
    frames = []
    for t in range(9):
        base = np.stack([(x + 8 * t) % 256, (y * 1.7) % 256, (x + y + 16 * t) % 256], axis=-1)
        frames.append(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
    return animated_webp(np.stack(frames))


def publish_previews(bus: Any, take_id: int, count: int, webp: bytes,
                     start_gate: Any | None = None) -> list[float]:
    """Publish `count` previews PREVIEW_INTERVAL_S apart; their send times."""
    from studio.take_events import PreviewImage

    if start_gate is not None:
        start_gate.wait()
    sent = []
    for index in range(1, count + 1):
        sent.append(now())
        bus.publish(take_id, PreviewImage(index, count, "high-noise", webp))
        time.sleep(PREVIEW_INTERVAL_S)
    return sent


def receive_previews(watch: Any, count: int, received: dict[int, float], timeout_s: float) -> None:
    """Record when each preview reached the watcher, until the last one or the timeout."""
    from studio.take_events import PreviewImage

    deadline = now() + timeout_s
    while now() < deadline:
        event = watch.get(timeout=0.5)
        if isinstance(event, PreviewImage) and event.index > 0:
            received[event.index] = now()
            if event.index == count:
                return


def remote_publisher(data: str, url: str, take_id: int, count: int, go: Any, out: Any) -> None:
    """Another process: a worker's SharedTakeBus publishing previews (the file into previews/)."""
    from studio.shared_bus import shared_bus

    store = storage.Store(storage.Database.open(Path(data), url=url))
    bus = shared_bus(store, listen=False)
    out.put("ready")
    out.put(publish_previews(bus, take_id, count, preview_webp(), go))
    store.db.close()


def latencies_of(sent: list[float], received: dict[int, float]) -> list[float]:
    """Delivery times of the previews that arrived."""
    return [received[i + 1] - t for i, t in enumerate(sent) if i + 1 in received]


def measure_in_process(count: int) -> list[float]:
    """TakeBus: the worker thread publishes, a watcher thread receives."""
    from studio.bus import TakeBus

    bus = TakeBus()
    watch = bus.watch(1)
    received: dict[int, float] = {}
    reader = threading.Thread(target=receive_previews, args=(watch, count, received, 60 + count))
    reader.start()
    sent = publish_previews(bus, 1, count, preview_webp())
    reader.join()
    watch.close()
    return latencies_of(sent, received)


def measure_cross_process(backend: Backend, count: int) -> list[float]:
    """SharedTakeBus over LISTEN/NOTIFY: publisher in another process, watcher here."""
    from studio.shared_bus import shared_bus
    from studio.take_events import PreviewImage

    database = backend.open()
    store = storage.Store(database)
    project = store.project_for_write("bench-owner-0", None)
    take_id = store.submit_take("bench-owner-0", project, RECIPE).id
    bus = shared_bus(store, listen=True)
    watch = bus.watch(take_id)
    context = mp.get_context("spawn")
    go, out = context.Event(), context.Queue()
    proc = context.Process(target=remote_publisher,
                           args=(str(backend.data), backend.url, take_id, count, go, out))
    proc.start()
    out.get(timeout=120)
    # The listener connects in its own thread: wait until a probe from here comes back through
    # PostgreSQL (a second bus, so the origin differs) before the measured previews start.
    probe = shared_bus(store, listen=False)
    webp = preview_webp()
    deadline = now() + 30
    while now() < deadline:
        probe.publish(take_id, PreviewImage(0, count, "high-noise", webp))
        event = watch.get(timeout=0.5)
        if isinstance(event, PreviewImage):
            break
    else:
        raise RuntimeError("The LISTEN connection never delivered a probe; is PostgreSQL up?")
    received: dict[int, float] = {}
    reader = threading.Thread(target=receive_previews, args=(watch, count, received, 60 + count))
    reader.start()
    go.set()
    sent = out.get(timeout=120 + count)
    reader.join()
    proc.join(timeout=30)
    watch.close()
    bus.close()
    database.close()
    return latencies_of(sent, received)


# Report -----------------------------------------------------------------------------------------

def print_claims(rows: list[dict[str, Any]], takes: int, rounds: int) -> None:
    """The claim table: median jobs/s (and range) over the rounds, claim p50/p95 pooled."""
    print(f"\nClaim + complete, {takes} tiny takes from {OWNERS} owners, worker processes "
          f"(completed with a 2 KB MP4-signed file and a JPEG poster); {rounds} rounds")
    print(f"{'backend':<12}{'workers':>8}{'jobs/s':>9}{'range':>14}{'vs 1 worker':>13}"
          f"{'vs SQLite 1':>13}{'claim p50 ms':>14}{'claim p95 ms':>14}{'end p50 ms':>12}"
          "  takes per worker (last round)")
    table: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        entry = table.setdefault((row["backend"], row["workers"]), {"jobs": [], "lat": [], "end": []})
        entry["jobs"].append(row["jobs_s"])
        entry["lat"].extend(row["latencies"])
        entry["end"].extend(row["ends"])
        entry["split"] = row["per_worker"]
    medians = {key: statistics.median(entry["jobs"]) for key, entry in table.items()}
    base = medians.get(("sqlite", 1))
    for (backend, workers), entry in table.items():
        jobs, one = medians[(backend, workers)], medians.get((backend, 1))
        spread = f"{min(entry['jobs']):.0f}-{max(entry['jobs']):.0f}"
        print(f"{backend:<12}{workers:>8}{jobs:>9.1f}{spread:>14}"
              f"{jobs / one if one else float('nan'):>13.2f}"
              f"{jobs / base if base else float('nan'):>13.2f}"
              f"{percentile(entry['lat'], 50) * 1000:>14.2f}"
              f"{percentile(entry['lat'], 95) * 1000:>14.2f}"
              f"{percentile(entry['end'], 50) * 1000:>12.2f}  "
              f"{'/'.join(str(n) for n in entry['split'])}")
    for name in dict.fromkeys(r["backend"] for r in rows):
        submit = [r["submit_ms"] for r in rows if r["backend"] == name]
        print(f"  {name}: submit_take {statistics.median(submit):.2f} ms a take (median of runs)")


def print_previews(results: dict[str, list[float]], count: int) -> None:
    """The preview table: p50/p95 delivery and their ratios to the in-process path."""
    print(f"\nPreview delivery, worker publish -> watcher get, {count} previews "
          f"{PREVIEW_INTERVAL_S * 1000:.0f} ms apart (animated WebP, {len(preview_webp())} bytes)")
    print(f"{'path':<44}{'got':>6}{'p50 ms':>9}{'p95 ms':>9}{'p50 ratio':>11}{'p95 ratio':>11}")
    base = results["in-process TakeBus (baseline)"]
    b50, b95 = percentile(base, 50), percentile(base, 95)
    for path, values in results.items():
        if not values:
            print(f"{path:<44}{0:>6}  (nothing arrived)")
            continue
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(f"{path:<44}{len(values):>6}{p50 * 1000:>9.2f}{p95 * 1000:>9.2f}"
              f"{p50 / b50:>11.1f}{p95 / b95:>11.1f}")


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements, interleaved over rounds, and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_ENV) or None,
                        help=f"PostgreSQL to create the bench's databases beside (default ${DATABASE_ENV})")
    parser.add_argument("--takes", type=int, default=300, help="takes per claim measurement")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--previews", type=int, default=100, help="previews per path and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each runs every measurement once, in alternating order")
    parser.add_argument("--quick", action="store_true", help="a few jobs and previews (seconds)")
    args = parser.parse_args(argv)
    if args.quick:
        args.takes, args.previews, args.rounds = 12, 5, 1
    counts = [int(n) for n in args.workers.split(",")]
    reason = postgres_reason(args.database_url)
    if reason:
        print(f"PostgreSQL skipped: {reason}")
    names = ["sqlite"] + ([] if reason else ["postgresql"])
    rows: list[dict[str, Any]] = []
    baseline, shared = "in-process TakeBus (baseline)", "across processes, SharedTakeBus (PostgreSQL)"
    previews: dict[str, list[float]] = {baseline: []}
    with tempfile.TemporaryDirectory(prefix="wan-bench-queue-") as tmp:
        for round_ in range(args.rounds):
            # The box is shared and noisy: alternate the order so drift hits every setting.
            order = [(n, w) for n in names for w in counts]
            for name, workers in order if round_ % 2 == 0 else order[::-1]:
                backend = Backend(name, Path(tmp), None if name == "sqlite" else args.database_url)
                try:
                    rows.append(measure_claims(backend, workers, args.takes))
                finally:
                    backend.drop()
            previews[baseline] += measure_in_process(args.previews)
            if not reason:
                backend = Backend("postgresql", Path(tmp), args.database_url)
                try:
                    previews.setdefault(shared, []).extend(
                        measure_cross_process(backend, args.previews))
                finally:
                    backend.drop()
    print_claims(rows, args.takes, args.rounds)
    print_previews(previews, args.previews * args.rounds)
    if reason:
        print(f"\nAcross processes skipped: {reason}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
