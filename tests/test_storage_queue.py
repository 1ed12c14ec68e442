"""The queue in the database: claims, fairness across owners, leases, re-queues, positions, on
SQLite and on PostgreSQL (skipped, saying why, when none is running)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from storage_support import JPEG, MP4, migrated, open_backend, postgres_template  # noqa: F401

import storage
import storage.queue

REQUEST = {"variant": "ti2v-5b", "prompt": "a take", "seed": 1, "steps": 4}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path, migrated: Path):
    template = request.getfixturevalue("postgres_template") if request.param == "postgresql" else migrated
    yield from open_backend(request.param, tmp_path / "data", template)


def submit(db: storage.Database, owner: str, count: int = 1, variant: str = "ti2v-5b") -> list[int]:
    ids = []
    with db.session() as s, s.begin():
        project = storage.get_or_create_default_project(s, owner)
        for _ in range(count):
            ids.append(storage.add_take(s, owner, project.id, {**REQUEST, "variant": variant}).id)
    return ids


def claim(db: storage.Database, worker: str = "w1", variants: list[str] | None = None,
          lease_s: float = storage.LEASE_S) -> storage.TakeRecord | None:
    with db.session() as s, s.begin():
        return storage.claim_next(s, worker, variants, lease_s=lease_s)


def test_owners_take_turns_and_each_owner_s_takes_run_oldest_first(db: storage.Database) -> None:
    alice = submit(db, "alice", 4)  # alice queues four before anyone else arrives
    bob = submit(db, "bob", 2)
    carol = submit(db, "carol", 1)
    with db.read_session() as s, s.begin():
        positions = storage.queue_positions(s)
        assert storage.queue_positions(s, "bob") == {bob[0]: 2, bob[1]: 5}
    order = []
    while (take := claim(db)) is not None:
        order.append(take.id)
        with db.session() as s, s.begin():
            storage.end_claimed(s, take.id, "w1", "completed", video=MP4, poster=JPEG)
    assert order == [alice[0], bob[0], carol[0], alice[1], bob[1], alice[2], alice[3]]
    assert sorted(positions, key=positions.get) == order, "positions predict the claim order"


def test_a_worker_takes_only_the_variants_it_has_weights_for(db: storage.Database) -> None:
    t2v = submit(db, "alice", variant="t2v-a14b")[0]
    ti2v = submit(db, "alice", variant="ti2v-5b")[0]
    assert claim(db, variants=["i2v-a14b"]) is None and claim(db, variants=[]) is None
    assert claim(db, variants=["ti2v-5b"]).id == ti2v
    assert claim(db, variants=["t2v-a14b", "i2v-a14b"]).id == t2v


def test_workers_claiming_at_once_never_take_the_same_take(db: storage.Database) -> None:
    ids = set(submit(db, "alice", 12) + submit(db, "bob", 12))
    claimed: list[int] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (take := claim(db, name)) is not None:
            with lock:
                claimed.append(take.id)
            with db.session() as s, s.begin():
                storage.end_claimed(s, take.id, name, "completed", video=MP4, poster=JPEG)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(claimed) == sorted(ids), "every take once, none twice"


def test_leases_belong_to_their_worker(db: storage.Database) -> None:
    take_id = submit(db, "alice")[0]
    take = claim(db, "w1")
    assert take.id == take_id and take.status == "running" and take.worker == "w1" and take.attempts == 1
    with db.session() as s, s.begin():
        renewed = storage.renew_lease(s, take_id, "w1", step=2, total_steps=4)
    assert renewed.step == 2 and not renewed.cancel_requested
    with pytest.raises(storage.LeaseLostError):
        with db.session() as s, s.begin():
            storage.renew_lease(s, take_id, "w2")
    with pytest.raises(storage.LeaseLostError):
        with db.session() as s, s.begin():
            storage.end_claimed(s, take_id, "w2", "completed", video=MP4, poster=JPEG)
    with db.session() as s, s.begin():
        storage.request_cancel(s, take_id, "alice")
        assert storage.renew_lease(s, take_id, "w1").cancel_requested  # seen at its next step
        ended = storage.end_claimed(s, take_id, "w1", "cancelled", error="Cancelled after 2 of 4 steps.")
    assert ended.status == "cancelled" and ended.worker is None


def test_a_dead_worker_s_take_is_queued_again_once_then_interrupted(db: storage.Database) -> None:
    take_id = submit(db, "alice")[0]
    assert claim(db, "w1", lease_s=0.05).id == take_id
    with db.session() as s, s.begin():
        assert storage.release_expired(s) == ([], []), "the lease still holds"
    time.sleep(0.1)
    with db.session() as s, s.begin():
        assert storage.release_expired(s) == ([take_id], [])
        back = storage.get_take(s, "alice", take_id)
    assert back.status == "pending" and back.worker is None and back.step == 0
    with pytest.raises(storage.LeaseLostError):  # the dead worker cannot finish it any more
        with db.session() as s, s.begin():
            storage.end_claimed(s, take_id, "w1", "completed", video=MP4, poster=JPEG)
    assert claim(db, "w2", lease_s=0.05).attempts == 2
    time.sleep(0.1)
    with db.session() as s, s.begin():
        assert storage.release_expired(s) == ([], [take_id])
        lost = storage.get_take(s, "alice", take_id)
    assert lost.status == "interrupted" and "stopped twice" in lost.error
    assert claim(db, "w3") is None


def test_a_worker_can_replace_the_stored_recipe_when_it_ends(db: storage.Database) -> None:
    take_id = submit(db, "alice")[0]
    claim(db, "w1")
    recipe = {"recipe": 1, "request": {**REQUEST}, "profile": "cpu", "weights": "demo"}
    with db.session() as s, s.begin():
        done = storage.end_claimed(s, take_id, "w1", "completed", video=MP4, poster=JPEG,
                                   request=recipe)
    assert done.request == recipe and done.variant == "ti2v-5b" and done.status == "completed"


def test_workers_claiming_at_the_same_moment_serve_different_owners(db: storage.Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite admits one claiming transaction at a time; this is PostgreSQL's case")
    for owner in ("alice", "bob", "carol"):
        submit(db, owner, 3)
    first, second, third = db.session(), db.session(), db.session()
    try:  # three claims whose transactions are all still open: none sees the others' updates
        with first.begin(), second.begin(), third.begin():
            owners = [storage.claim_next(s, f"w{i}").owner for i, s in enumerate((first, second, third))]
        assert sorted(owners) == ["alice", "bob", "carol"], "one owner per claimer, not alice thrice"
    finally:
        for session in (first, second, third):
            session.close()


def _safetensors() -> bytes:
    import json
    import struct

    header = json.dumps({"latents": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0\0\0\0"


def test_a_failed_decode_keeps_its_latents_until_decoded_again(db: storage.Database) -> None:
    take_id = submit(db, "alice")[0]
    claim(db, "w1")
    with db.session() as s, s.begin():
        failed = storage.end_claimed(s, take_id, "w1", "failed", error="Out of memory decoding.",
                                     latents=_safetensors())
    assert failed.finished and failed.decodable and failed.latents_path.endswith(".safetensors")
    kept = db.media.resolve(failed.latents_path)
    assert kept.read_bytes() == _safetensors()
    with db.session() as s, s.begin():
        again = storage.queue.requeue_decode(s, "alice", take_id)
    assert again.status == "pending" and again.latents_path == failed.latents_path and not again.error
    claim(db, "w2")
    with db.session() as s, s.begin():
        done = storage.end_claimed(s, take_id, "w2", "completed", video=MP4, poster=JPEG)
    assert done.status == "completed" and done.latents_path is None and not kept.exists()
    with pytest.raises(storage.TransitionError, match="kept its latents"):
        with db.session() as s, s.begin():
            storage.queue.requeue_decode(s, "alice", take_id)
    with pytest.raises(storage.InvalidInputError, match="Only a failed take keeps latents"):
        with db.session() as s, s.begin():
            storage.finish_take(s, "alice", take_id, "cancelled", latents=_safetensors())
