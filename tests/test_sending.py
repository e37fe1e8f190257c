"""The sending engine: every eligible reader gets one delivery, sent once, recorded at once, under control."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import time

import pytest
from sqlalchemy import func, insert, select, text, update

from newsletter import mail, maintenance, ratelimit, sending, subscribers
from newsletter.addresses import email_hash
from newsletter.extensions import db as _db
from newsletter.mail import SLOT_NAME, SLOT_PREFERENCES_URL, SLOT_UNSUBSCRIBE_URL
from newsletter.models import (
    Audience,
    BatchStatus,
    Delivery,
    DeliveryBatch,
    DeliveryStatus,
    Edition,
    EditionRendering,
    EditionStatus,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)

TEXT = (f"Доброго ранку, {SLOT_NAME}!\n\nThe day's stories.\n\nUnsubscribe: {SLOT_UNSUBSCRIBE_URL}\n"
        f"Preferences: {SLOT_PREFERENCES_URL}\n")
HTML = (f"<html><body><p>Доброго ранку, {SLOT_NAME}!</p><p>The day's stories.</p>"
        f'<p><a href="{SLOT_UNSUBSCRIBE_URL}">Unsubscribe</a> <a href="{SLOT_PREFERENCES_URL}">Preferences</a></p>'
        "</body></html>\n")


# --- Factories (the crash drill uses them too) ----------------------------------------------------


def add_readers(newsletter_id: int, count: int, *, first: int = 1, prefix: str = "reader",
                name=lambda i: f"Reader {i}", status: SubscriptionStatus = SubscriptionStatus.SUBSCRIBED,
                confirmed: bool = True) -> list[int]:
    """Insert confirmed readers subscribed to a newsletter, in bulk; return their ids in order."""
    now = utcnow()
    keys = [f"{prefix}{i}@example.com" for i in range(first, first + count)]
    _db.session.execute(insert(Subscriber), [
        {"email": key, "email_key": key, "name": name(i), "created_at": now,
         "confirmed_at": now if confirmed else None, "confirm_window_count": 0}
        for i, key in zip(range(first, first + count), keys, strict=True)
    ])
    ids = dict(_db.session.execute(select(Subscriber.email_key, Subscriber.id)
                                   .where(Subscriber.email_key.in_(keys))).all())
    _db.session.execute(insert(Subscription), [
        {"subscriber_id": ids[key], "newsletter_id": newsletter_id, "status": status, "created_at": now,
         "requested_at": now, "confirmed_at": now if status == SubscriptionStatus.SUBSCRIBED else None}
        for key in keys
    ])
    _db.session.commit()
    return [ids[key] for key in keys]


def make_edition(newsletter_id: int, *, status: EditionStatus = EditionStatus.FROZEN, run_at: dt.datetime | None = None,
                 subject: str = "Щоденний дайджест", text_body: str = TEXT, html_body: str = HTML) -> int:
    """A frozen edition rendered for both audiences, as digests.freeze_edition leaves it."""
    now = utcnow()
    edition = Edition(newsletter_id=newsletter_id, run_at=run_at or now, status=status, subject=subject,
                      frozen_at=now if status != EditionStatus.DRAFT else None)
    _db.session.add(edition)
    _db.session.flush()
    if status != EditionStatus.DRAFT:
        for audience in Audience:
            _db.session.add(EditionRendering(edition_id=edition.id, audience=audience, subject=subject,
                                             html=html_body, text=text_body))
    _db.session.commit()
    return edition.id


def drain(edition_id: int, transport: mail.Transport, limit: int = 1000) -> list[sending.BatchResult]:
    """Run batches in this process until none is claimable now."""
    results = []
    for _ in range(limit):
        result = sending.deliver_batch(edition_id, transport)
        if not result.claimed:
            break
        results.append(result)
    return results


def statuses(edition_id: int) -> dict[int, DeliveryStatus]:
    return dict(_db.session.execute(select(Delivery.subscriber_id, Delivery.status)
                                    .where(Delivery.edition_id == edition_id)).all())


def parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


@pytest.fixture
def config(app):
    return app.config["HERALD"]


@pytest.fixture
def enqueued(monkeypatch):
    """Record the tasks the engine enqueues instead of sending them to the broker."""
    calls: list[tuple] = []
    monkeypatch.setattr(sending.jobs, "enqueue", lambda name, *args, **options: calls.append((name, *args)) or True)
    return calls


@pytest.fixture
def daily(newsletters):
    return newsletters[0]


@pytest.fixture
def smtp(smtp_server):
    transport = mail.transport_from_url(smtp_server.url, timeout=5)
    yield transport
    transport.close()


# --- Fan-out --------------------------------------------------------------------------------------


def test_fan_out_inserts_one_delivery_per_eligible_reader_with_its_audience_and_a_message_id(
        app, db, daily, newsletters, enqueued, config):
    readers = add_readers(daily.id, 3)
    add_readers(daily.id, 1, prefix="pending", status=SubscriptionStatus.PENDING, confirmed=False)
    add_readers(daily.id, 1, prefix="left", status=SubscriptionStatus.UNSUBSCRIBED)
    add_readers(daily.id, 1, prefix="unconfirmed", confirmed=False)
    add_readers(newsletters[1].id, 1, prefix="other")
    bounced = add_readers(daily.id, 1, prefix="bounced")
    subscribers.suppress("bounced1@example.com", "hard_bounce")
    edition_id = make_edition(daily.id)

    started = sending.start_edition(edition_id)

    assert (started.started, started.recipients) == (True, 3)
    rows = db.session.scalars(select(Delivery).order_by(Delivery.subscriber_id)).all()
    assert [r.subscriber_id for r in rows] == readers
    assert bounced[0] not in {r.subscriber_id for r in rows}
    assert {r.audience for r in rows} == {Audience.NON_MEMBER}
    assert {r.status for r in rows} == {DeliveryStatus.QUEUED}
    ids = [r.message_id for r in rows]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(rf"<{edition_id}\.{r.subscriber_id}\.[0-9a-f]{{10}}@herald\.test>", r.message_id)
               for r in rows)
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENDING
    assert enqueued == [("herald.send_batch", edition_id)] * config.SEND_CONCURRENCY


def test_starting_twice_fans_out_once(app, db, daily, enqueued):
    add_readers(daily.id, 4)
    edition_id = make_edition(daily.id)
    assert sending.start_edition(edition_id).started
    again = sending.start_edition(edition_id)
    assert (again.started, again.recipients) == (False, 0)
    assert db.session.scalar(select(func.count()).select_from(Delivery)) == 4


def test_batches_split_the_readers_in_runs_that_cover_each_exactly_once(app, db, daily, enqueued, config,
                                                                       monkeypatch):
    monkeypatch.setattr(config, "SEND_BATCH_SIZE", 3)
    readers = add_readers(daily.id, 8)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    batches = db.session.scalars(select(DeliveryBatch).order_by(DeliveryBatch.first_subscriber_id)).all()
    assert [(b.first_subscriber_id, b.last_subscriber_id, b.size) for b in batches] == [
        (readers[0], readers[2], 3), (readers[3], readers[5], 3), (readers[6], readers[7], 2)]
    assert {b.status for b in batches} == {BatchStatus.OPEN}


def test_an_edition_with_no_recipients_is_sent_at_once(app, db, daily, enqueued):
    edition_id = make_edition(daily.id)
    assert sending.start_edition(edition_id).recipients == 0
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENT
    assert enqueued == []


def test_the_tick_starts_frozen_editions_whose_time_has_come(app, db, daily, enqueued):
    now = utcnow()
    due = make_edition(daily.id, run_at=now - dt.timedelta(minutes=1))
    make_edition(daily.id, run_at=now + dt.timedelta(hours=1))
    make_edition(daily.id, run_at=now - dt.timedelta(minutes=2), status=EditionStatus.DRAFT)
    counts = maintenance.tick(now=now)
    assert counts["editions_started"] == 1
    assert ("herald.start_edition", due) in enqueued


# --- Delivering -----------------------------------------------------------------------------------


def test_every_reader_gets_their_own_copy_once_and_each_delivery_is_recorded(app, db, daily, smtp, smtp_server,
                                                                             enqueued, config, monkeypatch):
    monkeypatch.setattr(config, "SEND_BATCH_SIZE", 2)
    readers = add_readers(daily.id, 5, name=lambda i: f"Олена {i}")
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)

    results = drain(edition_id, smtp)

    assert len(results) == 3
    got = smtp_server.wait_for(5)
    by_reader = {m.recipients[0]: parsed(m.data) for m in got}
    assert sorted(by_reader) == sorted(f"reader{i}@example.com" for i in range(1, 6))
    rows = {r.subscriber_id: r for r in db.session.scalars(select(Delivery))}
    for i, sid in enumerate(readers, start=1):
        message = by_reader[f"reader{i}@example.com"]
        assert message["Message-ID"] == rows[sid].message_id
        assert message["To"].addresses[0].display_name == f"Олена {i}"
        assert message.get_body(("plain",)).get_content().startswith(f"Доброго ранку, Олена {i}!")
        assert message["List-Id"] == f"{daily.name} <{daily.list_id}>"
        assert message["Feedback-ID"] == f"{edition_id}:{daily.slug}:digest:herald"
        assert rows[sid].status == DeliveryStatus.SENT and rows[sid].sent_at is not None
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENT
    assert {b.status for b in db.session.scalars(select(DeliveryBatch))} == {BatchStatus.DONE}


def test_the_links_in_a_copy_unsubscribe_that_reader_from_that_newsletter_with_one_click(
        app, db, client, daily, enqueued):
    add_readers(daily.id, 1)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    outbox = mail.MemoryTransport()
    mail.MemoryTransport.clear()
    drain(edition_id, outbox)
    (sent,) = mail.MemoryTransport.outbox
    message = parsed(sent.data)
    https, mailto = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
    assert https.startswith(app.config["HERALD"].BASE_URL + "/unsubscribe/")
    assert mailto.startswith("mailto:unsubscribe@herald.test?subject=unsubscribe%20")
    assert https in message.get_body(("plain",)).get_content()
    answer = client.post(https.removeprefix(app.config["HERALD"].BASE_URL), data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert db.session.scalar(select(Subscription.status)) == SubscriptionStatus.UNSUBSCRIBED


class _Hook:
    """A transport that does something right after the server accepted a given message."""

    def __init__(self, inner: mail.Transport, after: int, action):
        self.inner, self.after, self.action, self.count = inner, after, action, 0

    def send_prepared(self, sender: str, recipient: str, data: bytes) -> None:
        self.inner.send_prepared(sender, recipient, data)
        self.count += 1
        if self.count == self.after:
            self.action()


def test_a_reader_who_unsubscribes_while_the_edition_is_sending_gets_nothing(app, db, client, daily, smtp,
                                                                           smtp_server, enqueued):
    readers = add_readers(daily.id, 120)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    tokens = app.extensions["herald_tokens"]
    leaving = readers[-1]

    def unsubscribe():
        # The reader presses one-click unsubscribe in an earlier edition, from another process's view.
        assert client.post(f"/unsubscribe/{tokens.unsubscribe(leaving, daily.id)}",
                           data={"List-Unsubscribe": "One-Click"}).status_code == 200

    drain(edition_id, _Hook(smtp, 1, unsubscribe))

    got = smtp_server.wait_for(119)
    assert "reader120@example.com" not in {m.recipients[0] for m in got}
    assert len(got) == 119
    assert statuses(edition_id)[leaving] == DeliveryStatus.SKIPPED
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENT


def test_a_reader_suppressed_or_erased_after_the_fan_out_is_skipped(app, db, daily, enqueued):
    readers = add_readers(daily.id, 3)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    subscribers.suppress("reader1@example.com", "complaint")
    db.session.execute(text("DELETE FROM subscribers WHERE id = :id"), {"id": readers[1]})
    db.session.commit()
    mail.MemoryTransport.clear()
    drain(edition_id, mail.MemoryTransport())
    assert [m.recipient for m in mail.MemoryTransport.outbox] == ["reader3@example.com"]
    assert statuses(edition_id) == {readers[0]: DeliveryStatus.SKIPPED, readers[1]: DeliveryStatus.SKIPPED,
                                    readers[2]: DeliveryStatus.SENT}


# --- Failures -------------------------------------------------------------------------------------


def test_a_temporary_failure_is_retried_with_backoff_keeping_its_message_id_then_fails(
        app, db, daily, smtp, smtp_server, enqueued, config, monkeypatch):
    monkeypatch.setattr(config, "SEND_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(config, "SEND_MAX_ATTEMPTS", 3)
    readers = add_readers(daily.id, 3)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    seen: list[str] = []

    def refuse(envelope):
        if "reader2@example.com" in envelope.rcpt_tos:
            seen.append(parsed(envelope.original_content)["Message-ID"])
            return "451 4.3.0 Try again later"
        return None

    smtp_server.handler.reply = refuse
    drain(edition_id, smtp)
    row = db.session.get(Delivery, (edition_id, readers[1]))
    assert (row.status, row.attempts) == (DeliveryStatus.QUEUED, 1)
    assert row.retry_at > utcnow() - dt.timedelta(seconds=1)
    assert "451 4.3.0" in row.last_error
    for _ in range(10):
        time.sleep(0.12)
        drain(edition_id, smtp)
        db.session.expire_all()
        if db.session.get(Delivery, (edition_id, readers[1])).status != DeliveryStatus.QUEUED:
            break
    row = db.session.get(Delivery, (edition_id, readers[1]))
    assert row.status == DeliveryStatus.FAILED
    assert seen == [row.message_id] * 3
    assert statuses(edition_id)[readers[0]] == statuses(edition_id)[readers[2]] == DeliveryStatus.SENT
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENT


def test_backoff_doubles_with_jitter_up_to_the_cap(app, config, monkeypatch):
    monkeypatch.setattr(config, "SEND_RETRY_SECONDS", 10.0)
    monkeypatch.setattr(config, "SEND_RETRY_MAX_SECONDS", 60.0)
    for attempts, ceiling in ((1, 10), (2, 20), (3, 40), (4, 60), (9, 60)):
        delays = [sending.backoff(attempts) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert len(set(delays)) > 100


def test_a_missing_mailbox_bounces_suppresses_the_address_and_is_never_retried(
        app, db, daily, smtp, smtp_server, enqueued):
    readers = add_readers(daily.id, 3)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    smtp_server.handler.reply = lambda e: "550 5.1.1 No such user" if "reader2@example.com" in e.rcpt_tos else None
    drain(edition_id, smtp)

    row = db.session.get(Delivery, (edition_id, readers[1]))
    assert row.status == DeliveryStatus.BOUNCED and "5.1.1" in row.last_error
    suppression = db.session.scalar(select(Suppression))
    assert suppression.email_hash == email_hash("reader2@example.com") and suppression.reason.value == "hard_bounce"
    assert sending.retry_failed(edition_id) == 0
    assert db.session.get(Delivery, (edition_id, readers[1])).status == DeliveryStatus.BOUNCED
    assert len(smtp_server.messages) == 2
    next_edition = make_edition(daily.id)
    assert sending.start_edition(next_edition).recipients == 2


def test_a_policy_refusal_fails_without_suppressing_and_can_be_retried(app, db, daily, smtp, smtp_server, enqueued):
    readers = add_readers(daily.id, 2)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    smtp_server.handler.reply = lambda e: "554 5.7.1 Content rejected" if "reader1@example.com" in e.rcpt_tos else None
    drain(edition_id, smtp)
    assert statuses(edition_id) == {readers[0]: DeliveryStatus.FAILED, readers[1]: DeliveryStatus.SENT}
    assert db.session.scalar(select(func.count()).select_from(Suppression)) == 0
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENT

    smtp_server.handler.reply = None
    enqueued.clear()
    assert sending.retry_failed(edition_id) == 1
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENDING
    assert enqueued and enqueued[0] == ("herald.send_batch", edition_id)
    drain(edition_id, smtp)
    assert statuses(edition_id)[readers[0]] == DeliveryStatus.SENT
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENT
    assert [m.recipients for m in smtp_server.messages] == [["reader2@example.com"], ["reader1@example.com"]]


def test_an_unreachable_server_hands_the_batch_back_without_charging_anyone(app, db, daily, enqueued):
    readers = add_readers(daily.id, 2)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    result = sending.deliver_batch(edition_id, mail.SMTPTransport("127.0.0.1", 1, timeout=2))
    assert result.stopped == "unreachable"
    rows = db.session.scalars(select(Delivery)).all()
    assert {(r.status, r.attempts) for r in rows} == {(DeliveryStatus.QUEUED, 0)}
    batch = db.session.scalar(select(DeliveryBatch))
    assert batch.lease_token is None and batch.available_at > utcnow()
    assert len(readers) == 2


# --- Leases and fencing ---------------------------------------------------------------------------


def test_a_batch_that_lost_its_lease_records_nothing_more_and_stops(app, db, daily, enqueued):
    add_readers(daily.id, 4)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)

    def taken_over():
        # The tick reclaimed the batch and another worker leased it.
        with _db.engine.begin() as conn:
            conn.execute(update(DeliveryBatch).values(lease_token="someone-else"))

    mail.MemoryTransport.clear()
    result = sending.deliver_batch(edition_id, _Hook(mail.MemoryTransport(), 2, taken_over))
    assert result.stopped == "lease lost"
    assert len(mail.MemoryTransport.outbox) == 2
    # The second copy went out but could not be recorded: its new holder sends it again, same Message-ID.
    assert sorted(statuses(edition_id).values()) == [DeliveryStatus.QUEUED] * 3 + [DeliveryStatus.SENT]
    assert db.session.scalar(select(DeliveryBatch.lease_token)) == "someone-else"


def test_an_expired_lease_is_reclaimed_by_the_tick_which_reissues_the_lost_tasks(app, db, daily, enqueued, config):
    add_readers(daily.id, 3)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    lease = sending.claim_batch(edition_id)  # a worker that then died
    assert lease is not None and sending.claim_batch(edition_id) is None
    enqueued.clear()

    soon = utcnow() + dt.timedelta(seconds=1)
    assert sending.reclaim_expired_leases(soon) == 0
    assert sending.revive_stalled_sends(soon) == []

    later = utcnow() + dt.timedelta(seconds=config.SEND_LEASE_SECONDS + 1)
    counts = maintenance.tick(now=later)
    assert (counts["leases_reclaimed"], counts["sends_revived"]) == (1, 1)
    assert enqueued.count(("herald.send_batch", edition_id)) == config.SEND_CONCURRENCY
    assert db.session.scalar(select(DeliveryBatch.lease_token)) is None


def test_the_tick_finishes_an_edition_whose_last_worker_died_after_its_last_batch(app, db, daily, enqueued):
    add_readers(daily.id, 1)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    db.session.execute(update(DeliveryBatch).values(status=BatchStatus.DONE))
    db.session.commit()
    assert maintenance.tick()["editions_sent"] == 1
    assert db.session.get(Edition, edition_id).status == EditionStatus.SENT


# --- Control --------------------------------------------------------------------------------------


def test_pause_stops_claims_resume_goes_on_and_progress_is_readable_throughout(app, db, daily, enqueued, config,
                                                                              monkeypatch):
    monkeypatch.setattr(config, "SEND_BATCH_SIZE", 2)
    add_readers(daily.id, 4)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    mail.MemoryTransport.clear()
    transport = mail.MemoryTransport()
    assert sending.deliver_batch(edition_id, transport).claimed
    assert sending.pause(edition_id)
    assert not sending.pause(edition_id)
    assert not sending.deliver_batch(edition_id, transport).claimed
    p = sending.progress(edition_id)
    assert (p.paused, p.total, p.queued, p.counts[DeliveryStatus.SENT]) == (True, 4, 2, 2)
    enqueued.clear()
    assert sending.resume(edition_id)
    assert enqueued == [("herald.send_batch", edition_id)] * config.SEND_CONCURRENCY
    drain(edition_id, transport)
    p = sending.progress(edition_id)
    assert (p.status, p.paused, p.queued, p.counts[DeliveryStatus.SENT]) == (EditionStatus.SENT, False, 0, 4)


def test_a_batch_running_when_paused_stops_within_a_chunk(app, db, daily, enqueued):
    add_readers(daily.id, 200)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    mail.MemoryTransport.clear()
    result = sending.deliver_batch(edition_id, _Hook(mail.MemoryTransport(), 1, lambda: _pause_elsewhere(edition_id)))
    assert result.stopped == "paused"
    assert len(mail.MemoryTransport.outbox) == sending.CHUNK
    batch = db.session.scalar(select(DeliveryBatch))
    assert batch.status == BatchStatus.OPEN and batch.lease_token is None


def _pause_elsewhere(edition_id: int) -> None:
    with _db.engine.begin() as conn:
        conn.execute(text("UPDATE edition_sends SET paused_at = now() WHERE edition_id = :e"), {"e": edition_id})


def test_cancel_stops_what_has_not_gone_and_keeps_what_has(app, db, daily, enqueued, config, monkeypatch):
    monkeypatch.setattr(config, "SEND_BATCH_SIZE", 2)
    add_readers(daily.id, 5)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    mail.MemoryTransport.clear()
    sending.deliver_batch(edition_id, mail.MemoryTransport())
    assert sending.cancel(edition_id) == 3
    assert not sending.deliver_batch(edition_id, mail.MemoryTransport()).claimed
    edition = db.session.get(Edition, edition_id)
    assert edition.status == EditionStatus.CANCELLED and "3 not sent" in edition.note
    p = sending.progress(edition_id)
    assert (p.counts[DeliveryStatus.SENT], p.counts[DeliveryStatus.CANCELLED]) == (2, 3)
    with pytest.raises(sending.InvalidInput):
        sending.cancel(edition_id)


def test_a_test_copy_goes_to_one_address_now_marked_as_a_test_and_records_nothing(app, db, daily, enqueued):
    (reader,) = add_readers(daily.id, 1, name=lambda i: "Тарас")
    edition_id = make_edition(daily.id)
    mail.MemoryTransport.clear()
    message_id = sending.send_test(edition_id, "reader1@example.com", transport=mail.MemoryTransport())
    sending.send_test(edition_id, "editor@newsroom.example", Audience.MEMBER, transport=mail.MemoryTransport())
    first, second = (parsed(m.data) for m in mail.MemoryTransport.outbox)
    assert first["Message-ID"] == message_id and first["Subject"].startswith("[Test] ")
    assert first.get_body(("plain",)).get_content().startswith("Доброго ранку, Тарас!")
    assert "/unsubscribe/" in first["List-Unsubscribe"]
    assert second["To"].addresses[0].addr_spec == "editor@newsroom.example"
    assert "/subscribe" in second.get_body(("plain",)).get_content()
    assert db.session.scalar(select(func.count()).select_from(Delivery)) == 0
    assert db.session.get(Edition, edition_id).status == EditionStatus.FROZEN and reader


def test_edition_messages_are_signed_when_a_dkim_key_is_configured(app, db, daily, enqueued, config, monkeypatch,
                                                                  tmp_path):
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "dkim.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    monkeypatch.setattr(config, "DKIM_KEY_FILE", str(path))
    monkeypatch.setattr(config, "DKIM_SELECTOR", "s2026")
    add_readers(daily.id, 2, name=lambda i: "Олена Коваль")
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    mail.MemoryTransport.clear()
    drain(edition_id, mail.MemoryTransport())
    record = sending.dkim_signer("newsletter@herald.test").dns_record().encode()
    for sent in mail.MemoryTransport.outbox:
        assert sent.data.startswith(b"DKIM-Signature: ")
        assert dkim.verify(sent.data, dnsfunc=lambda name, timeout=5: record)
        assert parsed(sent.data)["To"].addresses[0].display_name == "Олена Коваль"


# --- The global rate ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "database"])
def test_the_send_rate_is_shared_by_every_worker(app, db, backend):
    import redis

    rate = 40.0
    if backend == "redis":
        client = redis.Redis.from_url(app.config["HERALD"].REDIS_URL)
        client.delete(ratelimit.SEND_BUCKET)
        workers = [ratelimit.RedisBucket(client, rate), ratelimit.RedisBucket(client, rate)]
    else:
        workers = [ratelimit.DatabaseBucket(rate), ratelimit.DatabaseBucket(rate)]
    granted, began = 0, time.monotonic()
    while time.monotonic() - began < 1.0:
        for bucket in workers:  # two workers asking in turn, as fast as they can
            grant = bucket.take(10)
            granted += grant.granted
            if not grant.granted:
                assert 0 < grant.wait <= 1 / rate + 0.01
                time.sleep(grant.wait / 2)
    # One second at 40/s, plus the bucket's initial tenth of a second.
    assert rate * 0.8 <= granted <= rate * 1.1 + ratelimit.burst_for(rate)


def test_a_rate_limited_batch_waits_for_tokens_and_keeps_its_lease(app, db, daily, enqueued, config, monkeypatch):
    monkeypatch.setattr(config, "SEND_RATE", 10.0)
    monkeypatch.setattr(config, "REDIS_URL", "")
    # The batch waits on the rate for longer than its lease: only renewing keeps the batch its own.
    monkeypatch.setattr(config, "SEND_LEASE_SECONDS", 0.6)
    add_readers(daily.id, 12)
    edition_id = make_edition(daily.id)
    sending.start_edition(edition_id)
    mail.MemoryTransport.clear()
    held: list[bool] = []

    def lease_still_held():
        # What another worker would see a second in: the batch is not free to take.
        with _db.engine.connect() as conn:
            held.append(conn.execute(select(DeliveryBatch.available_at)).scalar_one() > utcnow())

    began = time.monotonic()
    result = sending.deliver_batch(edition_id, _Hook(mail.MemoryTransport(), 11, lease_still_held))
    elapsed = time.monotonic() - began
    assert (result.stopped, result.counts) == ("", {"sent": 12})
    assert len(mail.MemoryTransport.outbox) == 12
    # 1 token at once, then 10 a second: 11 more take about 1.1 s, almost twice the lease.
    assert 0.9 <= elapsed < 3.0
    assert held == [True]
    batch = db.session.scalar(select(DeliveryBatch))
    assert (batch.claims, batch.status) == (1, BatchStatus.DONE)


def test_without_a_rate_the_bucket_never_waits():
    assert ratelimit.send_bucket(0, "redis://unused").take(500) == ratelimit.Grant(500, 0.0)


def test_the_sending_commands_start_watch_pause_resume_cancel_and_retry(app, db, daily, enqueued):
    add_readers(daily.id, 3)
    edition_id = make_edition(daily.id)
    runner = app.test_cli_runner()
    out = runner.invoke(args=["sending", "send", str(edition_id)])
    assert out.exit_code == 0 and "3 deliveries queued" in out.output
    assert "not frozen" in runner.invoke(args=["sending", "send", str(edition_id)]).output
    assert "paused" in runner.invoke(args=["sending", "pause", str(edition_id)]).output
    assert "queued 3" in runner.invoke(args=["sending", "status", str(edition_id)]).output
    assert "resumed" in runner.invoke(args=["sending", "resume", str(edition_id)]).output
    mail.MemoryTransport.clear()
    sending.deliver_batch(edition_id, mail.MemoryTransport())
    watched = runner.invoke(args=["sending", "watch", str(edition_id), "--interval", "0.1"])
    assert watched.exit_code == 0 and "sent 3" in watched.output
    assert "0 failed deliveries queued again" in runner.invoke(args=["sending", "retry-failed", str(edition_id)]).output
    test = runner.invoke(args=["sending", "test", str(edition_id), "editor@newsroom.example"])
    assert test.exit_code == 0 and "sent <" in test.output
    other = make_edition(daily.id)
    cancelled = runner.invoke(args=["sending", "cancel", str(other), "--yes"])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    assert runner.invoke(args=["sending", "dkim-record"]).exit_code != 0
