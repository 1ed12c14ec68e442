"""Share links over real storage and real MP4s: the page, its preview tags, media by token with
HTTP ranges, one 404 for unknown and revoked links, and the UI handlers (create, revoke, remix)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pipelines.request import GenerationRequest
from share_support import PageParser, finished_take, share, tiny_request
from storage import (Database, NotFoundError, Store, add_take, finish_take,
                     get_or_create_default_project, start_take)
from studio.share import (
    ShareError,
    create_link,
    is_token,
    load_remix,
    share_routes,
    shorten,
    storage_finder,
)

BASE = "http://testserver"


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "data")
    yield database
    database.close()


@pytest.fixture()
def client(db: Database, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    for name in ("WAN_STUDIO_PUBLIC_URL", "SPACE_HOST", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    return TestClient(Starlette(routes=share_routes(storage_finder(Store(db)))))


def test_page_shows_the_take(db: Database, client: TestClient, tmp_path: Path) -> None:
    take = finished_take(db, "alice", "a red kite over grey sea cliffs", tmp_path / "work", seed=1234)
    token = share(db, "alice", take.id)
    response = client.get(f"/share/{token}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = PageParser(response.text)
    video = page.by_id["share-video"]
    assert video["tag"] == "video" and "controls" in video and "playsinline" in video
    assert video["poster"] == f"{BASE}/share/{token}/poster"
    assert f'<source src="{BASE}/share/{token}/video.mp4" type="video/mp4">' in response.text
    assert page.text["share-prompt"] == "a red kite over grey sea cliffs"
    settings = " ".join(page.text["share-settings"].split())
    for expected in ("Seed 1234", "Size 64 × 48", "9 at 24 fps", "Steps 4", "Guidance 5", "Flow shift 5"):
        assert expected in settings
    assert "TI2V-5B" in response.text
    assert page.by_id["share-time"]["datetime"].startswith(take.finished_at.strftime("%Y-%m-%d"))
    assert page.by_id["share-download"]["href"] == f"{BASE}/share/{token}/video.mp4"
    assert page.by_id["share-download"]["download"].endswith(".mp4")
    assert page.by_id["share-remix"]["href"] == f"{BASE}/?remix={token}"
    assert "script-src 'none'" in response.headers["content-security-policy"]
    assert client.get("/share-static/share.css").headers["content-type"].startswith("text/css")


def test_preview_tags_are_absolute_and_complete(db: Database, client: TestClient, tmp_path: Path) -> None:
    prompt = "A lighthouse keeper climbs the spiral stairs at dusk, " * 8
    take = finished_take(db, "alice", prompt, tmp_path / "work")
    token = share(db, "alice", take.id)
    meta = PageParser(client.get(f"/share/{token}").text).meta
    assert meta["og:title"].endswith("· Wan Studio") and meta["og:title"].startswith("A lighthouse keeper")
    assert meta["og:description"] == shorten(prompt, 200) and len(meta["og:description"]) <= 200
    assert meta["og:description"].endswith("…")
    assert meta["og:image"] == f"{BASE}/share/{token}/poster"
    assert meta["og:video"] == f"{BASE}/share/{token}/video.mp4"
    assert meta["og:video:type"] == "video/mp4"
    assert (meta["og:video:width"], meta["og:video:height"]) == ("64", "48")
    assert meta["og:url"] == f"{BASE}/share/{token}"
    assert meta["twitter:card"] == "summary_large_image"
    assert meta["twitter:image"] == meta["og:image"]
    assert meta["twitter:title"] == meta["og:title"]
    assert meta["twitter:description"] == meta["og:description"]
    assert client.get(meta["og:image"].removeprefix(BASE)).headers["content-type"] == "image/jpeg"
    assert client.get(meta["og:video"].removeprefix(BASE)).headers["content-type"] == "video/mp4"


@pytest.mark.parametrize(
    ("env", "base"),
    [
        ({"WAN_STUDIO_PUBLIC_URL": "https://studio.example.org/", "SPACE_HOST": "x-y.hf.space"},
         "https://studio.example.org"),
        ({"SPACE_HOST": "someone-wan-studio.hf.space"}, "https://someone-wan-studio.hf.space"),
    ],
)
def test_preview_tags_use_the_public_url(db: Database, client: TestClient, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, env: dict, base: str) -> None:
    token = share(db, "alice", finished_take(db, "alice", "waves", tmp_path / "work").id)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    page = PageParser(client.get(f"/share/{token}").text)
    assert page.meta["og:video"] == f"{base}/share/{token}/video.mp4"
    assert page.meta["og:video:secure_url"] == page.meta["og:video"]
    assert page.meta["og:image"] == f"{base}/share/{token}/poster"
    assert page.by_id["share-remix"]["href"] == f"{base}/?remix={token}"


def test_video_is_served_whole_and_by_range(db: Database, client: TestClient, tmp_path: Path) -> None:
    take = finished_take(db, "alice", "waves", tmp_path / "work")
    token = share(db, "alice", take.id)
    data = db.media.resolve(take.video_path).read_bytes()
    whole = client.get(f"/share/{token}/video.mp4")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"

    part = client.get(f"/share/{token}/video.mp4", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 0-99/{len(data)}"
    assert part.content == data[:100] and part.headers["content-length"] == "100"

    tail = client.get(f"/share/{token}/video.mp4", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    middle = client.get(f"/share/{token}/video.mp4", headers={"Range": "bytes=100-"})
    assert middle.status_code == 206 and middle.content == data[100:]

    beyond = client.get(f"/share/{token}/video.mp4", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    backwards = client.get(f"/share/{token}/video.mp4", headers={"Range": "bytes=50-10"})
    assert backwards.status_code in (400, 416)
    assert client.get(f"/share/{token}/video.mp4", headers={"Range": "bytes=abc"}).status_code == 400
    assert client.get(f"/share/{token}/video.mp4", headers={"Range": "pages=0-1"}).status_code == 400

    head = client.head(f"/share/{token}/video.mp4")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data))


def test_poster_is_served_by_token(db: Database, client: TestClient, tmp_path: Path) -> None:
    take = finished_take(db, "alice", "waves", tmp_path / "work")
    token = share(db, "alice", take.id)
    response = client.get(f"/share/{token}/poster")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == db.media.resolve(take.poster_path).read_bytes()
    assert response.headers["x-content-type-options"] == "nosniff"


def test_revoked_and_unknown_links_get_the_same_404(db: Database, client: TestClient, tmp_path: Path) -> None:
    take = finished_take(db, "alice", "waves", tmp_path / "work")
    token = share(db, "alice", take.id)
    Store(db).revoke("alice", token)
    never = "A" * 43
    pages = [client.get(f"/share/{t}") for t in (token, never, "short", "bad%20token")]
    assert {p.status_code for p in pages} == {404}
    assert len({p.text for p in pages}) == 1, "revoked, unknown and malformed look the same"
    assert "does not lead to a take" in pages[0].text
    for suffix in ("video.mp4", "poster"):
        assert client.get(f"/share/{token}/{suffix}").status_code == 404
        assert client.get(f"/share/{token}/{suffix}").text == pages[0].text


def test_a_link_to_a_deleted_take_stops_working(db: Database, client: TestClient, tmp_path: Path) -> None:
    from storage import delete_take

    take = finished_take(db, "alice", "waves", tmp_path / "work")
    token = share(db, "alice", take.id)
    with db.session() as session, session.begin():
        delete_take(session, "alice", take.id)
    assert client.get(f"/share/{token}").status_code == 404
    assert client.get(f"/share/{token}/video.mp4").status_code == 404


def test_page_reveals_nothing_beyond_the_take(db: Database, client: TestClient, tmp_path: Path) -> None:
    take = finished_take(db, "owner-key-7f3a9c", "a quiet harbour", tmp_path / "work", seed=1)
    finished_take(db, "owner-key-7f3a9c", "secret second take", tmp_path / "work", seed=2)
    token = share(db, "owner-key-7f3a9c", take.id)
    html = client.get(f"/share/{token}").text
    for hidden in ("owner-key-7f3a9c", "secret second take", take.video_path, take.poster_path,
                   str(db.media.root), "studio.db", "Default", "project"):
        assert hidden not in html


# --- handlers the studio UI calls ---------------------------------------------------------------

def test_create_link_returns_a_working_token_and_never_reuses_a_revoked_one(
        db: Database, client: TestClient, tmp_path: Path) -> None:
    take = finished_take(db, "alice", "waves", tmp_path / "work")
    token = create_link(Store(db), "alice", take.id)
    assert is_token(token) and len(token) >= 22
    assert create_link(Store(db), "alice", take.id) == token, "one live link per take"
    assert client.get(f"/share/{token}").status_code == 200
    Store(db).revoke("alice", token)
    again = create_link(Store(db), "alice", take.id)
    assert again != token, "a revoked token is never handed out again"
    assert client.get(f"/share/{again}").status_code == 200


def test_create_link_refuses_another_owners_take_and_unfinished_takes(db: Database, tmp_path: Path) -> None:
    take = finished_take(db, "alice", "waves", tmp_path / "work")
    with pytest.raises(ShareError, match="not in your projects"):
        create_link(Store(db), "mallory", take.id)
    with pytest.raises(ShareError, match="not in your projects"):
        create_link(Store(db), "alice", 999_999)
    with db.session() as session, session.begin():
        project = get_or_create_default_project(session, "alice")
        pending = add_take(session, "alice", project.id, take.request)
    with pytest.raises(ShareError, match="finished take"):
        create_link(Store(db), "alice", pending.id)


def test_only_the_owner_revokes_a_link(db: Database, client: TestClient, tmp_path: Path) -> None:
    take = finished_take(db, "alice", "waves", tmp_path / "work")
    token = create_link(Store(db), "alice", take.id)
    with pytest.raises(NotFoundError):
        Store(db).revoke("mallory", token)
    assert client.get(f"/share/{token}").status_code == 200, "another owner cannot revoke it"
    Store(db).revoke("alice", token)
    assert client.get(f"/share/{token}").status_code == 404
    with pytest.raises(NotFoundError):
        Store(db).revoke("alice", "B" * 43)


def test_load_remix_gives_the_takes_recipe(db: Database, tmp_path: Path) -> None:
    take = finished_take(db, "alice", "waves at dawn", tmp_path / "work", seed=99)
    token = share(db, "alice", take.id)
    recipe, image = load_remix(Store(db), token)
    assert recipe.request == GenerationRequest.from_dict(take.request)
    assert recipe.request.seed == 99 and image is None
    Store(db).revoke("alice", token)
    assert load_remix(Store(db), token) is None
    assert load_remix(Store(db), "not a token") is None
    assert load_remix(Store(db), "C" * 43) is None


def test_a_start_image_is_private_unless_its_owner_shows_it(db: Database, client: TestClient,
                                                            tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, format="PNG")
    take = finished_take(db, "alice", "the red card flutters", tmp_path / "work", image=buffer.getvalue())
    token = share(db, "alice", take.id)
    # off by default: not on the page, not by its route, not through a remix of the link
    html = client.get(f"/share/{token}").text
    assert "Start image yes" in " ".join(PageParser(html).text["share-settings"].split())
    assert f"/share/{token}/image" not in html and take.image_path not in html
    assert client.get(f"/share/{token}/image").status_code == 404
    assert load_remix(Store(db), token)[1] is None
    # shown once the owner ticks it (the live link takes the new choice)
    assert create_link(Store(db), "alice", take.id, include_image=True) == token
    html = client.get(f"/share/{token}").text
    assert PageParser(html).by_id["share-image"]["tag"] == "figure"
    served = client.get(f"/share/{token}/image")
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content == db.media.resolve(take.image_path).read_bytes()
    image = load_remix(Store(db), token)[1]
    assert image.is_file() and image.is_relative_to(db.media.root)
    assert take.image_path not in html
    create_link(Store(db), "alice", take.id)  # and hidden again
    assert client.get(f"/share/{token}/image").status_code == 404


def test_a_share_page_whose_video_file_is_gone_answers_404(db: Database, client: TestClient,
                                                          tmp_path: Path) -> None:
    take = finished_take(db, "alice", "soon gone", tmp_path / "work", seed=41)
    token = share(db, "alice", take.id)
    assert client.get(f"/share/{token}").status_code == 200
    db.media.resolve(take.video_path).unlink()
    assert client.get(f"/share/{token}").status_code == 404
    assert client.get(f"/share/{token}/video.mp4").status_code == 404


@pytest.mark.parametrize("stored", [
    {"variant": "ti2v-5b", "prompt": "settings from an API client"},
    {**tiny_request("wrong types").to_dict(), "guidance": "strong", "fps": "fast"},
])
def test_a_take_whose_settings_cannot_be_read_gets_the_404_page(db: Database, client: TestClient,
                                                                 tmp_path: Path, stored: dict) -> None:
    take = finished_take(db, "alice", "fine", tmp_path / "work")
    with db.session() as session, session.begin():
        project = get_or_create_default_project(session, "alice")
        odd = add_take(session, "alice", project.id, stored)
        start_take(session, "alice", odd.id)
        finish_take(session, "alice", odd.id, "completed", video=db.media.resolve(take.video_path),
                    poster=db.media.resolve(take.poster_path))
    token = share(db, "alice", odd.id)
    response = client.get(f"/share/{token}")
    assert response.status_code == 404 and "does not lead to a take" in response.text


def test_shorten_cuts_at_a_word_on_one_line() -> None:
    assert shorten("short  text\nhere", 50) == "short text here"
    cut = shorten("word " * 100, 30)
    assert len(cut) <= 30 and cut.endswith("…") and "  " not in cut
    assert shorten("x" * 100, 10) == "x" * 9 + "…"
