"""Helpers for the fake Stripe tests: a webhook receiver, the hosted forms, the membership journey."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server

from newsletter.billing.gateway import StripeGateway, Tier
from newsletter.fakestripe import FakeStripeServer

API_KEY = "sk_test_herald_fakestripe_0001"
SECRET = "whsec_test_fakestripe_herald"
SEED = 20261028
SHAPES = json.loads((Path(__file__).parent / "fixtures" / "stripe_shapes.json").read_text())["resources"]
TIERS = [
    Tier("herald_monthly", "Herald membership", "eur", 500, "month"),
    Tier("herald_yearly", "Herald membership", "eur", 5000, "year"),
    Tier("herald_donation", "Donation to Herald", "eur", None, None, minimum=100, maximum=100_000),
]


@dataclass
class Delivery:
    """One request the receiver got: the raw body and headers exactly as sent."""

    body: bytes
    headers: dict[str, str]
    status: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class Receiver:
    """A stand-in for Herald's webhook endpoint: records every delivery; can be told to fail."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.fail_next = 0
        self.status = 200
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/webhooks/stripe"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers["Content-Type"] = environ.get("CONTENT_TYPE", "")
        with self._lock:
            status = self.status
            if self.fail_next > 0:
                self.fail_next -= 1
                status = 500
            self.deliveries.append(Delivery(body, headers, status))
        start_response(f"{status} X", [("Content-Type", "text/plain")])
        return [b"ok"]

    def accepted(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.status == 200]

    def types(self) -> list[str]:
        return [d.event["type"] for d in self.accepted()]

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def api(fake: FakeStripeServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    """Call the fake's API directly with a test key, for what the gateway does not wrap."""
    headers = {"Authorization": f"Bearer {API_KEY}", **kwargs.pop("headers", {})}
    return requests.request(method, fake.url + path, headers=headers, timeout=10, **kwargs)


def pay(session: dict[str, Any], card: str = "4242 4242 4242 4242", email: str = "reader@example.org",
        **fields: str) -> requests.Response:
    """Submit the hosted Checkout form the way a browser would, without following the redirect."""
    data = {"email": email, "name": "Olena Reader", "card_number": card, **fields}
    return requests.post(session["url"], data=data, allow_redirects=False, timeout=10)


def join(gateway: StripeGateway, catalog: dict[str, dict[str, Any]], *, tier: str = "herald_monthly",
         card: str = "4242 4242 4242 4242", member_id: str = "7") -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the membership journey through Checkout; return the completed session and its subscription."""
    session = gateway.create_checkout_session(
        mode="subscription",
        line_items=[{"price": catalog[tier]["id"], "quantity": 1}],
        client_reference_id=member_id,
        customer_email=f"member{member_id}@example.org",
        subscription_data={"metadata": {"member_id": member_id}},
        success_url="http://127.0.0.1:9/welcome?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="http://127.0.0.1:9/join",
    )
    response = pay(session, card=card, email=f"member{member_id}@example.org")
    assert response.status_code == 303, response.text
    completed = gateway.retrieve_checkout_session(session["id"])
    return completed, gateway.retrieve_subscription(completed["subscription"])


def portal_post(portal_url: str, action: str, **data: str) -> requests.Response:
    """Post a form of the hosted portal (``card``, ``subscriptions/<id>/cancel`` ...)."""
    return requests.post(f"{portal_url}/{action}", data=data, allow_redirects=False, timeout=10)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for something a background thread does; fail the test if it never happens."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the fake Stripe")
        time.sleep(0.01)
