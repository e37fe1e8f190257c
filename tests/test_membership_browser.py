"""A reader becomes a member in a real browser, pays on Stripe's (fake) page, falls behind, cancels; digests follow."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import redis
import requests
from sqlalchemy import func, select

from newsletter import digests, sending
from newsletter.billing import memberships
from newsletter.extensions import db
from newsletter.models import Edition, EditionStatus, MailJob, Membership, MembershipStatus, utcnow
from tests.billing_support import CARD_DECLINES_LATER, add_reader, add_tier
from tests.browser import browser_page, require_chromium
from tests.conftest import REDIS_URL, herald_env
from tests.content_support import make_article
from tests.support import SMTPServer, start_worker, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.worker]

APPEAL = "Become a member:"
THANKS = "Thank you for being a member."


@pytest.fixture
def smtp():
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def worker(app, smtp, tmp_path):
    require_chromium()
    redis.Redis.from_url(REDIS_URL).flushdb()
    proc = start_worker(herald_env(MAIL_URL=smtp.url), tmp_path)
    yield proc
    proc.stop()
    assert "Traceback" not in proc.output(), proc.output()


def _membership() -> Membership | None:
    db.session.expire_all()
    return db.session.scalars(select(Membership)).one_or_none()


def _status(status: MembershipStatus):
    def reached():
        membership = _membership()
        return membership is not None and membership.status == status and membership
    return reached


def _mails(smtp: SMTPServer, subject: str) -> list:
    return [m for m in smtp.messages if subject in m.message["Subject"]]


def _send_edition(newsletter_id: int, smtp: SMTPServer, to: str) -> str:
    """Draft, freeze (rendered per audience) and send the next edition; return the text the reader got."""
    make_article(utcnow() - dt.timedelta(minutes=30), title=f"Story at {utcnow():%H:%M:%S.%f}")
    edition = Edition(newsletter_id=newsletter_id, run_at=utcnow(), status=EditionStatus.DRAFT)
    db.session.add(edition)
    db.session.commit()
    assert digests.freeze_edition(edition.id) == EditionStatus.FROZEN
    before = len(smtp.messages)
    assert sending.start_edition(edition.id).recipients == 1
    received = wait_until(lambda: len(smtp.messages) > before and smtp.messages[-1], message="the edition")
    assert received.recipients == [to]
    return received.text


def test_a_reader_joins_pays_falls_behind_and_cancels_and_their_digests_follow(
    app, live_server, fake_stripe, worker, smtp, newsletters
):
    fake_stripe.configure(webhook_url=f"{live_server}/webhooks/stripe")
    add_tier()
    reader = add_reader("olena.member@example.org", name="Олена")
    daily = newsletters[0].id
    with browser_page() as page:
        # Join: the membership page, the monthly tier, Stripe's hosted page, card 4242.
        page.goto(f"{live_server}/membership")
        page.get_by_label("Supporter, monthly").check()
        page.get_by_label("Email address").first.fill(reader.email)
        page.get_by_role("button", name="Continue to payment").click()
        page.get_by_label("Card number").fill("4242 4242 4242 4242")
        page.get_by_role("button", name="Subscribe").click()
        page.get_by_role("heading", name="Thank you").wait_for()
        assert page.url.startswith(f"{live_server}/membership/thanks")

        membership = wait_until(_status(MembershipStatus.ACTIVE), message="an active membership")
        assert membership.subscriber_id == reader.id and membership.tier.slug == "supporter"
        assert reader.id in db.session.scalars(memberships.member_subscriber_ids()).all()
        smtp.wait_for(1)
        assert len(_mails(smtp, "Welcome, member")) == 1

        # Their next edition is the members' one: no appeal for money.
        text = _send_edition(daily, smtp, reader.email)
        assert THANKS in text and APPEAL not in text

        # Sign in by emailed link, open billing, switch to a card that will be declined.
        page.goto(f"{live_server}/account/sign-in")
        page.get_by_label("Email address").fill(reader.email)
        page.get_by_role("button", name="Email me a sign-in link").click()
        page.get_by_role("heading", name="Check your inbox").wait_for()
        signin = wait_until(lambda: _mails(smtp, "sign-in link"), message="the sign-in mail")[0]
        page.goto(next(link for link in signin.links() if "/account/sign-in/" in link))
        page.get_by_role("button", name="Sign me in").click()
        page.get_by_role("heading", name="Your account").wait_for()
        page.get_by_role("button", name="Manage billing").click()
        page.get_by_label("New card number").fill(CARD_DECLINES_LATER)
        page.get_by_role("button", name="Update card").click()
        page.get_by_text("Your card was updated.").wait_for()

        # The clock renews the membership; the card is declined: one mail, access kept while past_due.
        advanced = requests.post(f"{fake_stripe.url}/_fake/advance",
                                 data={"subscription": membership.stripe_subscription_id}, timeout=30)
        assert advanced.json()["subscription"]["status"] == "past_due"
        wait_until(_status(MembershipStatus.PAST_DUE), message="past_due")
        failed = wait_until(lambda: _mails(smtp, "didn't go through"), message="the payment-failed mail")
        assert fake_stripe.flush(10)
        wait_until(lambda: db.session.scalar(select(func.count()).select_from(MailJob).where(
            MailJob.status == "pending")) == 0, message="no mail left to send")
        assert len(_mails(smtp, "didn't go through")) == 1
        fix_link = re.search(r"https?://\S+/i/in_\S+", failed[0].text)
        assert fix_link and fix_link.group(0).startswith(fake_stripe.url)
        assert memberships.has_access(reader.id)
        page.goto(f"{live_server}/account")
        page.get_by_text("Your last payment didn't go through").wait_for()

        # Cancel now from the portal: access ends, the appeal comes back.
        page.get_by_role("button", name="Manage billing").click()
        page.get_by_role("button", name="Cancel now").click()
        page.get_by_text("Your membership was canceled.").wait_for()
    wait_until(_status(MembershipStatus.CANCELED), message="canceled")
    assert not memberships.has_access(reader.id)
    wait_until(lambda: _mails(smtp, "membership has ended"), message="the membership-ended mail")
    text = _send_edition(daily, smtp, reader.email)
    assert APPEAL in text and THANKS not in text
    kinds = sorted(db.session.scalars(select(MailJob.kind).where(MailJob.kind != "signin")))
    assert kinds == ["membership_ended", "membership_welcome", "payment_failed"]
