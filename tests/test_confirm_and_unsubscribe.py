"""Double opt-in by POST, preferences by signed link, RFC 8058 one-click unsubscribe."""

import datetime as dt

import pytest
from flask import current_app
from sqlalchemy import select

from newsletter import notifications, subscribers
from newsletter.mail import MemoryTransport
from newsletter.models import ConsentEvent, MailJob, Subscriber, Subscription, SubscriptionStatus
from newsletter.subscribers import recipients_query, suppress
from tests.helpers import link_path, signup
from tests.support import csrf_from


def _deliver_all():
    for job in current_app.extensions["sqlalchemy"].session.scalars(
        select(MailJob).where(MailJob.status == "pending")
    ).all():
        notifications.deliver_mail_job(job.id)


def _last_mail_text() -> str:
    import email
    import email.policy

    msg = email.message_from_bytes(MemoryTransport.outbox[-1].data, policy=email.policy.default)
    return msg.get_body(("plain",)).get_content()


def _confirmed_reader(client, db, newsletters=("daily",)):
    signup(client, newsletters=newsletters)
    _deliver_all()
    path = link_path(_last_mail_text(), "confirm")
    page = client.get(path)
    client.post(path, data={"csrf_token": csrf_from(page.text)})
    _deliver_all()
    return db.session.query(Subscriber).one()


def _recipients(db, newsletter):
    return list(db.session.scalars(recipients_query(newsletter.id)))


def test_the_confirmation_link_shows_a_button_and_changes_nothing_on_get(client, db, newsletters, outbox):
    signup(client)
    _deliver_all()
    text = _last_mail_text()
    assert "every morning" in text  # what they will get and how often
    path = link_path(text, "confirm")
    page = client.get(path)
    assert page.status_code == 200
    assert "Yes, subscribe me" in page.text
    assert db.session.query(Subscription).one().status == SubscriptionStatus.PENDING
    r = client.post(path, data={"csrf_token": csrf_from(page.text)})
    assert r.status_code == 200
    assert "You're subscribed" in r.text
    sub = db.session.query(Subscription).one()
    assert sub.status == SubscriptionStatus.SUBSCRIBED
    assert sub.subscriber.confirmed_at is not None
    confirm_event = db.session.query(ConsentEvent).filter_by(kind="confirm").one()
    assert confirm_event.ip == "127.0.0.1"


def test_confirmation_sends_one_welcome_even_when_posted_twice(client, db, newsletters, outbox):
    signup(client)
    _deliver_all()
    path = link_path(_last_mail_text(), "confirm")
    token = csrf_from(client.get(path).text)
    client.post(path, data={"csrf_token": token})
    client.post(path, data={"csrf_token": token})
    _deliver_all()
    kinds = [j.kind for j in db.session.query(MailJob).order_by(MailJob.id)]
    assert kinds == ["confirm", "welcome"]
    assert "Thank you for confirming" in _last_mail_text()


def test_an_expired_confirmation_link_offers_a_new_one(client, db, app, newsletters, outbox):
    signup(client)
    _deliver_all()
    path = link_path(_last_mail_text(), "confirm")
    config = app.config["HERALD"]
    hours, config.CONFIRM_TOKEN_HOURS = config.CONFIRM_TOKEN_HOURS, 0
    try:
        page = client.get(path)
        assert page.status_code == 410
        assert "Send me a new link" in page.text
        r = client.post(path + "/resend", data={"csrf_token": csrf_from(page.text)})
        assert r.status_code == 200
    finally:
        config.CONFIRM_TOKEN_HOURS = hours
    _deliver_all()
    assert len(outbox) == 2
    fresh = link_path(_last_mail_text(), "confirm")
    r = client.post(fresh, data={"csrf_token": csrf_from(client.get(fresh).text)})
    assert db.session.query(Subscription).one().status == SubscriptionStatus.SUBSCRIBED


@pytest.mark.parametrize("path", ["/confirm/garbage", "/confirm/WzEsWzFdXQ.awcrug.bF3-Cwn"])
def test_forged_confirmation_links_get_a_400(client, db, newsletters, path):
    signup(client)
    page = client.get(path)
    assert page.status_code == 400
    assert client.post(path, data={"csrf_token": csrf_from(client.get("/subscribe").text)}).status_code == 400
    assert db.session.query(Subscription).one().status == SubscriptionStatus.PENDING


def test_a_pending_reader_is_not_a_recipient_until_confirmed(client, db, newsletters, outbox):
    signup(client)
    assert _recipients(db, newsletters[0]) == []
    _deliver_all()
    path = link_path(_last_mail_text(), "confirm")
    client.post(path, data={"csrf_token": csrf_from(client.get(path).text)})
    assert _recipients(db, newsletters[0]) == [db.session.query(Subscriber).one().id]


def test_one_click_unsubscribe_urlencoded_needs_no_cookie_and_does_not_redirect(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db)
    assert _recipients(db, newsletters[0]) == [subscriber.id]
    token = app.extensions["herald_tokens"].unsubscribe(subscriber.id, newsletters[0].id)
    fresh = app.test_client()  # no cookies at all
    r = fresh.post(f"/unsubscribe/{token}", data="List-Unsubscribe=One-Click",
                   content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200
    assert "Location" not in r.headers
    assert "Set-Cookie" not in r.headers
    assert _recipients(db, newsletters[0]) == []
    withdrawal = db.session.query(ConsentEvent).filter_by(kind="withdraw").one()
    assert withdrawal.channel == "one_click"
    again = fresh.post(f"/unsubscribe/{token}", data="List-Unsubscribe=One-Click",
                       content_type="application/x-www-form-urlencoded")
    assert again.status_code == 200
    assert db.session.query(ConsentEvent).filter_by(kind="withdraw").count() == 1


def test_one_click_unsubscribe_accepts_multipart(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db)
    token = app.extensions["herald_tokens"].unsubscribe(subscriber.id, newsletters[0].id)
    boundary = "----gmail"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
            f"One-Click\r\n--{boundary}--\r\n")
    r = app.test_client().post(f"/unsubscribe/{token}", data=body,
                               content_type=f"multipart/form-data; boundary={boundary}")
    assert r.status_code == 200
    assert "Location" not in r.headers
    assert _recipients(db, newsletters[0]) == []


def test_unsubscribe_is_never_rate_limited(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db)
    token = app.extensions["herald_tokens"].unsubscribe(subscriber.id, newsletters[0].id)
    fresh = app.test_client()
    statuses = {fresh.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code
                for _ in range(60)}
    assert statuses == {200}


@pytest.mark.parametrize("mangle", [lambda t: t[:-3], lambda t: t[:-1] + ("x" if t[-1] != "x" else "y"),
                                    lambda t: "WzEsMl0" + t[t.index("."):], lambda t: t.split(".")[0]])
def test_forged_altered_or_truncated_unsubscribe_tokens_get_a_4xx_and_change_nothing(
    app, client, db, newsletters, outbox, mangle
):
    subscriber = _confirmed_reader(client, db, newsletters=("daily", "war-weekly"))
    token = mangle(app.extensions["herald_tokens"].unsubscribe(subscriber.id, newsletters[0].id))
    r = app.test_client().post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert 400 <= r.status_code < 500
    assert {s.status for s in db.session.query(Subscription)} == {SubscriptionStatus.SUBSCRIBED}
    assert db.session.query(ConsentEvent).filter_by(kind="withdraw").count() == 0


def test_get_on_the_unsubscribe_url_shows_a_button_and_preferences(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db)
    token = app.extensions["herald_tokens"].unsubscribe(subscriber.id, newsletters[0].id)
    page = app.test_client().get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert "Unsubscribe from Daily digest?" in page.text
    assert "/preferences/" in page.text
    assert _recipients(db, newsletters[0]) == [subscriber.id]
    r = app.test_client().post(f"/unsubscribe/{token}", data={"confirm": "yes"})
    assert r.status_code == 200
    assert _recipients(db, newsletters[0]) == []
    assert db.session.query(ConsentEvent).filter_by(kind="withdraw").one().channel == "unsubscribe_page"


def test_a_post_without_the_one_click_body_or_the_button_is_refused(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db)
    token = app.extensions["herald_tokens"].unsubscribe(subscriber.id, newsletters[0].id)
    assert app.test_client().post(f"/unsubscribe/{token}").status_code == 400
    assert _recipients(db, newsletters[0]) == [subscriber.id]


def test_preferences_change_name_and_newsletters(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db)
    path = link_path(_last_mail_text(), "preferences")
    page = client.get(path)
    assert page.status_code == 200
    r = client.post(path, data={"csrf_token": csrf_from(page.text), "name": "Олена Коваль",
                                "newsletters": ["war-weekly"]})
    assert r.status_code == 200
    db.session.refresh(subscriber)
    assert subscriber.name == "Олена Коваль"
    statuses = {s.newsletter.slug: s.status for s in subscriber.subscriptions}
    # A confirmed reader adding a list they never left joins at once; the one unticked is left.
    assert statuses == {"daily": SubscriptionStatus.UNSUBSCRIBED, "war-weekly": SubscriptionStatus.SUBSCRIBED}
    assert _recipients(db, newsletters[1]) == [subscriber.id]


def test_preferences_refuse_bad_input_and_keep_everything(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db)
    path = link_path(_last_mail_text(), "preferences")
    csrf = csrf_from(client.get(path).text)
    r = client.post(path, data={"csrf_token": csrf, "name": "x\r\nBcc: y@example.com", "newsletters": ["daily"]})
    assert r.status_code == 400
    r = client.post(path, data={"csrf_token": csrf, "name": "ok", "newsletters": ["nope"]})
    assert r.status_code == 400
    assert client.post(path, data={"name": "ok", "newsletters": []}).status_code == 400  # no CSRF token
    db.session.refresh(subscriber)
    assert subscriber.name == "Олена"
    assert _recipients(db, newsletters[0]) == [subscriber.id]


def test_unsubscribe_from_everything(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db, newsletters=("daily", "war-weekly"))
    path = link_path(_last_mail_text(), "preferences")
    r = client.post(path + "/unsubscribe-all", data={"csrf_token": csrf_from(client.get(path).text)})
    assert r.status_code == 200
    assert _recipients(db, newsletters[0]) == _recipients(db, newsletters[1]) == []
    assert subscriber.id


def test_subscribing_again_after_unsubscribing_needs_a_fresh_confirmation(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db)
    token = app.extensions["herald_tokens"].unsubscribe(subscriber.id, newsletters[0].id)
    app.test_client().post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    signup(client)
    assert _recipients(db, newsletters[0]) == []
    assert db.session.query(Subscription).one().status == SubscriptionStatus.PENDING
    # Ticking it again on the preferences page also asks for confirmation.
    path = link_path(_last_mail_text(), "preferences")
    client.post(path, data={"csrf_token": csrf_from(client.get(path).text), "name": "", "newsletters": ["daily"]})
    assert _recipients(db, newsletters[0]) == []


def test_an_old_confirmation_link_cannot_undo_a_later_unsubscribe(app, client, db, newsletters, outbox):
    signup(client)
    _deliver_all()
    path = link_path(_last_mail_text(), "confirm")
    csrf = csrf_from(client.get(path).text)
    client.post(path, data={"csrf_token": csrf})
    subscriber = db.session.query(Subscriber).one()
    subscribers.unsubscribe(app.extensions["herald_tokens"].unsubscribe(subscriber.id, newsletters[0].id),
                            "one_click", subscribers.Context())
    client.post(path, data={"csrf_token": csrf})
    assert _recipients(db, newsletters[0]) == []


def test_a_suppressed_address_never_gets_mail(app, client, db, newsletters, outbox):
    subscriber = _confirmed_reader(client, db)
    MemoryTransport.clear()
    suppress(subscriber.email_key, "complaint")
    assert _recipients(db, newsletters[0]) == []
    notifications.queue_mail("welcome", subscriber.id, {"newsletters": [newsletters[0].id]})
    db.session.commit()
    _deliver_all()
    assert outbox == []
    assert db.session.query(MailJob).order_by(MailJob.id.desc()).first().status == "dropped"


def test_unsubscribe_links_do_not_expire(app, client, db, newsletters, outbox, monkeypatch):
    subscriber = _confirmed_reader(client, db)
    token = app.extensions["herald_tokens"].unsubscribe(subscriber.id, newsletters[0].id)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)
    import itsdangerous.timed

    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: later.timestamp())
    r = app.test_client().post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200
    assert _recipients(db, newsletters[0]) == []
