"""Idempotency keys: a repeated request gets the stored answer; a reused key with other parameters is refused."""

from __future__ import annotations

from typing import Any

import pytest

from newsletter.billing.gateway import IdempotencyError, StripeGateway
from newsletter.fakestripe import FakeStripeServer
from tests.fakestripe.support import api, join, portal_post


def _session_params(catalog: dict[str, Any], member_id: str = "7") -> dict[str, Any]:
    return {
        "mode": "subscription",
        "line_items": [{"price": catalog["herald_monthly"]["id"], "quantity": 1}],
        "client_reference_id": member_id,
        "subscription_data": {"metadata": {"member_id": member_id}},
        "success_url": "http://127.0.0.1:9/welcome?session_id={CHECKOUT_SESSION_ID}",
    }


def test_the_same_key_and_parameters_return_the_same_checkout_session(
    gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    first = gateway.create_checkout_session(idempotency_key="checkout:7:nonce-1", **_session_params(catalog))
    again = gateway.create_checkout_session(idempotency_key="checkout:7:nonce-1", **_session_params(catalog))
    fresh = gateway.create_checkout_session(idempotency_key="checkout:7:nonce-2", **_session_params(catalog))
    assert again == first
    assert fresh["id"] != first["id"]
    assert len(gateway.client.v1.checkout.sessions.list().data) == 2


def test_the_same_key_with_other_parameters_raises_an_idempotency_error(
    gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    gateway.create_checkout_session(idempotency_key="checkout:7:nonce-1", **_session_params(catalog))
    with pytest.raises(IdempotencyError) as caught:
        gateway.create_checkout_session(idempotency_key="checkout:7:nonce-1", **_session_params(catalog, "8"))
    assert caught.value.http_status == 400
    assert "same parameters" in str(caught.value.user_message)


def test_a_replay_is_byte_for_byte_the_stored_response(fake: FakeStripeServer) -> None:
    headers = {"Idempotency-Key": "customer-1"}
    first = api(fake, "POST", "/v1/customers", data={"email": "a@example.org"}, headers=headers)
    again = api(fake, "POST", "/v1/customers", data={"email": "a@example.org"}, headers=headers)
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Original-Request"] == first.headers["Request-Id"]
    assert len(api(fake, "GET", "/v1/customers").json()["data"]) == 1
    other = api(fake, "POST", "/v1/customers", data={"email": "b@example.org"}, headers=headers)
    assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"


def test_a_declined_payment_is_stored_and_replayed_without_charging_again(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog)
    portal = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account")
    portal_post(portal["url"], "card", card_number="4000000000000341")
    fake.advance(sub["id"])
    invoice_id = gateway.retrieve_subscription(sub["id"])["latest_invoice"]
    headers = {"Idempotency-Key": "pay-now-1"}
    first = api(fake, "POST", f"/v1/invoices/{invoice_id}/pay", headers=headers)
    again = api(fake, "POST", f"/v1/invoices/{invoice_id}/pay", headers=headers)
    assert first.status_code == 402 and first.json()["error"]["type"] == "card_error"
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert gateway.retrieve_invoice(invoice_id)["attempt_count"] == 2


def test_a_request_refused_by_validation_is_not_stored(fake: FakeStripeServer) -> None:
    headers = {"Idempotency-Key": "price-1"}
    refused = api(fake, "POST", "/v1/prices", data={"unit_amount": "500"}, headers=headers)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "parameter_missing"
    product = api(fake, "POST", "/v1/products", data={"name": "Membership"}).json()
    fixed = api(fake, "POST", "/v1/prices", data={"unit_amount": "500", "currency": "eur", "product": product["id"]},
                headers=headers)
    assert fixed.status_code == 200 and "Idempotent-Replayed" not in fixed.headers


def test_portal_and_subscription_updates_honour_keys_too(gateway: StripeGateway, catalog: dict[str, Any]) -> None:
    _, sub = join(gateway, catalog)
    first = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account", idempotency_key="portal-1")
    again = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account", idempotency_key="portal-1")
    assert again["id"] == first["id"]
    gateway.update_subscription(sub["id"], idempotency_key="cancel-7", cancel_at_period_end=True)
    gateway.update_subscription(sub["id"], idempotency_key="cancel-7", cancel_at_period_end=True)
    assert len(gateway.list_events(["customer.subscription.updated"])) == 2  # activation + one cancel request
