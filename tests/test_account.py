"""The reader's account: a single-use, short-lived link signs in by POST; the account shows membership and billing."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest
from sqlalchemy import select, update

from newsletter import jobs, notifications
from newsletter.billing import events
from newsletter.extensions import db
from newsletter.mail import MemoryTransport
from newsletter.models import MailJob, SigninLink, utcnow
from tests.billing_support import add_reader, add_tier, pay, stripe_events
from tests.helpers import link_path
from tests.support import csrf_from


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    sent: list[tuple] = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args, **options: sent.append((name, *args)) or True)
    return sent


def _send_queued() -> None:
    for job_id in db.session.scalars(select(MailJob.id).where(MailJob.status == "pending")).all():
        notifications.deliver_mail_job(job_id)


def _mails_to(address: str) -> list[email.message.EmailMessage]:
    found = [email.message_from_bytes(m.data, policy=email.policy.default) for m in MemoryTransport.outbox]
    return [m for m in found if m["To"].addresses[0].addr_spec == address]


def _ask_for_link(client, address: str):
    page = client.get("/account/sign-in")
    return client.post("/account/sign-in", data={"csrf_token": csrf_from(page.text), "email": address})


def _link(client, address: str) -> str:
    _ask_for_link(client, address)
    _send_queued()
    body = _mails_to(address)[-1].get_body(("plain",)).get_content()
    return link_path(body, "account/sign-in")


def _sign_in(client, address: str):
    path = _link(client, address)
    page = client.get(path)
    return client.post(path, data={"csrf_token": csrf_from(page.text)})


def test_the_form_answers_the_same_for_any_address_and_mails_only_a_known_one(client, newsletters, outbox, enqueued):
    reader = add_reader()
    known = _ask_for_link(client, reader.email.upper())
    unknown = _ask_for_link(client, "stranger@example.org")
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    _send_queued()
    assert [m["To"].addresses[0].addr_spec for m in map(
        lambda m: email.message_from_bytes(m.data, policy=email.policy.default), outbox)] == [reader.email]
    mail = _mails_to(reader.email)[0]
    assert "sign-in link" in mail["Subject"]
    assert reader.email not in mail.get_body(("plain",)).get_content().split("/account/sign-in/", 1)[1]


def test_the_link_shows_a_button_and_only_the_post_signs_in_once(client, newsletters, outbox, enqueued):
    reader = add_reader()
    path = _link(client, reader.email)
    page = client.get(path)
    assert client.get(path).status_code == 200  # a mail scanner's GET uses nothing up
    assert client.get("/account").status_code == 303  # not signed in yet
    signed_in = client.post(path, data={"csrf_token": csrf_from(page.text)})
    assert (signed_in.status_code, signed_in.headers["Location"]) == (303, "/account")
    account = client.get("/account")
    assert account.status_code == 200 and reader.email in account.text and "Daily digest: subscribed" in account.text
    assert "You're not a member yet" in account.text
    again = client.post(path, data={"csrf_token": csrf_from(page.text)})
    assert again.status_code == 410 and "already used" in again.text


def test_an_expired_or_forged_link_does_not_sign_in(client, newsletters, outbox, enqueued):
    reader = add_reader()
    path = _link(client, reader.email)
    db.session.execute(update(SigninLink).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    db.session.commit()
    assert client.get(path).status_code == 410
    assert client.post(path, data={"csrf_token": csrf_from(client.get("/account/sign-in").text)}).status_code == 410
    assert client.get("/account/sign-in/forged-token").status_code == 400
    assert client.get("/account").status_code == 303


def test_a_member_sees_the_membership_and_manage_billing_opens_stripe_s_portal(client, fake_stripe, newsletters,
                                                                                outbox, enqueued):
    add_tier()
    page = client.get("/membership")
    nonce = page.text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
    joined = client.post("/membership/join", data={"csrf_token": csrf_from(page.text), "nonce": nonce,
                                                   "email": "member@example.org", "plan": "supporter:year"})
    assert pay(joined.headers["Location"], email="member@example.org").status_code == 303
    for event in stripe_events(fake_stripe):
        events.dispatch(event)
        db.session.commit()
    _sign_in(client, "member@example.org")
    account = client.get("/account")
    assert "Supporter" in account.text and "50.00 EUR a year" in account.text and "Paid through" in account.text
    billing = client.post("/account/billing", data={"csrf_token": csrf_from(account.text)})
    assert billing.status_code == 303
    assert billing.headers["Location"].startswith(f"{fake_stripe.url}/p/session/bps_")
    portal = fake_stripe.fake.store.get(billing.headers["Location"].rsplit("/", 1)[1], "billing_portal.session")
    assert portal["return_url"].endswith("/account")


def test_billing_needs_a_signed_in_reader_with_a_membership(client, newsletters, outbox, enqueued):
    reader = add_reader()
    page = client.get("/account/sign-in")
    assert client.post("/account/billing", data={"csrf_token": csrf_from(page.text)}).status_code == 303
    _sign_in(client, reader.email)
    account = client.get("/account")
    assert "Manage billing" not in account.text
    refused = client.post("/account/billing", data={"csrf_token": csrf_from(account.text)})
    assert refused.status_code == 409 and "no membership to manage" in refused.text


def test_signing_out_ends_the_session(client, newsletters, outbox, enqueued):
    reader = add_reader()
    _sign_in(client, reader.email)
    account = client.get("/account")
    out = client.post("/account/sign-out", data={"csrf_token": csrf_from(account.text)})
    assert out.status_code == 303
    assert client.get("/account").status_code == 303


def test_the_sign_in_form_is_rate_limited_and_one_inbox_gets_a_few_links_an_hour(client, newsletters, outbox,
                                                                                 enqueued):
    reader = add_reader()
    answers = [_ask_for_link(client, reader.email).status_code for _ in range(6)]
    assert answers == [200] * 5 + [429]
    assert db.session.scalar(select(MailJob.id).where(MailJob.kind == "signin").offset(4)) is not None
    from newsletter.extensions import limiter

    limiter.reset()
    _ask_for_link(client, reader.email)
    assert len(db.session.scalars(select(MailJob).where(MailJob.kind == "signin")).all()) == 5
