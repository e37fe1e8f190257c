"""Signing up: one answer for everyone, consent recorded, bad input refused, abuse limited."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import notifications
from newsletter.extensions import limiter
from newsletter.models import ConsentEvent, MailJob, Subscriber, Subscription, SubscriptionStatus
from newsletter.subscribers import suppress
from tests.helpers import count, signup
from tests.support import csrf_from


def test_signup_page_offers_every_newsletter_unticked(client, newsletters):
    page = client.get("/subscribe")
    assert page.status_code == 200
    for n in newsletters:
        assert f'value="{n.slug}"' in page.text
    assert "checked" not in page.text


def test_a_newsletter_page_offers_just_that_newsletter(client, newsletters):
    page = client.get("/n/war-weekly")
    assert 'value="war-weekly"' in page.text
    assert 'value="daily"' not in page.text
    assert client.get("/n/nope").status_code == 404


def test_signup_records_pending_subscriptions_consent_and_queues_one_confirmation(client, db, newsletters):
    r = signup(client, email=" Olena@Example.COM ", newsletters=("daily", "war-weekly"),
               headers={"User-Agent": "Firefox/140"})
    assert r.status_code == 200
    assert "Check your inbox" in r.text
    subscriber = db.session.query(Subscriber).one()
    assert (subscriber.email, subscriber.name, subscriber.confirmed_at) == ("Olena@example.com", "Олена", None)
    assert {s.status for s in subscriber.subscriptions} == {SubscriptionStatus.PENDING}
    events = db.session.query(ConsentEvent).all()
    assert len(events) == 2
    assert all(e.kind == "signup" and e.ip == "127.0.0.1" and e.source == "/subscribe"
               and e.text_version for e in events)
    job = db.session.query(MailJob).one()
    assert (job.kind, job.params) == ("confirm", {"newsletters": sorted(n.id for n in newsletters)})


def test_the_answer_is_the_same_for_new_pending_subscribed_and_suppressed_addresses(client, db, newsletters):
    new = signup(client, email="new@example.com").text
    pending = signup(client, email="new@example.com").text
    signup(client, email="member@example.com")
    sub = db.session.query(Subscription).join(Subscriber).filter(Subscriber.email_key == "member@example.com").one()
    sub.status = SubscriptionStatus.SUBSCRIBED
    db.session.commit()
    subscribed = signup(client, email="member@example.com").text
    suppress("gone@example.com", "hard_bounce")
    suppressed = signup(client, email="gone@example.com").text

    def body(html):  # the CSRF token differs per session, nothing else may
        return html.split("<main", 1)[1]

    assert body(new) == body(pending) == body(subscribed) == body(suppressed)
    assert db.session.query(Subscriber).filter_by(email_key="gone@example.com").count() == 0


def test_an_existing_readers_name_is_not_overwritten_by_someone_else_signing_them_up(client, db, newsletters):
    signup(client, email="olena@example.com", name="Олена")
    signup(client, email="OLENA@example.com", name="Impostor")
    assert db.session.query(Subscriber).one().name == "Олена"


def test_no_more_than_a_few_confirmation_mails_a_day_to_one_address(client, db, app, newsletters):
    limit = app.config["HERALD"].CONFIRMATION_MAILS_PER_DAY
    for _ in range(limit + 3):
        limiter.reset()
        assert signup(client, email="target@example.com").status_code == 200
    assert count(MailJob) == limit


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "not an address"}, "doesn't look like an email address"),
        ({"email": ""}, "enter your email address"),
        ({"email": "olena@example.com\r\nBcc: victim@example.com"}, "line breaks"),
        ({"name": "Я" * 10_000}, "under 100 characters"),
        ({"name": "Olena\r\nBcc: victim@example.com"}, "line breaks"),
        ({"newsletters": ["no-such-list"]}, "no newsletter called"),
        ({"newsletters": []}, "choose at least one newsletter"),
    ],
)
def test_bad_input_gets_a_readable_400_and_writes_nothing(client, db, newsletters, fields, message):
    r = signup(client, **{k: v for k, v in fields.items() if k in ("email", "name", "newsletters")})
    assert r.status_code == 400
    assert message in r.text.replace("&#39;", "'")
    assert count(Subscriber) == count(Subscription) == count(ConsentEvent) == count(MailJob) == 0


def test_a_missing_or_wrong_csrf_token_is_refused(client, db, newsletters):
    data = {"email": "olena@example.com", "newsletters": ["daily"]}
    assert client.post("/subscribe", data=data).status_code == 400
    client.get("/subscribe")
    r = client.post("/subscribe", data=data | {"csrf_token": "forged"})
    assert r.status_code == 400
    assert "expired or was sent from another site" in r.text
    assert count(Subscriber) == 0


def test_signups_are_rate_limited_per_ip(client, db, newsletters):
    statuses = [signup(client, email=f"reader{i}@example.com").status_code for i in range(8)]
    assert statuses[:5] == [200] * 5
    assert statuses[-1] == 429
    assert count(Subscriber) == 5


def test_the_rate_limit_uses_the_readers_address_behind_a_trusted_proxy(newsletters):
    from werkzeug.middleware.proxy_fix import ProxyFix

    wrapped = ProxyFix(lambda env, start: [env["REMOTE_ADDR"].encode()], x_for=1)
    out = wrapped({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9", "wsgi.url_scheme": "http",
                   "HTTP_HOST": "x", "SERVER_NAME": "x", "SERVER_PORT": "80"}, lambda *a: None)
    assert out == [b"203.0.113.9"]


def test_hypothesis_signup_handler_never_answers_500(app, client, db, newsletters):
    app.config["WTF_CSRF_ENABLED"] = False
    limiter.enabled = False
    text = st.text(alphabet=st.characters(codec="utf-8"), max_size=400)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(email=st.one_of(text, st.emails()), name=text,
           choices=st.lists(st.one_of(st.sampled_from(["daily", "war-weekly", "1", "2"]), text), max_size=4),
           source=text)
    def check(email, name, choices, source):
        r = client.post("/subscribe", data={"email": email, "name": name, "newsletters": choices, "source": source})
        assert r.status_code in (200, 400), r.status_code
        if r.status_code == 400:
            assert 'role="alert"' in r.text

    check()


def test_a_queued_confirmation_goes_out_once(client, db, newsletters, outbox):
    signup(client)
    job = db.session.query(MailJob).one()
    assert notifications.deliver_mail_job(job.id) == "sent"
    assert notifications.deliver_mail_job(job.id) is None
    assert len(outbox) == 1
    page = client.get("/subscribe")
    assert csrf_from(page.text)
