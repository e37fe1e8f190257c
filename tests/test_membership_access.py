"""Who is a member: access by Stripe status, the newest fetch wins, fan-out picks the audience, reconciliation."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from newsletter import jobs, sending
from newsletter.billing import checkout, memberships
from newsletter.billing.memberships import Fetched
from newsletter.extensions import db
from newsletter.models import Audience, Delivery, MailJob, Membership, MembershipStatus, utcnow
from newsletter.subscribers import Context
from tests.billing_support import add_reader, add_tier, fake_delete, fake_get, pay


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    sent: list[tuple] = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args, **options: sent.append((name, *args)) or True)
    return sent


def _subscription(sub_id: str = "sub_access_0001", status: str = "active", period_end: int = 1_900_000_000,
                  subscriber_id: int | None = None, **extra) -> dict:
    return {
        "id": sub_id, "object": "subscription", "status": status, "customer": "cus_access_0001",
        "cancel_at_period_end": False, "cancel_at": None, "ended_at": None, "currency": "eur",
        "metadata": {"subscriber_id": str(subscriber_id)} if subscriber_id else {},
        "items": {"data": [{"current_period_end": period_end, "price": {
            "lookup_key": "supporter_monthly", "unit_amount": 500, "currency": "eur",
            "recurring": {"interval": "month"}}}]},
        **extra,
    }


def _apply(reader_id: int, fetched_at: dt.datetime, **sub) -> Membership:
    membership = memberships.apply_subscription(Fetched(sub.get("sub_id", "sub_access_0001"), _subscription(
        subscriber_id=reader_id, **sub), fetched_at), reader_id, notify=False)
    db.session.commit()
    return membership


ACCESS = {"trialing": True, "active": True, "past_due": True, "unpaid": False, "canceled": False,
          "incomplete": False, "incomplete_expired": False, "paused": False}


@pytest.mark.parametrize(("status", "access"), sorted(ACCESS.items()))
def test_access_follows_stripe_s_status_past_due_being_a_grace_period(app, newsletters, status, access):
    reader = add_reader()
    _apply(reader.id, utcnow(), status=status)
    assert memberships.has_access(reader.id) is access
    assert list(db.session.scalars(memberships.member_subscriber_ids())) == ([reader.id] if access else [])


def test_every_stripe_status_is_in_the_access_table():
    assert set(ACCESS) == {s.value for s in MembershipStatus}


def test_an_older_fetch_landing_after_a_newer_one_changes_nothing(app, newsletters):
    reader = add_reader()
    newer, older = utcnow(), utcnow() - dt.timedelta(seconds=2)
    _apply(reader.id, newer, status="canceled")
    membership = _apply(reader.id, older, status="active", period_end=2_000_000_000)
    assert (membership.status, membership.synced_at) == (MembershipStatus.CANCELED, newer)
    assert membership.paid_through == dt.datetime.fromtimestamp(1_900_000_000, dt.UTC)


@pytest.mark.parametrize("existing", [False, True], ids=["new row", "existing row"])
def test_two_workers_racing_on_one_subscription_make_one_row_and_the_newest_fetch_wins(app, newsletters, existing):
    import threading

    reader_id = add_reader().id  # read here: an ORM object must not lazy-load from the threads
    for n in range(20):
        sub_id, newer = f"sub_race_{n:04d}", utcnow()
        older = newer - dt.timedelta(milliseconds=5)
        if existing:
            # INSERT ... ON CONFLICT only makes a first insert wait; on a row that exists, the row lock does.
            _apply(reader_id, older - dt.timedelta(seconds=1), sub_id=sub_id, status="incomplete")
        start, errors = threading.Barrier(2), []

        def worker(fetched_at: dt.datetime, status: str, sub_id: str = sub_id, start=start, errors=errors) -> None:
            with app.app_context():
                try:
                    start.wait()
                    memberships.apply_subscription(
                        Fetched(sub_id, _subscription(sub_id, status=status, subscriber_id=reader_id), fetched_at),
                        reader_id, notify=False)
                    db.session.commit()
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                finally:
                    db.session.remove()

        threads = [threading.Thread(target=worker, args=(newer, "canceled")),
                   threading.Thread(target=worker, args=(older, "active"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        rows = db.session.scalars(select(Membership).where(Membership.stripe_subscription_id == sub_id)).all()
        assert [(m.status, m.synced_at) for m in rows] == [(MembershipStatus.CANCELED, newer)]


def test_a_member_with_two_memberships_counts_once(app, newsletters):
    reader = add_reader()
    _apply(reader.id, utcnow(), sub_id="sub_access_0001")
    _apply(reader.id, utcnow(), sub_id="sub_access_0002")
    assert list(db.session.scalars(memberships.member_subscriber_ids())) == [reader.id]


def test_fan_out_gives_members_the_member_rendering_and_everyone_else_the_other(app, newsletters, enqueued):
    from tests.test_sending import make_edition

    member, reader, lapsed = add_reader("m@example.org"), add_reader("r@example.org"), add_reader("l@example.org")
    _apply(member.id, utcnow(), sub_id="sub_member", status="past_due")
    _apply(lapsed.id, utcnow(), sub_id="sub_lapsed", status="canceled")
    edition_id = make_edition(newsletters[0].id)
    assert sending.start_edition(edition_id).recipients == 3
    audiences = dict(db.session.execute(select(Delivery.subscriber_id, Delivery.audience)).all())
    assert audiences == {member.id: Audience.MEMBER, reader.id: Audience.NON_MEMBER, lapsed.id: Audience.NON_MEMBER}


def test_sync_stripe_mirrors_what_webhooks_missed_marks_missing_ones_and_mails_nobody(app, fake_stripe, newsletters,
                                                                                     enqueued):
    add_tier()
    reader = add_reader()
    start = checkout.start_membership(reader.email, "", "supporter:month", False, "s" * 20, Context())
    assert pay(start.url).status_code == 303  # no webhook reaches Herald
    [sub] = fake_get(fake_stripe, "/v1/subscriptions")["data"]
    _apply(reader.id, utcnow() - dt.timedelta(days=1), sub_id="sub_deleted_at_stripe")
    result = app.test_cli_runner().invoke(args=["sync-stripe"])
    assert result.exit_code == 0, result.output
    assert f"{sub['id']}\t" in result.output and "sub_deleted_at_stripe\tmissing at Stripe" in result.output
    db.session.expire_all()
    rows = {m.stripe_subscription_id: m for m in db.session.scalars(select(Membership))}
    assert rows[sub["id"]].status == MembershipStatus.ACTIVE and rows[sub["id"]].subscriber_id == reader.id
    assert rows["sub_deleted_at_stripe"].status == MembershipStatus.CANCELED
    assert rows["sub_deleted_at_stripe"].missing_at is not None
    assert db.session.scalars(select(MailJob)).all() == []
    fake_delete(fake_stripe, f"/v1/subscriptions/{sub['id']}")
    again = app.test_cli_runner().invoke(args=["sync-stripe"])
    assert '"status": ["active", "canceled"]' in again.output


def test_on_sqlite_the_write_lock_serializes_upserts_and_a_shuffled_replay_still_ends_in_stripe_s_state(
    app, tmp_path, fake_stripe
):
    """The embedded default (`make run`) has no row locks: the INSERT takes SQLite's write lock instead."""
    import random

    from flask_migrate import upgrade

    from newsletter import create_app, demo
    from newsletter.billing import events
    from newsletter.config import Config
    from tests.billing_support import stripe_events
    from tests.conftest import herald_env
    from tests.test_webhooks import _membership_lifecycle

    sqlite_app = create_app(Config.from_env(herald_env(DATABASE_URL=f"sqlite:///{tmp_path / 'herald.sqlite3'}",
                                                       MAIL_URL="memory:")))
    # A new app makes its Celery app the default; give it back, or the session's app is collected too early.
    app.extensions["celery"].set_default()
    with sqlite_app.app_context():
        upgrade(revision="heads")
        life = _membership_lifecycle(fake_stripe, demo.load_newsletters())
        captured = stripe_events(fake_stripe)
        deliveries = captured + captured[::2]
        random.Random(7).shuffle(deliveries)
        for event in deliveries:
            events.dispatch(event)
            db.session.commit()
        membership = db.session.scalars(select(Membership)).one()
        assert (membership.status, membership.subscriber_id) == (MembershipStatus.CANCELED, life["subscriber_id"])
        assert sorted(db.session.scalars(select(MailJob.kind))) == [
            "membership_ended", "membership_welcome", "payment_failed"]
        db.session.remove()
        db.engine.dispose()
