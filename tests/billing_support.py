"""Membership test helpers: the local fake Stripe behind the test app, signed events, members and tiers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from newsletter.extensions import db
from newsletter.fakestripe import FakeStripeServer
from newsletter.fakestripe.webhooks import sign
from newsletter.models import Newsletter, Subscriber, Subscription, SubscriptionStatus, Tier, utcnow
from tests.support import free_port

STRIPE_PORT = free_port()
STRIPE_KEY = "sk_test_herald_membership_tests"
STRIPE_WEBHOOK_SECRET = "whsec_test_herald_membership"
# The test app, its worker and web processes all talk to the fake on this port (herald_env adds these).
STRIPE_ENV = {
    "STRIPE_API_BASE": f"http://127.0.0.1:{STRIPE_PORT}",
    "STRIPE_SECRET_KEY": STRIPE_KEY,
    "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
    "WEBHOOK_REQUEUE_SECONDS": "2",
}
SEED = 20261125
CARD_OK = "4242 4242 4242 4242"
CARD_DECLINES_LATER = "4000 0000 0000 0341"


class RequestCounter:
    """WSGI middleware around the fake: counts API calls, so a test can prove Herald made none."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        if environ.get("PATH_INFO", "").startswith("/v1/"):
            with self._lock:
                self.calls.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}")
        return self.app(environ, start_response)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[FakeStripeServer]:
    """The fake Stripe at STRIPE_API_BASE for the whole session; `fake_stripe` resets it for each test."""
    server = FakeStripeServer(":memory:", port=STRIPE_PORT, webhook_secret=STRIPE_WEBHOOK_SECRET, seed=SEED,
                              retry_backoff=0.05)
    counter = RequestCounter(server.fake.app.wsgi_app)
    server.fake.app.wsgi_app = counter  # type: ignore[method-assign]
    server.counter = counter  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake_stripe(stripe_server: FakeStripeServer) -> Iterator[FakeStripeServer]:
    """A forgotten-clean fake Stripe that delivers no webhooks unless the test points it somewhere."""
    stripe_server.configure(webhook_url=None, hold=False, duplicate=0.0, delay=0.0, reorder=False)
    stripe_server.reset()
    stripe_server.counter.reset()  # type: ignore[attr-defined]
    yield stripe_server
    stripe_server.configure(webhook_url=None)
    stripe_server.reset()


def api_calls(server: FakeStripeServer) -> list[str]:
    return list(server.counter.calls)  # type: ignore[attr-defined]


def add_tier(slug: str = "supporter", name: str = "Supporter", monthly: int = 500, yearly: int = 5000) -> Tier:
    """A tier Stripe sells (its prices created on the fake)."""
    from newsletter.billing import tiers

    tier = tiers.save_tier(slug, name=name, currency="eur", monthly_amount=monthly, yearly_amount=yearly,
                           benefits="Funds a reporter's day\nNo appeals in your newsletters")
    tiers.ensure_catalog([tier])
    return tier


def add_reader(email: str = "reader@example.org", name: str = "Olena", confirmed: bool = True,
               newsletters: tuple[str, ...] = ("daily",)) -> Subscriber:
    """A subscriber, confirmed and subscribed to these newsletters unless told otherwise."""
    subscriber = Subscriber(email=email, email_key=email.lower(), name=name,
                            confirmed_at=utcnow() if confirmed else None)
    db.session.add(subscriber)
    for slug in newsletters:
        newsletter = db.session.query(Newsletter).filter_by(slug=slug).one()
        status = SubscriptionStatus.SUBSCRIBED if confirmed else SubscriptionStatus.PENDING
        subscriber.subscriptions.append(Subscription(newsletter_id=newsletter.id, status=status,
                                                     confirmed_at=utcnow() if confirmed else None))
    db.session.commit()
    return subscriber


def signed(event: dict[str, Any] | bytes, secret: str = STRIPE_WEBHOOK_SECRET,
           timestamp: int | None = None) -> tuple[bytes, str]:
    """Return (body, Stripe-Signature header) exactly as Stripe would send them."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    return body, sign(body, secret, int(time.time()) if timestamp is None else timestamp)


def pay(checkout_url: str, card: str = CARD_OK, email: str = "reader@example.org", **fields: str) -> requests.Response:
    """Submit the fake's hosted Checkout form as a browser would, without following the redirect."""
    data = {"email": email, "name": "Olena Reader", "card_number": card, **fields}
    return requests.post(checkout_url, data=data, allow_redirects=False, timeout=10)


def stripe_events(server: FakeStripeServer) -> list[dict[str, Any]]:
    """Every event the fake emitted, oldest first, as webhook payloads."""
    response = requests.get(f"{server.url}/v1/events", params={"limit": 100},
                            headers={"Authorization": f"Bearer {STRIPE_KEY}"}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert not body["has_more"]
    return list(reversed(body["data"]))


def fake_post(server: FakeStripeServer, path: str, **data: Any) -> dict[str, Any]:
    """Call the fake's API or controls directly (what Herald's gateway does not wrap)."""
    response = requests.post(f"{server.url}{path}", data=data, headers={"Authorization": f"Bearer {STRIPE_KEY}"},
                             timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def fake_get(server: FakeStripeServer, path: str, **params: Any) -> dict[str, Any]:
    response = requests.get(f"{server.url}{path}", params=params, headers={"Authorization": f"Bearer {STRIPE_KEY}"},
                            timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def fake_delete(server: FakeStripeServer, path: str) -> dict[str, Any]:
    response = requests.delete(f"{server.url}{path}", headers={"Authorization": f"Bearer {STRIPE_KEY}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()
