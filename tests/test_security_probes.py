"""Security and fault probes against the real studio, as an attacker and an operator would try
them: forged media URLs and owner keys from what the page exposes, oversized and non-image
uploads, paths in shared files, raw inputs that used to reach Python or SQL, the per-owner
limits, a second server on one data folder, a read-only database, and a full disk mid-run.

Each probe records (probe, count, result); `WAN_STUDIO_PROBE_REPORT=docs/security-probes.md`
writes them as the table in docs/security.md.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import psutil
import pytest
from gradio_client import Client
from PIL import Image
from studio_helpers import TINY, form_values, free_port, wait_for, weights_map

import storage
from pipelines.events import StepEvent
from pipelines.video import read_settings
from studio.limits import MAX_BODY_BYTES, Limits
from studio.media_links import MediaSigner
from studio.owners import account_owner_key, legacy_account_owner_key, new_owner_key
from studio.server import QUEUE_SLOTS, Studio, build_studio, launch_kwargs
from studio.take_events import TakeFinished

ROOT = Path(__file__).resolve().parent.parent
REPORT: list[tuple[str, int, str]] = []
INTERNALS = re.compile(r"Traceback|File \"|sqlalchemy|SELECT |INSERT |UPDATE |\[parameters|"
                       r"/tmp/|/root/|site-packages|Error\(", re.IGNORECASE)


def record(probe: str, count: int, result: str) -> None:
    """Add a row to the probe report."""
    REPORT.append((probe, count, result))


@pytest.fixture(scope="module", autouse=True)
def probe_report() -> Iterator[None]:
    yield
    target = os.environ.get("WAN_STUDIO_PROBE_REPORT")
    if target and REPORT:
        rows = "\n".join(f"| {probe} | {count} | {result} |" for probe, count, result in REPORT)
        Path(target).write_text("| probe | count | result |\n|---|---|---|\n" + rows + "\n",
                                encoding="utf-8")


@dataclass
class Served:
    """The studio served on a local port, with a gradio_client and raw HTTP helpers."""

    studio: Studio
    url: str
    port: int
    client: Client

    def raw(self, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request with the path sent exactly as written."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True,
                                  skip_host="Host" in (headers or {}))
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def serve(studio: Studio) -> Served:
    """Queue and launch `studio` on a free port."""
    studio.demo.queue(default_concurrency_limit=QUEUE_SLOTS)
    port = free_port()
    _, url, _ = studio.demo.launch(prevent_thread_lock=True, quiet=True,
                                   **launch_kwargs(studio, "127.0.0.1", port))
    return Served(studio, url, port, Client(url, verbose=False))


@pytest.fixture(scope="module")
def served(tiny_weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    studio = build_studio(tmp_path_factory.mktemp("probe-data"), weights_map(tiny_weights),
                          preview_interval_s=0.0, limits=Limits(max_queued=2))
    running = serve(studio)
    yield running
    running.client.close()
    studio.close()


def settings(**overrides: Any) -> dict[str, Any]:
    return {"variant": "ti2v-5b", "prompt": "a red ball rolls across the meadow",
            **TINY, **overrides}


def png_bytes(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def app_error(served: Served, *args: Any, api_name: str) -> str:
    """The message a call is refused with (it must be refused)."""
    with pytest.raises(Exception) as caught:
        served.client.predict(*args, api_name=api_name)
    return str(caught.value)


def page_config(served: Served) -> dict[str, Any]:
    with urllib.request.urlopen(served.url + "config") as response:
        return json.loads(response.read())


def public_secret(served: Served) -> str:
    """The BrowserState secret, as any visitor reads it from the page config."""
    for component in page_config(served)["components"]:
        if component.get("type") == "browserstate":
            return component["props"]["secret"]
    raise AssertionError("no BrowserState in the page config")


def share_token(served: Served, owner: str, take_id: int, include_image: bool = False) -> str:
    """Share a take as its owner does from the studio; returns the token."""
    from studio.share import create_link

    return create_link(served.studio.store, owner, take_id, include_image=include_image)


def generate(served: Served, owner: str, **overrides: Any) -> list[dict[str, Any]]:
    return list(served.client.submit(settings(**overrides), owner, api_name="/generate"))


# -- 1. the secret -------------------------------------------------------------------------------

def test_nothing_served_to_a_browser_holds_the_server_secret(served: Served) -> None:
    server_secret = served.studio.handlers.secrets.server
    owner = new_owner_key()
    updates = generate(served, owner)
    assert updates[-1]["event"] == "done"
    take_id = updates[-1]["take_id"]
    token = share_token(served, owner, take_id, include_image=True)
    bodies: dict[str, bytes] = {}
    for path in ("/", "/config", "/gradio_api/info", f"/share/{token}"):
        status, body = served.raw("GET", path)
        assert status == 200, path
        bodies[path] = body
    bodies["/generate stream"] = json.dumps(updates).encode()
    bodies["/takes"] = json.dumps(served.client.predict(owner, 0, api_name="/takes")).encode()
    bodies["/projects"] = json.dumps(served.client.predict(owner, api_name="/projects")).encode()
    for name, body in bodies.items():
        assert server_secret.encode() not in body, f"{name} holds the server secret"
    assert public_secret(served).encode() in bodies["/config"]  # the premise: that one is public
    record("Server-only secret in anything served (page, config, API info, share page, every "
           "API response)", len(bodies), "absent from all")


def test_media_urls_and_owner_keys_forged_from_the_public_secret_are_refused(served: Served) -> None:
    victim = new_owner_key()
    done = generate(served, victim, variant="ti2v-5b", image=data_url(png_bytes()))[-1]
    take = done["take"]
    assert take["video"] and take["poster"] and take["image"]
    secret = public_secret(served)
    forged = MediaSigner(secret)
    for kind in ("video", "poster", "image"):
        assert served.raw("GET", forged.url(take["id"], kind))[0] == 404, kind
        assert served.raw("GET", take[kind])[0] == 200, kind  # the real link still works
    record("Media URL signed with the public BrowserState secret (video, poster, start image)",
           3, "404 for each; the server's own links 200")
    refused = 0
    for key in (legacy_account_owner_key("victim", secret), account_owner_key("victim", secret)):
        with served.studio.db.session() as s, s.begin():  # as if the account had projects
            storage.create_project(s, key, "victim's project")
        for args, api in (((key, 0), "/takes"), ((key,), "/projects")):
            message = app_error(served, *args, api_name=api)
            assert "signed-in accounts" in message
            refused += 1
    record("Signed-in owner key computed from the public secret, used on /takes and /projects",
           refused, "refused: those key namespaces are the server's alone")


# -- 2. uploads ----------------------------------------------------------------------------------

def test_oversized_and_non_image_data_urls_are_refused_and_leave_no_files(served: Served) -> None:
    scratch = served.studio.handlers.scratch
    before = scratch.size()
    owner = new_owner_key()
    huge = b'{"data": ["' + b"A" * (MAX_BODY_BYTES + 1024) + b'"]}'
    rss_before = psutil.Process().memory_info().rss
    for _ in range(5):  # what once left 150 MB of temp files and grew the process by 280 MB
        status, body = served.raw("POST", "/gradio_api/call/generate", huge,
                                  {"Content-Type": "application/json",
                                   "Content-Length": str(len(huge))})
        assert status == 413 and b"larger than" in body
    grown_mb = (psutil.Process().memory_info().rss - rss_before) / 2**20
    chunked = served.raw("POST", "/gradio_api/call/generate", _chunked(huge),
                         {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert chunked[0] == 413 and b"A" * 64 not in chunked[1]
    refusals = {
        "over 20 MiB once decoded": (data_url(b"\x89PNG" + bytes(21 * 1024 * 1024)), "larger than 20 MiB"),
        "not an image": (data_url(b"#!/bin/sh\nrm -rf /\n" * 100), "could not be read"),
        "truncated PNG": (data_url(png_bytes((200, 200))[:300]), "damaged or truncated"),
        "not base64": ("data:image/png;base64,@@@@", "data URL"),
        "a file path": ("/etc/passwd", "data URL"),
        "a number": (12, "data URL"),
    }
    for name, (value, words) in refusals.items():
        message = app_error(served, settings(variant="ti2v-5b", image=value), owner, api_name="/generate")
        assert words in message and not INTERNALS.search(message), name
    assert scratch.size() == before, "refused images leave nothing in the scratch folder"
    with served.studio.db.read_session() as s, s.begin():
        assert storage.get_default_project(s, owner) is None, "and nothing in the database"
    record(f"Request body of {len(huge) / 2**20:.0f} MiB (5 with Content-Length, 1 chunked)", 6,
           f"413 with a sentence; scratch folder {before} -> {scratch.size()} bytes; server "
           f"process grew {grown_mb:.0f} MiB")
    record("Data-URL images: over 20 MiB, not an image, truncated, not base64, a path, a number",
           len(refusals), "one sentence each; scratch folder and database unchanged")


def _chunked(body: bytes, size: int = 1 << 20) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
             for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def test_shared_files_and_listings_carry_no_path_or_upload_name(served: Served,
                                                                tmp_path: Path) -> None:
    handlers = served.studio.handlers
    owner = new_owner_key()
    exif = Image.Exif()
    exif[0x0131] = "SecretCam 1.0"
    upload = tmp_path / "gradio" / "f00d" / "holiday-at-grandmas-house.jpg"  # as Gradio keeps uploads
    upload.parent.mkdir(parents=True)
    Image.new("RGB", (64, 64), (30, 140, 60)).save(upload, format="JPEG", exif=exif.tobytes())
    form = form_values(variant="ti2v-5b", image=str(upload), flow_shift=5.0, guidance=5.0)
    made = handlers.submit(owner, None, None, form)
    take_id = list(handlers.watch(made.take_id))[-1].take.id
    token = share_token(served, owner, take_id)
    leaks = ("holiday-at-grandmas-house", str(tmp_path), "/gradio/", str(served.studio.data_dir),
             "SecretCam")
    seen: dict[str, bytes] = {}
    _, seen["share MP4"] = served.raw("GET", f"/share/{token}/video.mp4")
    _, seen["share page"] = served.raw("GET", f"/share/{token}")
    seen["MP4 settings"] = json.dumps(_settings_of(seen["share MP4"], tmp_path)).encode()
    listed = served.client.predict(owner, 0, api_name="/takes")
    seen["/takes"] = json.dumps(listed).encode()
    _, seen["stored start image"] = served.raw("GET", listed[0]["image"])
    seen["stored recipe"] = served.studio.store.get_take(owner, take_id).request_json.encode()
    for name, body in seen.items():
        for leak in leaks:
            assert leak.encode() not in body, f"{name} holds {leak!r}"
    settings = json.loads(seen["MP4 settings"])
    assert "image_path" not in settings["request"] and len(settings["start_image"]) == 64
    assert served.raw("GET", f"/share/{token}/image")[0] == 404, "not shown unless chosen"
    record("Paths and upload names in a shared take's MP4, its settings, share page, /takes, "
           "stored recipe and start image (EXIF too)", len(seen) * len(leaks), "none found")


def _settings_of(mp4: bytes, folder: Path) -> dict[str, Any]:
    path = folder / "downloaded.mp4"
    path.write_bytes(mp4)
    return read_settings(path)


# -- 3. raw inputs -------------------------------------------------------------------------------

RAW_PATHS = ["/media/¹/video", "/media/1/video?exp=²&sig=00", "/media/1/video?exp=1&sig=%C3%A9%C3%A9",
             "/media/" + "9" * 25 + "/video?exp=1&sig=a", "/media/0/video?exp=99999999999&sig=a",
             "/media/-1/poster", "/share/%C3%A9" * 3, "/media/1/%00"]


def test_raw_paths_get_404_never_500(served: Served) -> None:
    for path in RAW_PATHS:
        status, body = served.raw("GET", urllib.parse.quote(path, safe="/?&=%"))
        assert status == 404 and not INTERNALS.search(body.decode("utf-8", "replace")), path
    record("Non-ASCII digits in a media id or expiry, non-ASCII signature, ids past 2^63, "
           "NUL in a path", len(RAW_PATHS), "404, no internals")


API_REFUSALS: list[tuple[str, tuple[Any, ...], str, str]] = [
    ("settings=None", (None, "OWNER"), "/generate", "settings must be a JSON object"),
    ("settings a list", ([1, 2], "OWNER"), "/generate", "settings must be a JSON object"),
    ("width=10**400", (settings(width=10**400), "OWNER"), "/generate", "width must be a number"),
    ("width='1e999'", (settings(width="1e999"), "OWNER"), "/generate", "finite number"),
    ("a 5,000-character prompt", (settings(prompt="x" * 5000), "OWNER"), "/generate", "the most is"),
    ("project_id=2**64", (settings(), "OWNER", 2**64), "/generate", "project_id must be"),
    ("project_id of another owner", (settings(), "OWNER", 1), "/generate", "No project 1"),
    ("cancel take_id=2**64", ("OWNER", 2**64), "/cancel", "take_id must be"),
    ("cancel take_id='1; DROP TABLE takes'", ("OWNER", "1; DROP TABLE takes"), "/cancel", "take_id must be"),
    ("takes limit=101", ("OWNER", 0, 101), "/takes", "limit must be"),
    ("takes offset=-1", ("OWNER", 0, 10, -1), "/takes", "offset must be"),
    ("owner of 300 characters", ("a" * 300, 0), "/takes", "16-128 characters"),
    ("owner in the account namespace", ("hf2-" + "a" * 48, 0), "/takes", "signed-in accounts"),
]


def test_bad_api_input_gets_one_sentence_and_no_internals(served: Served) -> None:
    stranger = new_owner_key()
    with served.studio.db.session() as s, s.begin():
        storage.create_project(s, stranger, "someone else's")  # project 1 belongs to others
    owner = new_owner_key()
    for name, args, api, words in API_REFUSALS:
        args = tuple(owner if a == "OWNER" else a for a in args)
        message = app_error(served, *args, api_name=api)
        assert words in message, (name, message)
        assert not INTERNALS.search(message), (name, message)
    with served.studio.db.read_session() as s, s.begin():
        assert storage.get_default_project(s, owner) is None
    record("API inputs: settings None or a list, width 10^400 and 1e999, over-long prompt, ids "
           "past 2^63, another owner's project, SQL in an id, limit 101, bad owners",
           len(API_REFUSALS), "one sentence each, no traceback, path or SQL; nothing stored")


def test_takes_listing_sends_each_prompt_once(served: Served) -> None:
    owner = new_owner_key()
    generate(served, owner, prompt="a single telling of this prompt")
    listed = served.client.predict(owner, 0, 100, api_name="/takes")
    assert json.dumps(listed).count("a single telling of this prompt") == 2  # prompt + user text
    assert "prompt" not in listed[0]["recipe"]["request"]
    assert listed[0]["prompt"].startswith("a single")


# -- 4. limits -----------------------------------------------------------------------------------

def test_per_owner_queue_and_work_limits_and_an_operator_cancel(served: Served) -> None:
    owner = new_owner_key()
    big = settings(width=1280, height=1280, frames=241, steps=100)
    message = app_error(served, big, owner, api_name="/generate")
    assert "too big for this studio" in message and "at most" in message
    streams: list[list[dict[str, Any]]] = [[], []]
    threads = []
    for index in range(2):  # max_queued=2: two long takes, the second waits behind the first
        job = served.client.submit(settings(steps=100, frames=49, seed=index), owner,
                                   api_name="/generate")
        thread = threading.Thread(target=lambda job=job, out=streams[index]: out.extend(job),
                                  daemon=True)
        thread.start()
        threads.append(thread)
        wait_for(lambda index=index: streams[index], 60, poll_s=0.05)
    message = app_error(served, settings(), owner, api_name="/generate")
    assert "already have 2 takes queued or running" in message
    wait_for(lambda: any(u["event"] == "step" for u in streams[0]), 60, poll_s=0.05)
    running, queued = streams[0][0]["take_id"], streams[1][0]["take_id"]
    for take_id in (queued, running):  # the operator, from a shell beside the running studio
        result = subprocess.run([sys.executable, "app.py", "admin", "--data-dir",
                                 str(served.studio.data_dir), "cancel", str(take_id)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    for thread in threads:
        thread.join(timeout=60)
    assert streams[1][-1]["event"] == "cancelled" and streams[0][-1]["event"] == "cancelled"
    with served.studio.db.read_session() as s, s.begin():
        stopped = storage.get_take(s, owner, running)
        assert stopped.status == "cancelled" and stopped.step < 100
    assert generate(served, owner)[-1]["event"] == "done", "the owner may queue again"
    record("A 1280x1280, 241-frame, 100-step take on the CPU; a third queued take of one owner",
           2, "one sentence each, saying the limit")
    record("`app.py admin cancel` on another owner's queued and running takes", 2,
           "queued one cancelled at once, running one within a step")


# -- 5. the share page's address -----------------------------------------------------------------

def test_share_pages_use_the_configured_public_url_not_the_host_header(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = new_owner_key()
    take_id = generate(served, owner)[-1]["take_id"]
    monkeypatch.setenv("WAN_STUDIO_PUBLIC_URL", "https://studio.example.org")
    token = share_token(served, owner, take_id)
    status, body = served.raw("GET", f"/share/{token}", headers={"Host": "evil.example"})
    assert status == 200 and b"evil.example" not in body
    assert f'content="https://studio.example.org/share/{token}"'.encode() in body
    record("Share page fetched with a forged Host header, public URL configured", 1,
           "every link uses the configured URL")


# -- 6. a second server, a read-only folder, a read-only database --------------------------------

def _serve_command(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "app.py", "serve", "--data-dir", str(data_dir), "--port",
                           str(free_port())], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WAN_STUDIO_DEMO_WEIGHTS": "off"})


def test_a_second_server_on_a_folder_in_use_refuses_to_start(served: Served) -> None:
    result = _serve_command(served.studio.data_dir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "already using the data folder" in lines[0] and "Traceback" not in result.stderr
    record("A second `app.py serve` on a data folder in use", 1, "exit 2 with one sentence")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at `path` (skips where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the disk and "
                    "read-only probes need one")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def test_a_read_only_data_folder_at_start_up_gives_one_sentence(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "8m") as folder:
        remount(folder, "ro")
        result = _serve_command(folder / "data")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "data folder" in lines[0]
    record("`app.py serve` on a read-only data folder", 1, "exit 2 with one sentence")


def test_a_read_only_database_answers_with_a_sentence_not_sql(
        tiny_weights: dict[str, Path], tmp_path: Path) -> None:
    """Linux will not remount a file system read-only under a database open for writing, so the
    driver's own error is injected into every write statement, SQL and parameters included."""
    import sqlite3

    from sqlalchemy import event

    studio = build_studio(tmp_path / "data", weights_map(tiny_weights), preview_interval_s=0.0)
    running = serve(studio)
    read_only = {"on": False}

    def refuse_writes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if read_only["on"] and statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("attempt to write a readonly database")

    event.listen(studio.db.engine, "before_cursor_execute", refuse_writes)
    try:
        owner = new_owner_key()
        assert generate(running, owner)[-1]["event"] == "done"
        read_only["on"] = True
        messages = [app_error(running, settings(seed=2), owner, api_name="/generate")]
        with pytest.raises(Exception) as caught:
            studio.handlers.create_project(owner, "while read-only")
        messages.append(str(caught.value))
        for message in messages:
            assert "read-only" in message, message
            assert not INTERNALS.search(message), message
        read_only["on"] = False
        assert generate(running, owner, seed=3)[-1]["event"] == "done", "serving again"
    finally:
        running.client.close()
        studio.close()
    record("Writes while the database is read-only (API generate, UI new project)", 2,
           "a sentence, no SQL or parameters; works again once writable")


# -- 7. a full disk mid-run ----------------------------------------------------------------------

def _fill(folder: Path) -> Path:
    """Fill the file system under `folder` until it has no room left."""
    filler = folder / "filler.bin"
    chunk = b"\0" * (256 * 1024)
    with open(filler, "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(chunk)
    with open(filler, "ab", buffering=0) as handle:  # the last few bytes too
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 512)
    return filler


def _run_filling(studio: Studio, owner: str, filler_dir: Path,
                 free_after_s: float | None) -> TakeFinished:
    """Generate a take, filling the disk at its first step; optionally free it after a while."""
    filler: Path | None = None
    made = studio.handlers.submit(owner, None, None, form_values(steps=8))
    for event in studio.handlers.watch(made.take_id):
        if filler is None and isinstance(event, StepEvent):
            filler = _fill(filler_dir)
            if free_after_s is not None:
                threading.Timer(free_after_s, filler.unlink).start()
    if free_after_s is None and filler is not None:
        filler.unlink()
    return event


def _generate(studio: Studio, owner: str, **overrides: Any) -> TakeFinished:
    made = studio.handlers.submit(owner, None, None, form_values(**overrides))
    return list(studio.handlers.watch(made.take_id))[-1]


def test_a_full_disk_mid_run_fails_the_take_with_a_sentence_and_the_next_one_completes(
        tiny_weights: dict[str, Path], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "24m") as folder:
        studio = build_studio(folder / "data", weights_map(tiny_weights), preview_interval_s=0.0,
                              save_wait_s=1.0)
        try:
            owner = new_owner_key()
            ended = _run_filling(studio, owner, folder, free_after_s=None)
            assert ended.take.status == "failed" and "disk is full" in ended.message, ended.message
            assert _generate(studio, owner, seed=11).take.status == "completed", "the next one"
            failed = studio.store.get_take(owner, ended.take.id)
            assert failed.status == "failed" and "disk is full" in failed.error
            assert studio.store.list_unfinished() == []
        finally:
            studio.close()
    record("Data folder's disk filled at the first step, freed after the take ended", 1,
           "take failed with a sentence (its row written once there was room); next take completed")


def test_a_full_disk_freed_while_the_take_waits_still_saves_it(
        tiny_weights: dict[str, Path], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "24m") as folder:
        studio = build_studio(folder / "data", weights_map(tiny_weights), preview_interval_s=0.0,
                              save_wait_s=30.0)
        try:
            ended = _run_filling(studio, new_owner_key(), folder, free_after_s=1.5)
            assert ended.take.status == "completed", ended.message
        finally:
            studio.close()
    record("Disk filled at the first step, freed while the finished take waited to be saved", 1,
           "saved on the retry: completed")


def test_fault_injection_a_database_error_in_the_final_write_frees_the_worker(
        tiny_weights: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a tmpfs: the final write raises the error SQLite gives when the disk is full."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    import storage.queue

    studio = build_studio(tmp_path / "data", weights_map(tiny_weights), preview_interval_s=0.0,
                          save_wait_s=0.5)
    try:
        owner = new_owner_key()
        real = storage.queue.finish_take
        failures = {"left": 3}  # the save, its retry, and marking it failed

        def failing(*args: Any, **kwargs: Any) -> Any:
            if failures["left"]:
                failures["left"] -= 1
                raise OperationalError("UPDATE takes ...", {}, sqlite3.OperationalError(
                    "database or disk is full"))
            return real(*args, **kwargs)

        monkeypatch.setattr(storage.queue, "finish_take", failing)
        ended = _generate(studio, owner)
        assert "disk is full" in ended.message and "UPDATE" not in ended.message
        monkeypatch.setattr(storage.queue, "finish_take", real)
        assert _generate(studio, owner, seed=3).take.status == "completed"
        assert studio.store.get_take(owner, ended.take.id).status == "failed"
    finally:
        studio.close()


# -- 8. what older studios stored ----------------------------------------------------------------

def test_paths_stored_by_older_studios_are_cleaned_at_start_up(tiny_weights: dict[str, Path],
                                                               tmp_path: Path) -> None:
    from share_support import tiny_request

    from pipelines.video import read_frames, write_mp4

    data = tmp_path / "data"
    leaked = "/tmp/gradio/3f2a/holiday-at-grandmas-house.png"
    with storage.Database.open(data) as db:
        request = {**tiny_request("an old take").to_dict(), "image_path": leaked}
        frames = (np.arange(9 * 48 * 64 * 3) % 251).astype(np.uint8).reshape(9, 48, 64, 3)
        video = write_mp4(frames, tmp_path / "old.mp4", 24, request)
        with db.session() as s, s.begin():
            project = storage.get_or_create_default_project(s, "old-owner-key-123456")
            take = storage.add_take(s, "old-owner-key-123456", project.id, request)
            storage.start_take(s, "old-owner-key-123456", take.id)
            take = storage.finish_take(s, "old-owner-key-123456", take.id, "completed",
                                       video=video, poster=None)
        stored = db.media.resolve(take.video_path)
        assert b"holiday" in stored.read_bytes()
    studio = build_studio(data, weights_map(tiny_weights))
    try:
        assert b"holiday" not in stored.read_bytes()
        assert read_settings(stored)["image_path"] is None
        assert (read_frames(stored) == read_frames(video)).all(), "the video itself is untouched"
        with studio.db.read_session() as s, s.begin():
            again = storage.get_take(s, "old-owner-key-123456", take.id)
        assert again.request["image_path"] is None and "holiday" not in again.request_json
        assert again.request["prompt"] == "an old take"
    finally:
        studio.close()
    record("Start-image paths in recipes and MP4s stored by an older studio", 1,
           "removed at start-up; the video stream copied unchanged")
