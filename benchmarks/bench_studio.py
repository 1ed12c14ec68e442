"""Studio latency, measured by hand: `nice -n 10 python benchmarks/bench_studio.py`.

1. Click to first preview: time from the API `generate` request to the first preview update,
   minus the first denoising step's own time. Baseline in the same run: the engine called
   directly (no queue, no storage, no HTTP), same request, same measure. The studio path is
   submit (the take stored as queued), the in-process worker's claim, the run, and the event
   bus back to the API's watch.
2. History listing while a job runs: 100 `/takes` calls through gradio_client, then 100 over
   one keep-alive HTTP connection (POST /gradio_api/run/takes, as a browser would reuse one),
   while a long generation runs, against the same calls with the studio idle.

"Step 1's own time" is the engine's own elapsed time at the end of step 1 (model lookup, text
encoding and the step), so what remains is the studio's overhead: queue, storage, preview
encoding and transport.

Uses tiny random weights built in-process (tests/tiny_models.py) and a temporary data folder.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client  # noqa: E402

from pipelines.engine import Engine  # noqa: E402
from pipelines.events import PreviewEvent, StepEvent  # noqa: E402
from pipelines.request import build_request  # noqa: E402
from studio.owners import new_owner_key  # noqa: E402
from studio.server import QUEUE_SLOTS, build_studio, launch_kwargs  # noqa: E402
from studio_helpers import free_port  # noqa: E402
from tiny_models import save_tiny_pipeline  # noqa: E402

RUNS = 10
LIST_CALLS = 100
SETTINGS = {"variant": "t2v-a14b", "prompt": "a red ball rolls across the meadow",
            "width": 64, "height": 64, "frames": 9, "steps": 6, "seed": 1}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def first_preview_api(client: Client, owner: str) -> float:
    """Seconds from the request to the first preview update, minus step 1's own time."""
    start = time.perf_counter()
    step_one, latency = 0.0, None
    for update in client.submit(SETTINGS, owner, api_name="/generate"):  # read to the end
        if update["event"] == "step" and update["step"] == 1:
            step_one = update["elapsed_s"]
        if update["event"] == "preview" and latency is None:
            latency = time.perf_counter() - start - step_one
    if latency is None:
        raise RuntimeError("The run produced no preview.")
    return latency


def first_preview_direct(engine, request) -> float:
    """The same measure with the engine called directly."""
    marks: dict[str, float] = {}

    def on_event(event) -> None:
        if isinstance(event, StepEvent) and event.index == 1:
            marks["step"] = event.elapsed_s
        if isinstance(event, PreviewEvent) and "preview" not in marks:
            marks["preview"] = time.perf_counter()

    start = time.perf_counter()
    engine.generate(request, on_event)
    return marks["preview"] - start - marks.get("step", 0.0)


def listing_times(client: Client, http: httpx.Client, url: str, owner: str) -> dict[str, list[float]]:
    """LIST_CALLS /takes calls with gradio_client, then as many over one keep-alive HTTP client."""
    times: dict[str, list[float]] = {"gradio_client": [], "HTTP keep-alive": []}
    for _ in range(LIST_CALLS):
        start = time.perf_counter()
        client.predict(owner, 0, api_name="/takes")
        times["gradio_client"].append(time.perf_counter() - start)
    for _ in range(LIST_CALLS):
        start = time.perf_counter()
        response = http.post(f"{url}gradio_api/run/takes", json={"data": [owner, 0, 50, 0]})
        response.raise_for_status()
        times["HTTP keep-alive"].append(time.perf_counter() - start)
    return times


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        weights = {"t2v-a14b": str(save_tiny_pipeline("t2v-a14b", Path(tmp) / "t2v-a14b"))}
        studio = build_studio(Path(tmp) / "data", weights, preview_interval_s=0.0)
        studio.demo.queue(default_concurrency_limit=QUEUE_SLOTS)
        _, url, _ = studio.demo.launch(prevent_thread_lock=True, quiet=True,
                                       **launch_kwargs(studio, "127.0.0.1", free_port()))
        client = Client(url, verbose=False)
        owner = new_owner_key()
        request = build_request(SETTINGS).request
        engine = Engine(studio.manager)  # the worker's model, without the queue in between
        engine.generate(request, lambda e: None)  # warm: load the model, fit the preview map
        for update in client.submit(SETTINGS, owner, api_name="/generate"):
            pass

        direct, studio_times = [], []
        for _ in range(RUNS):
            direct.append(first_preview_direct(engine, request))
            studio_times.append(first_preview_api(client, owner))

        http = httpx.Client(timeout=60)
        idle = listing_times(client, http, url, owner)
        long_job = client.submit({**SETTINGS, "steps": 100, "width": 256, "height": 256,
                                  "frames": 33}, owner, api_name="/generate")
        busy_started = threading.Event()

        def follow() -> None:
            for update in long_job:
                if update["event"] == "step":
                    busy_started.set()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        busy_started.wait(120)
        busy = listing_times(client, http, url, owner)
        still_running = follower.is_alive()
        follower.join()
        http.close()
        client.close()
        studio.close()

    d_med, s_med = statistics.median(direct), statistics.median(studio_times)
    print(f"\nClick to first preview, minus step 1 (median of {RUNS}, tiny t2v, 64x64x9, 6 steps)")
    print(f"{'path':<34}{'median ms':>12}{'ratio':>8}")
    print(f"{'engine direct (baseline)':<34}{d_med * 1000:>12.1f}{1.0:>8.2f}")
    print(f"{'studio API (queue+storage+HTTP)':<34}{s_med * 1000:>12.1f}{s_med / d_med:>8.2f}")
    print(f"\nHistory listing via /takes, {LIST_CALLS} calls (job still running at the end: "
          f"{still_running})")
    print(f"{'client, state':<34}{'p50 ms':>10}{'p95 ms':>10}{'p95 ratio':>11}")
    for kind in idle:
        i50, i95 = percentile(idle[kind], 50), percentile(idle[kind], 95)
        b50, b95 = percentile(busy[kind], 50), percentile(busy[kind], 95)
        print(f"{kind + ', idle (baseline)':<34}{i50 * 1000:>10.1f}{i95 * 1000:>10.1f}{1.0:>11.2f}")
        print(f"{kind + ', job running':<34}{b50 * 1000:>10.1f}{b95 * 1000:>10.1f}{b95 / i95:>11.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
