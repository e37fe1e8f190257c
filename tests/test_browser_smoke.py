"""A real browser subscribes through the signup page: proves the Playwright + chromium setup."""

import pytest
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import Subscriber, SubscriptionStatus
from tests.browser import browser_page

pytestmark = pytest.mark.browser


def test_a_reader_subscribes_in_a_real_browser(live_server, newsletters):
    with browser_page() as page:
        page.goto(f"{live_server}/subscribe")
        assert page.title().startswith("Our newsletters")
        page.get_by_label("Email address").fill("browser.reader@example.com")
        page.get_by_label("Your name").fill("Марія")
        page.get_by_label("Daily digest").check()
        page.get_by_role("button", name="Subscribe").click()
        page.get_by_role("heading", name="Check your inbox").wait_for()
    db.session.expire_all()
    subscriber = db.session.scalars(select(Subscriber)).one()
    assert (subscriber.email, subscriber.name) == ("browser.reader@example.com", "Марія")
    assert [s.status for s in subscriber.subscriptions] == [SubscriptionStatus.PENDING]
