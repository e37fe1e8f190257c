"""Joining and giving: the membership page, Checkout Sessions, and bad input refused before Stripe is asked."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from newsletter import jobs
from newsletter.billing import memberships
from newsletter.extensions import db
from newsletter.models import Donation, DonationStatus, MailJob, Membership, Subscriber, SubscriptionStatus
from tests.billing_support import add_reader, add_tier, api_calls, fake_post, pay, stripe_events
from tests.helpers import count
from tests.support import csrf_from


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    sent: list[tuple] = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args, **options: sent.append((name, *args)) or True)
    return sent


def _form(client, **fields) -> dict:
    page = client.get("/membership")
    nonce = page.text.split('name="nonce" value="', 1)[1].split('"', 1)[0]
    return {"csrf_token": csrf_from(page.text), "nonce": nonce, **fields}


def _session(fake, response) -> dict:
    """The Checkout Session a 303 points at, as the fake stores it (with what Stripe copies onward)."""
    assert response.status_code == 303, response.text
    session_id = response.headers["Location"].rsplit("/", 1)[1]
    return fake.fake.store.get(session_id, "checkout.session")


def _replay(fake) -> None:
    """Hand every event the fake emitted to the worker's dispatch, oldest first."""
    from newsletter.billing import events

    for event in stripe_events(fake):
        events.dispatch(event)
        db.session.commit()


def test_the_membership_page_shows_the_tiers_what_they_fund_and_an_unticked_digest_box(client, fake_stripe,
                                                                                        newsletters):
    add_tier()
    page = client.get("/membership")
    assert page.status_code == 200
    assert "Supporter, monthly" in page.text and "5.00 EUR a month" in page.text and "50.00 EUR a year" in page.text
    assert "Funds a reporter&#39;s day" in page.text
    assert 'id="join-digest" name="digest" value="yes">' in page.text  # not checked
    assert "from 2.00 to 10000.00" in page.text


def test_joining_sends_the_reader_to_checkout_with_their_subscriber_id_and_grants_nothing(
    client, fake_stripe, newsletters, enqueued
):
    add_tier()
    response = client.post("/membership/join", data=_form(client, email="New.Reader@Example.ORG ",
                                                          plan="supporter:month", name="Марія"))
    session = _session(fake_stripe, response)
    subscriber = db.session.scalars(select(Subscriber)).one()
    assert subscriber.email == "New.Reader@example.org" and subscriber.name == "Марія"
    assert session["mode"] == "subscription" and session["client_reference_id"] == str(subscriber.id)
    assert session["_subscription_data"]["metadata"]["subscriber_id"] == str(subscriber.id)
    assert session["customer_email"] == "New.Reader@example.org"
    price = fake_stripe.fake.store.get(session["_line_items"][0]["price"], "price")
    assert price["lookup_key"] == "supporter_monthly"
    assert session["success_url"].endswith("/membership/thanks?kind=membership&session_id={CHECKOUT_SESSION_ID}")
    thanks = client.get("/membership/thanks?kind=membership&session_id=" + session["id"])
    assert thanks.status_code == 200 and "as soon as Stripe confirms" in thanks.text
    assert count(Membership) == 0 and not memberships.has_access(subscriber.id)
    assert enqueued == []  # no digest box, no mail


def test_a_double_submitted_form_opens_one_checkout_session(client, fake_stripe, newsletters, enqueued):
    add_tier()
    form = _form(client, email="reader@example.org", plan="supporter:year")
    first = client.post("/membership/join", data=form)
    second = client.post("/membership/join", data=form)
    assert first.headers["Location"] == second.headers["Location"]
    assert len(fake_stripe.fake.store.all("checkout.session")) == 1
    other = client.post("/membership/join", data={**form, "plan": "supporter:month"})
    assert other.headers["Location"] != first.headers["Location"]


def test_the_digest_box_starts_the_usual_confirmation_for_an_unconfirmed_address(client, fake_stripe, newsletters,
                                                                                  enqueued):
    add_tier()
    client.post("/membership/join", data=_form(client, email="new@example.org", plan="supporter:month", digest="yes"))
    subscriber = db.session.scalars(select(Subscriber)).one()
    assert [s.status for s in subscriber.subscriptions] == [SubscriptionStatus.PENDING]
    job = db.session.scalars(select(MailJob)).one()
    assert job.kind == "confirm" and enqueued == [(jobs.SEND_MAIL, job.id)]


def test_a_confirmed_reader_ticking_the_digest_box_gets_it_at_once_without_a_confirmation(client, fake_stripe,
                                                                                          newsletters, enqueued):
    add_tier()
    reader = add_reader(newsletters=("war-weekly",))
    client.post("/membership/join", data=_form(client, email=reader.email, plan="supporter:month", digest="yes"))
    db.session.expire_all()
    statuses = {s.newsletter.slug: s.status for s in db.session.get(Subscriber, reader.id).subscriptions}
    assert statuses == {"war-weekly": SubscriptionStatus.SUBSCRIBED, "daily": SubscriptionStatus.SUBSCRIBED}
    assert count(MailJob) == 0


def test_a_donation_goes_to_checkout_as_a_gift_and_a_paid_one_is_recorded_without_membership(
    client, fake_stripe, newsletters, enqueued
):
    response = client.post("/membership/donate", data=_form(client, email="giver@example.org", amount="25,50"))
    session = _session(fake_stripe, response)
    giver = db.session.scalars(select(Subscriber)).one()
    assert (session["mode"], session["submit_type"], session["amount_total"]) == ("payment", "donate", 2550)
    assert session["_payment_intent_data"]["metadata"] == {"subscriber_id": str(giver.id), "kind": "donation"}
    assert pay(session["url"], email="giver@example.org").status_code == 303
    _replay(fake_stripe)
    donation = db.session.scalars(select(Donation)).one()
    assert (donation.subscriber_id, donation.amount, donation.status) == (giver.id, 2550, DonationStatus.PAID)
    assert list(db.session.scalars(memberships.member_subscriber_ids())) == []
    fake_post(fake_stripe, "/v1/refunds", payment_intent=donation.payment_intent_id, amount="550")
    _replay(fake_stripe)
    db.session.refresh(donation)
    assert (donation.amount_refunded, donation.status) == (550, DonationStatus.PARTIALLY_REFUNDED)


@pytest.mark.parametrize(
    ("path", "fields", "message"),
    [
        ("/membership/join", {"plan": "platinum:month"}, "Please choose one of the memberships shown."),
        ("/membership/join", {"plan": "supporter:week"}, "Please choose one of the memberships shown."),
        ("/membership/join", {"plan": "supporter:month", "email": "not an address"}, "look like an email address"),
        ("/membership/join", {"plan": "supporter:month", "nonce": "x"}, "This form has expired"),
        ("/membership/donate", {"amount": "1.99"}, "The smallest donation we can take is 2.00 EUR."),
        ("/membership/donate", {"amount": "10000.01"}, "The largest donation we can take online is 10,000.00 EUR."),
        ("/membership/donate", {"amount": "twenty"}, "Please enter an amount as a number"),
        ("/membership/donate", {"amount": "1e3"}, "Please enter an amount as a number"),
        ("/membership/donate", {"amount": "25", "email": "@example.org"}, "look like an email address"),
    ],
    ids=["unknown tier", "unknown interval", "bad address", "bad nonce", "below minimum", "above maximum",
         "not a number", "exponent", "bad donor address"],
)
def test_bad_input_gets_a_readable_400_and_stripe_is_never_asked(client, fake_stripe, newsletters, enqueued, path,
                                                                   fields, message):
    add_tier()
    fake_stripe.counter.reset()
    data = _form(client, **{"email": "reader@example.org", **fields})
    response = client.post(path, data=data)
    assert response.status_code == 400
    assert message in response.text.replace("&#39;", "'")
    assert 'role="alert"' in response.text
    assert api_calls(fake_stripe) == []
    assert count(Subscriber) == 0


def test_a_member_with_access_is_not_sent_to_pay_twice(client, fake_stripe, newsletters, enqueued):
    add_tier()
    response = client.post("/membership/join", data=_form(client, email="reader@example.org", plan="supporter:month"))
    assert pay(_session(fake_stripe, response)["url"]).status_code == 303
    _replay(fake_stripe)
    again = client.post("/membership/join", data=_form(client, email="reader@example.org", plan="supporter:year"))
    assert again.status_code == 409 and "already has a membership" in again.text


def test_when_stripe_is_unreachable_the_reader_is_told_and_nothing_is_charged(app, client, fake_stripe, newsletters,
                                                                               enqueued, monkeypatch):
    from newsletter.billing.gateway import StripeGateway

    add_tier()
    monkeypatch.setitem(app.extensions, "herald_stripe",
                        StripeGateway("sk_test_unreachable", api_base="http://127.0.0.1:9", max_network_retries=0))
    response = client.post("/membership/join", data=_form(client, email="reader@example.org", plan="supporter:month"))
    assert response.status_code == 503 and "Nothing was charged" in response.text
