"""Security of share links against a real Gradio server with the share routes mounted: path
traversal on every file route, token guessing, script in prompts (raw HTML and a real browser),
and other owners' takes."""

from __future__ import annotations

import base64
import http.client
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from share_support import PageParser, finished_take, free_port, share
from storage import Database, NotFoundError, Store, delete_take, get_take, resolve_share_link
from studio.media_links import MediaSigner
from studio.server import build_studio, launch_kwargs
from studio.share import ShareError, create_link, load_remix, shorten, storage_finder

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
XSS_PROMPTS = [
    '"><script>window.__xss = 1</script>',
    "</title><script>window.__xss = 2</script><title>",
    "javascript:window.__xss = 3",
    "' onmouseover='window.__xss = 4' data-x='",
    '" onfocus="window.__xss = 5" autofocus x="',
    '<img src=x onerror="window.__xss = 6"><svg onload="window.__xss = 7">',
    "</p></section><iframe src=\"javascript:parent.__xss = 8\"></iframe> {{ 7 * 7 }} {% raw %}",
]


@dataclass
class Studio:
    """A running server: Gradio app plus share routes over real storage."""

    port: int
    db: Database
    data_dir: Path
    token: str  # shared take of "alice"
    hidden_video: Path  # an unshared take's file
    xss_tokens: dict[str, str]
    signer: MediaSigner  # the server's own signer for /media URLs
    hidden_id: int

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """A raw GET: the path goes on the wire exactly as written (no client normalisation)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.putrequest("GET", path, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """The real studio (studio.server's build and launch keywords) with no model weights."""
    root = tmp_path_factory.mktemp("security")
    data_dir = root / "data"
    built = build_studio(data_dir, {})
    db = built.db
    take = finished_take(db, "alice", "a shared take", root / "work", seed=1)
    hidden = finished_take(db, "alice", "a private take", root / "work", seed=2)
    xss = {prompt: share(db, "mallory", finished_take(db, "mallory", prompt, root / "work", seed=10 + i).id)
           for i, prompt in enumerate(XSS_PROMPTS)}
    port = free_port()
    built.demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(built, "127.0.0.1", port))
    try:
        yield Studio(port, db, data_dir, share(db, "alice", take.id), db.media.resolve(hidden.video_path), xss,
                     built.handlers.signer, hidden.id)
    finally:
        built.close()


# --- path traversal -----------------------------------------------------------------------------

def traversal_payloads(studio: Studio) -> list[str]:
    db_file = studio.data_dir / "studio.db"
    source = ROOT / "studio" / "share.py"
    relative_targets = ["studio.db", "../studio.db", "studio/share.py", "app.py", "etc/passwd"]
    payloads: list[str] = []
    for target in relative_targets:
        for depth in (1, 6):
            payloads += [
                "../" * depth + target,
                "..%2f" * depth + target,
                "..%2F" * depth + target,
                "%2e%2e%2f" * depth + target,
                "%2e%2e/" * depth + target,
                "%252e%252e%252f" * depth + target,
                "..%255c" * depth + target,
                "..\\" * depth + target.replace("/", "\\"),
                "..%5c" * depth + target.replace("/", "%5c"),
                "....//" * depth + target,
            ]
    for absolute in (db_file, source, Path("/etc/passwd"), studio.hidden_video):
        text = str(absolute)
        payloads += [text, text.replace("/", "%2f"), text.replace("/", "%252f"), "/" + text,
                     text.replace("/", "\\"), f"{studio.token}%00{text}", f"%00{text}"]
    payloads += [f"{studio.token}%00", f"{studio.token}%00.mp4", "A" * 4096, "%41" * 2048,
                 studio.token + "/../" + studio.token, f"{studio.token}/..%2f..%2fstudio.db"]
    return payloads


def route_shapes(payload: str, token: str) -> list[str]:
    return [
        f"/share/{payload}",
        f"/share/{payload}/video.mp4",
        f"/share/{payload}/poster",
        f"/share/{token}/{payload}",
        f"/share/{token}/video.mp4/{payload}",
        f"/share-static/{payload}",
        f"/gradio_api/file={payload}",
        f"/file={payload}",
        f"/static/{payload}",
        f"/assets/{payload}",
    ]


def test_traversal_never_serves_the_database_source_or_other_files(studio: Studio) -> None:
    secrets_on_disk = {
        "database": (studio.data_dir / "studio.db").read_bytes()[:16],
        "source": (ROOT / "studio" / "share.py").read_bytes()[:400],
        "app source": (ROOT / "app.py").read_bytes()[:200] if (ROOT / "app.py").exists() else b"\0never",
        "passwd": b"root:x:0:0",
    }
    unshared_video = studio.hidden_video.read_bytes()[-200:]
    assert secrets_on_disk["database"].startswith(b"SQLite format 3")
    checked = 0
    for payload in traversal_payloads(studio):
        for path in route_shapes(payload, studio.token):
            status, body = studio.get(path)
            checked += 1
            for what, needle in secrets_on_disk.items():
                assert needle not in body, f"{path} served the {what} (status {status})"
            if path.startswith("/share"):
                assert unshared_video not in body, f"{path} served an unshared take's video"
            if path.startswith("/share") and status == 200:
                assert b"<html" in body and b"a shared take" not in body, f"{path} opened a take"
    assert checked > 1000


def test_share_routes_answer_traversal_with_the_404_page(studio: Studio) -> None:
    _, missing = studio.get("/share/" + "Z" * 43)
    for path in ("/share/..%2fstudio.db", "/share/%2e%2e%2f%2e%2e%2fstudio.db/video.mp4",
                 f"/share/{studio.token}%00/poster", "/share/" + "A" * 4096, "/share/%252e%252e%252fstudio.db"):
        status, body = studio.get(path)
        assert (status, body) == (404, missing), path


def test_gradio_never_serves_the_database(studio: Studio) -> None:
    for path in (studio.data_dir / "studio.db", studio.data_dir / "studio.db-wal"):
        status, body = studio.get(f"/gradio_api/file={path}")
        assert status in (403, 404) and b"SQLite" not in body


def test_an_unshared_take_cannot_be_fetched_by_its_predictable_path(studio: Studio) -> None:
    poster = next(studio.hidden_video.parent.glob("poster-*"))
    for path in (studio.hidden_video, poster):
        for route in ("/gradio_api/file=", "/file="):
            status, body = studio.get(f"{route}{path}")
            assert status in (403, 404) and body != path.read_bytes(), route


def test_a_signed_media_url_opens_its_one_file_with_ranges(studio: Studio) -> None:
    data = studio.hidden_video.read_bytes()
    url = studio.signer.url(studio.hidden_id, "video")
    assert url.startswith(f"/media/{studio.hidden_id}/video?exp=") and str(studio.data_dir) not in url
    assert studio.get(url) == (200, data)
    status, part = studio.get(url, {"Range": "bytes=0-7"})
    assert status == 206 and part == data[:8] and part[4:8] == b"ftyp"
    status, poster = studio.get(studio.signer.url(studio.hidden_id, "poster"))
    assert status == 200 and poster[:3] == b"\xff\xd8\xff"
    assert studio.get(studio.signer.url(studio.hidden_id, "image"))[0] == 404  # it had none


def test_tampered_expired_and_malformed_media_urls_get_404(studio: Studio) -> None:
    url = studio.signer.url(studio.hidden_id, "video")
    path, _, query = url.partition("?")
    exp, sig = (part.split("=", 1)[1] for part in query.split("&"))
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    other_id = studio.hidden_id - 1
    expired = studio.signer.url(studio.hidden_id, "video", now=time.time() - studio.signer.ttl_s - 5)
    bad = [
        f"{path}?exp={exp}&sig={flipped}",  # tampered signature
        f"{path}?exp={int(exp) + 3600}&sig={sig}",  # longer life, same signature
        f"/media/{other_id}/video?exp={exp}&sig={sig}",  # another take
        f"/media/{studio.hidden_id}/poster?exp={exp}&sig={sig}",  # another kind
        expired,
        path, f"{path}?exp={exp}", f"{path}?sig={sig}", f"{path}?exp=-1&sig={sig}",
        f"/media/{studio.hidden_id}/..%2f..%2fstudio.db?exp={exp}&sig={sig}",
        f"/media/..%2fstudio.db/video?exp={exp}&sig={sig}", "/media/" + "9" * 40 + f"/video?exp={exp}&sig={sig}",
        f"/media/{studio.hidden_video}", "/media/",
    ]
    for attempt in bad:
        status, body = studio.get(attempt)
        assert status == 404 and b"ftyp" not in body, attempt


def test_media_signer_refuses_weak_secrets_and_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        MediaSigner("short")
    with pytest.raises(ValueError, match="positive lifetime"):
        MediaSigner("s" * 40, ttl_s=0)
    with pytest.raises(ValueError, match="video, poster, image"):
        MediaSigner("s" * 40).url(1, "database")  # type: ignore[arg-type]
    assert MediaSigner("s" * 40).url(1, "video") != MediaSigner("t" * 40).url(1, "video")


def test_the_legitimate_routes_still_work(studio: Studio) -> None:
    assert studio.get(f"/share/{studio.token}")[0] == 200
    status, body = studio.get(f"/share/{studio.token}/video.mp4", {"Range": "bytes=0-7"})
    assert status == 206 and body[4:8] == b"ftyp"
    assert studio.get(f"/share/{studio.token}/poster")[0] == 200


# --- tokens -------------------------------------------------------------------------------------

def test_tokens_carry_at_least_128_random_bits(studio: Studio, tmp_path: Path) -> None:
    tokens = set()
    for seed in range(5):
        take = finished_take(studio.db, "carol", f"take {seed}", tmp_path, seed=100 + seed)
        tokens.add(share(studio.db, "carol", take.id))
    assert len(tokens) == 5
    for token in tokens:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) * 8 >= 128


@pytest.mark.slow
def test_ten_thousand_guesses_find_nothing(studio: Studio) -> None:
    with studio.db.read_session() as session, session.begin():
        hits = [guess for guess in (secrets.token_urlsafe(32) for _ in range(10_000))
                if resolve_share_link(session, guess) is not None]
    assert hits == []


def test_guesses_over_http_and_near_misses_open_nothing(studio: Studio) -> None:
    find = storage_finder(Store(studio.db))
    near = studio.token[:-1] + ("A" if studio.token[-1] != "A" else "B")
    assert find(near) is None, "a token one character off opens nothing"
    assert find(studio.token) is not None
    statuses = {studio.get(f"/share/{secrets.token_urlsafe(32)}")[0] for _ in range(100)}
    assert statuses == {404}


# --- script in prompts --------------------------------------------------------------------------

def test_prompts_with_markup_stay_text_in_the_raw_page(studio: Studio) -> None:
    for prompt, token in studio.xss_tokens.items():
        status, body = studio.get(f"/share/{token}")
        html = body.decode()
        page = PageParser(html)
        assert status == 200
        assert page.scripts == 0, prompt
        assert "<img" not in html and "<svg" not in html and "<iframe" not in html
        assert not [(i, a) for i, attrs in page.by_id.items() for a in attrs if a.startswith("on")]
        assert page.text["share-prompt"] == prompt
        assert page.meta["og:description"] == shorten(prompt, 200)
        assert page.meta["twitter:description"] == shorten(prompt, 200)
        assert page.title.startswith(shorten(prompt, 70))
        assert "49" not in page.text["share-prompt"], "the prompt is never evaluated as a template"


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")
def test_no_script_from_a_prompt_runs_in_a_browser(studio: Studio) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            for prompt, token in studio.xss_tokens.items():
                page.goto(f"http://127.0.0.1:{studio.port}/share/{token}", wait_until="load")
                page.hover("#share-prompt")
                page.focus("#share-remix")
                assert page.evaluate("window.__xss") is None, prompt
                assert page.evaluate("document.querySelectorAll('script, iframe, img, svg').length") == 0
                assert page.text_content("#share-prompt") == prompt
                description = page.get_attribute('meta[property="og:description"]', "content")
                assert description == shorten(prompt, 200)
                assert page.get_attribute("#share-remix", "href").endswith(f"/?remix={token}")
            assert dialogs == []
            page.goto(f"http://127.0.0.1:{studio.port}/share/{studio.token}", wait_until="load")
            page.wait_for_function("document.getElementById('share-video').readyState >= 1", timeout=10_000)
            assert page.evaluate("document.getElementById('share-video').error") is None, "the MP4 plays inline"
        finally:
            browser.close()


# --- other owners -------------------------------------------------------------------------------

def test_another_owners_take_cannot_be_shared_revoked_read_or_deleted(studio: Studio, tmp_path: Path) -> None:
    take = finished_take(studio.db, "dave", "a take by someone", tmp_path, seed=300)
    token = create_link(Store(studio.db), "dave", take.id)
    with pytest.raises(ShareError):
        create_link(Store(studio.db), "eve", take.id)
    with pytest.raises(NotFoundError):
        Store(studio.db).revoke("eve", token)
    with studio.db.session() as session, session.begin():
        assert get_take(session, "eve", take.id) is None
        with pytest.raises(NotFoundError):
            delete_take(session, "eve", take.id)
    assert studio.get(f"/share/{token}")[0] == 200, "dave's link still works"
    recipe, image = load_remix(Store(studio.db), token)
    assert "dave" not in str(recipe.to_dict()) and image is None
