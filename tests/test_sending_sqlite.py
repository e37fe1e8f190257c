"""The sending engine on SQLite (the embedded default): the same fan-out, leases, records and rate, no SKIP LOCKED."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import threading

import pytest
from sqlalchemy import func, select, update

from newsletter import create_app, mail, sending
from newsletter.config import Config
from newsletter.extensions import db
from newsletter.models import (
    BatchStatus,
    Delivery,
    DeliveryBatch,
    DeliveryStatus,
    Edition,
    EditionStatus,
    RateBucket,
    utcnow,
)
from tests.conftest import herald_env


@pytest.fixture
def sqlite_app(app, tmp_path, monkeypatch):
    env = herald_env(DATABASE_URL=f"sqlite:///{tmp_path / 'herald.sqlite3'}", CELERY_BROKER_URL="memory://",
                     REDIS_URL="", SEND_BATCH_SIZE="3", SEND_RATE="200")
    sqlite_app = create_app(Config.from_env(env))
    # A new app makes its Celery app the default; give the session's back, or the session's app is
    # collected mid-run with its pooled connections open.
    app.extensions["celery"].set_default()
    with sqlite_app.app_context():
        from flask_migrate import upgrade

        upgrade(revision="heads")
        monkeypatch.setattr(sending.jobs, "enqueue", lambda *args, **options: True)
        yield sqlite_app
        db.session.remove()
        db.engine.dispose()


def test_an_edition_is_fanned_out_leased_sent_and_recorded_on_sqlite(sqlite_app):
    from newsletter import demo
    from tests.test_sending import add_readers, make_edition

    daily = demo.load_newsletters()[0]
    add_readers(daily.id, 10, name=lambda i: f"Олена {i}")
    edition_id = make_edition(daily.id)
    assert sending.start_edition(edition_id).recipients == 10
    assert db.session.scalar(select(func.count()).select_from(DeliveryBatch)) == 4

    # Two "workers" claim at once: SQLite's single writer lets each batch go to exactly one.
    leases: list = []
    lock = threading.Lock()

    def claim():
        with sqlite_app.app_context():
            while (lease := sending.claim_batch(edition_id)) is not None:
                with lock:
                    leases.append(lease.batch_id)
            db.session.remove()

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(leases) == [1, 2, 3, 4]

    # Their holders died: the tick frees the batches once the leases run out, then they are sent.
    later = utcnow() + dt.timedelta(seconds=sqlite_app.config["HERALD"].SEND_LEASE_SECONDS + 1)
    assert sending.reclaim_expired_leases(later) == 4
    db.session.execute(update(DeliveryBatch).values(available_at=utcnow()))
    db.session.commit()
    mail.MemoryTransport.clear()
    while sending.deliver_batch(edition_id, mail.MemoryTransport()).claimed:
        pass

    assert len(mail.MemoryTransport.outbox) == 10
    rows = db.session.scalars(select(Delivery)).all()
    assert {r.status for r in rows} == {DeliveryStatus.SENT} and all(r.sent_at for r in rows)
    assert {b.status for b in db.session.scalars(select(DeliveryBatch))} == {BatchStatus.DONE}
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENT
    first = email.message_from_bytes(mail.MemoryTransport.outbox[0].data, policy=email.policy.default)
    assert first["To"].addresses[0].display_name == "Олена 1"
    # No Redis: the send rate was kept by the database's bucket.
    assert db.session.scalar(select(RateBucket.name)) == "herald:send-rate"
