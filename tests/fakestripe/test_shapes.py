"""Every object the fake returns has exactly the keys of Stripe's own example of that object (API 2026-10-28)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from newsletter.billing.gateway import StripeGateway
from newsletter.fakestripe import FakeStripeServer
from tests.fakestripe.support import API_KEY, SHAPES, TIERS, api, join, pay

NESTED = [
    ("customer", "invoice_settings"),
    ("price", "recurring"),
    ("payment_method", "card"),
    ("checkout.session", "customer_details"),
    ("invoice", "parent"),
    ("invoice", "status_transitions"),
    ("line_item", "parent"),
    ("line_item", "parent.subscription_item_details"),
    ("charge", "outcome"),
    ("charge", "payment_method_details.card"),
    ("dispute", "evidence"),
    ("event", "request"),
    ("invoice_payment", "status_transitions"),
]


@pytest.fixture(scope="module")
def objects() -> Iterator[dict[str, dict[str, Any]]]:
    """One of every kind, made by walking the membership and donation journeys once."""
    with FakeStripeServer(":memory:", seed=7) as fake:
        gateway = StripeGateway(API_KEY, api_base=fake.url, max_network_retries=0)
        catalog = gateway.ensure_catalog(TIERS)
        session, sub = join(gateway, catalog)

        def get(path: str, **params: Any) -> dict[str, Any]:
            response = api(fake, "GET", path, params=params)
            assert response.status_code == 200, response.text
            return response.json()

        invoice = get(f"/v1/invoices/{sub['latest_invoice']}")
        invoice_payment = get("/v1/invoice_payments", invoice=invoice["id"])["data"][0]
        intent = get(f"/v1/payment_intents/{invoice_payment['payment']['payment_intent']}")
        charge = get(f"/v1/charges/{intent['latest_charge']}")
        refund = api(fake, "POST", "/v1/refunds", data={"charge": charge["id"], "amount": "100"}).json()
        dispute = requests.post(f"{fake.url}/_fake/dispute", data={"charge": charge["id"]}, timeout=10).json()
        portal = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account")
        donation = gateway.create_checkout_session(
            mode="payment", submit_type="donate", success_url="http://127.0.0.1:9/thanks",
            line_items=[{"price": catalog["herald_donation"]["id"], "quantity": 1}],
        )
        assert pay(donation, amount="12.50").status_code == 303
        customer = get(f"/v1/customers/{sub['customer']}")
        deleted = api(fake, "DELETE", f"/v1/customers/{sub['customer']}").json()
        yield {
            "product": get(f"/v1/products/{catalog['herald_monthly']['product']}"),
            "price": get(f"/v1/prices/{catalog['herald_monthly']['id']}"),
            "customer": customer,
            "payment_method": get(f"/v1/payment_methods/{sub['default_payment_method']}"),
            "checkout.session": get(f"/v1/checkout/sessions/{session['id']}"),
            "item": get(f"/v1/checkout/sessions/{session['id']}/line_items")["data"][0],
            "billing_portal.session": portal,
            "subscription": get(f"/v1/subscriptions/{sub['id']}"),
            "subscription_item": get(f"/v1/subscriptions/{sub['id']}")["items"]["data"][0],
            "invoice": invoice,
            "line_item": invoice["lines"]["data"][0],
            "invoice_payment": invoice_payment,
            "payment_intent": intent,
            "charge": get(f"/v1/charges/{charge['id']}"),
            "refund": refund,
            "dispute": dispute,
            "event": get("/v1/events")["data"][0],
            "deleted_customer": deleted,
        }


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_top_level_keys_match_stripes_example(objects: dict[str, dict[str, Any]], kind: str) -> None:
    ours, theirs = set(objects[kind]), set(SHAPES[kind])
    assert ours == theirs, f"{kind}: missing {sorted(theirs - ours)}, extra {sorted(ours - theirs)}"
    assert objects[kind]["object"] == SHAPES[kind]["object"]


@pytest.mark.parametrize(("kind", "path"), NESTED)
def test_nested_hashes_match_stripes_example(objects: dict[str, dict[str, Any]], kind: str, path: str) -> None:
    ours, theirs = objects[kind], SHAPES[kind]
    for part in path.split("."):
        ours, theirs = ours[part], theirs[part]
    missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    assert not missing and not extra, f"{kind}.{path}: missing {missing}, extra {extra}"


def test_ids_carry_stripes_prefixes_and_objects_are_test_mode(objects: dict[str, dict[str, Any]]) -> None:
    prefixes = {
        "product": "prod_", "price": "price_", "customer": "cus_", "payment_method": "pm_",
        "checkout.session": "cs_test_", "billing_portal.session": "bps_", "subscription": "sub_",
        "subscription_item": "si_", "invoice": "in_", "payment_intent": "pi_", "charge": "ch_", "refund": "re_",
        "event": "evt_", "dispute": "dp_", "item": "li_", "line_item": "il_",
    }
    for kind, prefix in prefixes.items():
        assert objects[kind]["id"].startswith(prefix), kind
        if "livemode" in objects[kind]:
            assert objects[kind]["livemode"] is False, kind
        if "created" in objects[kind]:
            assert isinstance(objects[kind]["created"], int), kind


def test_current_period_lives_on_the_item_not_the_subscription(objects: dict[str, dict[str, Any]]) -> None:
    sub, item = objects["subscription"], objects["subscription_item"]
    assert "current_period_end" not in sub and "current_period_start" not in sub
    assert item["current_period_start"] == sub["start_date"]
    assert item["current_period_end"] > item["current_period_start"]
    assert item["price"]["id"] == item["plan"]["id"]


def test_invoice_names_its_subscription_under_parent_with_the_metadata(objects: dict[str, dict[str, Any]]) -> None:
    invoice, sub = objects["invoice"], objects["subscription"]
    details = invoice["parent"]["subscription_details"]
    assert invoice["parent"]["type"] == "subscription_details"
    assert details == {"subscription": sub["id"], "metadata": {"member_id": "7"}}
    assert invoice["subscription"] is None
    assert invoice["status"] == "paid" and invoice["billing_reason"] == "subscription_create"
    line_parent = objects["line_item"]["parent"]["subscription_item_details"]
    assert line_parent["subscription_item"] == sub["items"]["data"][0]["id"]


def test_events_are_snapshot_events_of_the_pinned_api_version(objects: dict[str, dict[str, Any]]) -> None:
    event = objects["event"]
    assert event["api_version"] == "2026-10-28.endive"
    assert set(event["data"]) <= {"object", "previous_attributes"}
