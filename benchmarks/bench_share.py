"""Share page benchmark: /share/<token> latency while the studio generates, against an idle baseline.

Run by hand: `nice -n 10 python benchmarks/bench_share.py [--requests 500] [--clients 1]`.

The real studio (studio.server: build_studio + launch_kwargs) serves on a free port with tiny
random TI2V-5B weights (tests/tiny_models.py). One take is generated through the runner and
shared. A load generator in a separate process (so it does not share the server's GIL) sends
`--requests` GETs of the share page over keep-alive connections from `--clients` threads, twice
in the same run: first with the studio idle (baseline), then while the runner generates takes
back to back. It prints p50/p95/p99 per phase, the ratio to the baseline, and whether p95 is under
the 50 ms target.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGET_P95_MS = 50.0


def load(port: int, path: str, requests: int, clients: int) -> list[float]:
    """Send `requests` GETs of `path` from `clients` keep-alive threads; latencies in ms."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(count):
            start = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            mine.append((time.perf_counter() - start) * 1000)
            if response.status != 200 or b"og:video" not in body:
                raise RuntimeError(f"GET {path} answered {response.status}")
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in per_client]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def run_load(port: int, path: str, requests: int, clients: int) -> list[float]:
    """`load` in a child process, so the generator's client threads do not contend with the server."""
    out = subprocess.run(
        [sys.executable, __file__, "--load-only", str(port), path, str(requests), str(clients)],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by the inclusive method."""
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if q < 100 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--size", type=int, default=128, help="generated width and height")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch

    from pipelines.request import build_request
    from studio.server import build_studio, launch_kwargs
    from studio.share import create_link
    from share_support import free_port
    from tiny_models import save_tiny_pipeline
    import storage

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-share-"))
    weights = save_tiny_pipeline("ti2v-5b", work / "weights")
    studio = build_studio(work / "data", {"ti2v-5b": str(weights)})
    port = free_port()
    studio.demo.queue()
    studio.demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(studio, "127.0.0.1", port))

    owner = "bench-owner-0000000001"
    with studio.db.session() as session, session.begin():
        project = storage.get_or_create_default_project(session, owner)
    request = build_request({"variant": "ti2v-5b", "prompt": "a red kite over grey sea cliffs at dusk",
                             "width": args.size, "height": args.size, "frames": args.frames,
                             "steps": args.steps, "seed": 1},
                            studio.manager.defaults_for("ti2v-5b")).request

    def generate_once() -> int:
        final = None
        for update in studio.runner.generate(owner, project.id, request, request.to_dict()):
            final = update
        if final is None or final.take is None or final.take.status != storage.TakeStatus.COMPLETED:
            raise RuntimeError(f"generation did not complete: {final}")
        return final.take_id

    started = time.perf_counter()
    take_id = generate_once()
    one_take_s = time.perf_counter() - started
    url = create_link(studio.db, owner, take_id, f"http://127.0.0.1:{port}")
    path = url.split(str(port), 1)[1]
    run_load(port, path, 50, args.clients)  # warm-up

    idle = run_load(port, path, args.requests, args.clients)

    stop = threading.Event()
    done = [0]

    def generate_forever() -> None:
        while not stop.is_set():
            generate_once()
            done[0] += 1

    generator = threading.Thread(target=generate_forever, daemon=True)
    generator.start()
    time.sleep(min(2.0, one_take_s / 3))  # let the first run get into its denoising loop
    busy_started = time.perf_counter()
    busy = run_load(port, path, args.requests, args.clients)
    busy_s = time.perf_counter() - busy_started
    stop.set()
    generator.join()
    studio.close()

    base_p95 = percentile(idle, 95)
    print(f"\n/share/<token>: {args.requests} requests from {args.clients} keep-alive clients "
          f"(separate process); generation: tiny TI2V-5B, {args.size}x{args.size}, {args.frames} frames, "
          f"{args.steps} steps, {one_take_s:.2f} s per take, torch threads 1")
    print(f"{'phase':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p95 / idle':>12}")
    for name, values in (("idle (baseline)", idle), ("while generating", busy)):
        p95 = percentile(values, 95)
        print(f"{name:<22}{percentile(values, 50):>9.1f}{p95:>9.1f}{percentile(values, 99):>9.1f}"
              f"{max(values):>9.1f}{p95 / base_p95:>12.2f}")
    print("load average (1, 5, 15 min) at the end, on {} cores: {:.1f} {:.1f} {:.1f}".format(
        os.cpu_count(), *os.getloadavg()))
    print(f"takes finished during the loaded phase: {done[0]} in {busy_s:.1f} s "
          f"(the generator ran the whole time)")
    verdict = "PASS" if percentile(busy, 95) < TARGET_P95_MS else "FAIL"
    print(f"target p95 < {TARGET_P95_MS:.0f} ms while generating: {verdict}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load-only":
        port, path, requests, clients = sys.argv[2:6]
        print(json.dumps(load(int(port), path, int(requests), int(clients))))
    else:
        main()
