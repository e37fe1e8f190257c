"""A member pays on the fake's hosted Checkout page in a real browser, lands on Herald, and the webhooks verify."""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from newsletter.billing.gateway import StripeGateway
from newsletter.fakestripe import FakeStripeServer
from tests.fakestripe.support import SECRET, Receiver

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian's chromium is not installed at {CHROMIUM}"),
]


class HeraldPages:
    """Stand-in for Herald's own pages the member returns to: /welcome and /join."""

    def __init__(self) -> None:
        self.visits: list[str] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @Request.application
    def _app(self, request: Request) -> Response:
        self.visits.append(request.full_path)
        session_id = html.escape(request.args.get("session_id", ""))
        body = f"<!doctype html><title>Herald</title><h1>Welcome to Herald</h1><p id=session>{session_id}</p>"
        return Response(body, mimetype="text/html")

    def __enter__(self) -> HeraldPages:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    yield tab
    context.close()


@pytest.fixture
def herald() -> Iterator[HeraldPages]:
    with HeraldPages() as pages:
        yield pages


def _membership_session(gateway: StripeGateway, catalog: dict[str, Any], herald: HeraldPages) -> dict[str, Any]:
    return gateway.create_checkout_session(
        mode="subscription",
        line_items=[{"price": catalog["herald_monthly"]["id"], "quantity": 1}],
        client_reference_id="31",
        customer_email="member31@example.org",
        subscription_data={"metadata": {"member_id": "31"}},
        success_url=f"{herald.url}/welcome?session_id={{CHECKOUT_SESSION_ID}}",
        cancel_url=f"{herald.url}/join",
        idempotency_key="checkout:31:browser",
    )


def test_a_member_pays_in_the_browser_and_lands_on_herald_with_verified_webhooks(
    page: Any, fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any], herald: HeraldPages,
    receiver: Receiver,
) -> None:
    session = _membership_session(gateway, catalog, herald)
    page.goto(session["url"])
    assert page.get_by_label("Email").input_value() == "member31@example.org"
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(f"{herald.url}/welcome?session_id={session['id']}")
    assert page.get_by_role("heading").inner_text() == "Welcome to Herald"
    assert page.locator("#session").inner_text() == session["id"]
    assert [v for v in herald.visits if v.startswith("/welcome")] == [f"/welcome?session_id={session['id']}"]

    assert fake.flush()
    events = {}
    for delivery in receiver.accepted():
        event = stripe.Webhook.construct_event(delivery.body, delivery.headers["Stripe-Signature"], SECRET)
        events[event.type] = event
    assert {"checkout.session.completed", "customer.subscription.created", "invoice.paid"} <= set(events)
    completed = events["checkout.session.completed"].data.object
    assert completed.id == session["id"] and completed.client_reference_id == "31"
    subscription_id = events["customer.subscription.created"].data.object.id
    assert completed.subscription == subscription_id
    paid = events["invoice.paid"].data.object
    assert paid.parent.subscription_details.subscription == subscription_id
    assert paid.parent.subscription_details.metadata.member_id == "31"
    assert gateway.retrieve_subscription(subscription_id)["status"] == "active"


def test_a_declined_card_is_explained_on_the_page_and_another_card_succeeds(
    page: Any, fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any], herald: HeraldPages,
) -> None:
    session = _membership_session(gateway, catalog, herald)
    page.goto(session["url"])
    page.get_by_label("Card number").fill("4000 0000 0000 0002")
    page.get_by_role("button", name="Subscribe").click()
    assert page.get_by_role("alert").inner_text() == "Your card was declined."
    assert page.get_by_label("Card number").get_attribute("aria-invalid") == "true"
    assert gateway.retrieve_checkout_session(session["id"])["status"] == "open"
    page.get_by_label("Card number").fill("4242424242424242")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(f"{herald.url}/welcome?session_id={session['id']}")


def test_a_member_cancels_at_period_end_in_the_portal_and_returns_to_herald(
    page: Any, fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any], herald: HeraldPages,
) -> None:
    session = _membership_session(gateway, catalog, herald)
    page.goto(session["url"])
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(f"{herald.url}/welcome?session_id={session['id']}")
    customer = gateway.retrieve_checkout_session(session["id"])["customer"]
    portal = gateway.create_portal_session(customer, f"{herald.url}/account")
    page.goto(portal["url"])
    page.get_by_role("button", name="Cancel at period end").click()
    assert "will end" in page.get_by_role("status").inner_text()
    page.get_by_label("New card number").fill("5555 5555 5555 4444")
    page.get_by_role("button", name="Update card").click()
    assert "Mastercard ending in 4444" in page.content()
    page.get_by_role("link", name="Return to Herald").click()
    page.wait_for_url(f"{herald.url}/account")
    subscription = gateway.list_subscriptions(customer=customer)[0]
    assert subscription["cancel_at_period_end"] is True
