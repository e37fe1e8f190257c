"""Webhooks: signed exactly as Stripe signs, retried on failure, and misbehaving on purpose when asked, by seed."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
import stripe

from newsletter.billing.gateway import StripeGateway, WebhookSignatureError
from newsletter.fakestripe import FakeStripeServer
from newsletter.fakestripe.webhooks import sign
from tests.fakestripe.support import API_KEY, SECRET, TIERS, Receiver, api, join, portal_post

JOURNEY_EVENTS = {
    "customer.created", "payment_method.attached", "customer.subscription.created", "invoice.created",
    "invoice.finalized", "payment_intent.created", "charge.succeeded", "payment_intent.succeeded", "invoice.paid",
    "invoice.payment_succeeded", "customer.subscription.updated", "checkout.session.completed",
    "refund.created", "charge.refunded", "charge.dispute.created", "customer.updated",
    "customer.subscription.deleted",
}


def _walk_journey(fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]) -> dict[str, Any]:
    """Join, get refunded, get disputed, change card, cancel: most event types Herald handles."""
    _, sub = join(gateway, catalog)
    invoice = gateway.retrieve_invoice(sub["latest_invoice"])
    payment = api(fake, "GET", "/v1/invoice_payments", params={"invoice": invoice["id"]}).json()["data"][0]
    intent = payment["payment"]["payment_intent"]
    assert api(fake, "POST", "/v1/refunds", data={"payment_intent": intent, "amount": "200"}).status_code == 200
    charge = api(fake, "GET", f"/v1/payment_intents/{intent}").json()["latest_charge"]
    assert requests.post(f"{fake.url}/_fake/dispute", data={"charge": charge}, timeout=10).status_code == 200
    portal = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account")
    assert portal_post(portal["url"], "card", card_number="5555 5555 5555 4444").status_code == 303
    gateway.cancel_subscription(sub["id"])
    return sub


def test_every_event_arrives_signed_and_passes_stripes_own_verification(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any], receiver: Receiver
) -> None:
    _walk_journey(fake, gateway, catalog)
    assert fake.flush()
    deliveries = receiver.accepted()
    assert {d.event["type"] for d in deliveries} >= JOURNEY_EVENTS
    for delivery in deliveries:
        header = delivery.headers["Stripe-Signature"]
        assert header.startswith("t=") and ",v1=" in header
        assert delivery.headers["Content-Type"] == "application/json; charset=utf-8"
        event = stripe.Webhook.construct_event(delivery.body, header, SECRET)
        assert event.id.startswith("evt_") and event.api_version == "2026-10-28.endive"
        assert gateway.construct_event(delivery.body, header)["id"] == event.id


def test_tampered_wrongly_signed_and_stale_payloads_are_refused(
    gateway: StripeGateway, receiver: Receiver, fake: FakeStripeServer
) -> None:
    gateway.client.v1.customers.create(params={"email": "reader@example.org"})
    assert fake.flush()
    [delivery] = receiver.accepted()
    header = delivery.headers["Stripe-Signature"]
    tampered = delivery.body.replace(b"reader@example.org", b"attacker@example.org")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, header, SECRET)
    with pytest.raises(WebhookSignatureError):
        gateway.construct_event(tampered, header)
    with pytest.raises(WebhookSignatureError):
        StripeGateway(API_KEY, webhook_secret="whsec_other").construct_event(delivery.body, header)
    stale = sign(delivery.body, SECRET, int(time.time()) - 301)
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        gateway.construct_event(delivery.body, stale)
    with pytest.raises(WebhookSignatureError):
        gateway.construct_event(delivery.body, "")
    not_json = b"{not json"
    with pytest.raises(WebhookSignatureError, match="invalid payload"):
        gateway.construct_event(not_json, sign(not_json, SECRET, int(time.time())))


def test_refused_deliveries_are_retried_until_the_endpoint_accepts(
    fake: FakeStripeServer, gateway: StripeGateway, receiver: Receiver
) -> None:
    receiver.fail_next = 2
    customer = gateway.client.v1.customers.create(params={"email": "reader@example.org"})
    assert fake.flush()
    log = fake.deliveries()
    assert [(d["attempt"], d["status"], d["ok"]) for d in log] == [(1, 500, False), (2, 500, False), (3, 200, True)]
    bodies = {d.body for d in receiver.deliveries}
    assert len(bodies) == 1 and len(receiver.deliveries) == 3
    event = api(fake, "GET", "/v1/events", params={"type": "customer.created"}).json()["data"][0]
    assert event["data"]["object"]["id"] == customer.id and event["pending_webhooks"] == 0


@pytest.mark.parametrize("fake_options", [{"max_attempts": 2}])
def test_a_dead_endpoint_leaves_events_listed_as_undelivered(
    fake: FakeStripeServer, gateway: StripeGateway, receiver: Receiver
) -> None:
    receiver.status = 503
    customer = gateway.client.v1.customers.create(params={"email": "reader@example.org"})
    assert fake.flush()
    assert [d["status"] for d in fake.deliveries()] == [503, 503]
    undelivered = gateway.list_events(delivery_success=False)
    assert [e["data"]["object"]["id"] for e in undelivered] == [customer.id]
    assert undelivered[0]["pending_webhooks"] == 1
    assert gateway.list_events(delivery_success=True) == []


def test_unreachable_endpoint_is_recorded_as_a_connection_error(fake: FakeStripeServer, gateway: StripeGateway) -> None:
    fake.configure(webhook_url="http://127.0.0.1:9/webhooks/stripe", max_attempts=1)
    gateway.client.v1.customers.create(params={"email": "reader@example.org"})
    assert fake.flush()
    [record] = fake.deliveries()
    assert record["status"] is None and not record["ok"] and "Error" in record["error"]


@pytest.mark.parametrize("fake_options", [{"duplicate": 1.0}])
def test_duplicate_switch_delivers_every_event_twice(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any], receiver: Receiver
) -> None:
    join(gateway, catalog)
    assert fake.flush()
    ids = [d.event["id"] for d in receiver.accepted()]
    assert ids and all(ids.count(i) == 2 for i in ids)
    assert sum(d["duplicate"] for d in fake.deliveries()) == len(ids) // 2


def _scenario_deliveries(receiver: Receiver, seed: int, *, page_only: bool = False,
                         **options: Any) -> list[tuple[str, str]]:
    """Run one membership journey on a fresh fake; return (event id, type) in delivery order.

    ``page_only`` keeps the events of the Checkout page submission, which are emitted together: random
    delays reorder those the same way every time, whereas the real gaps between separate API calls
    also decide how their events interleave.
    """
    receiver.deliveries.clear()
    with FakeStripeServer(":memory:", webhook_url=receiver.url, webhook_secret=SECRET, seed=seed,
                          retry_backoff=0.02, **options) as fake:
        gateway = StripeGateway(API_KEY, api_base=fake.url, max_network_retries=0)
        join(gateway, gateway.ensure_catalog(TIERS))
        assert fake.flush()
    events = [d.event for d in receiver.accepted()]
    if page_only:
        events = [e for e in events if e["request"]["id"] is None]
    return [(e["id"], e["type"]) for e in events]


def test_duplicates_chosen_at_random_replay_with_the_same_seed(receiver: Receiver) -> None:
    first = _scenario_deliveries(receiver, seed=41, duplicate=0.5)
    again = _scenario_deliveries(receiver, seed=41, duplicate=0.5)
    other = _scenario_deliveries(receiver, seed=42, duplicate=0.5)
    assert len(first) > len(set(first))
    assert sorted(first) == sorted(again)
    assert sorted(first) != sorted(other)


def test_delay_lets_later_events_overtake_earlier_ones_reproducibly(receiver: Receiver) -> None:
    emitted = _scenario_deliveries(receiver, seed=5, page_only=True)
    delayed = _scenario_deliveries(receiver, seed=5, page_only=True, delay=0.3)
    replay = _scenario_deliveries(receiver, seed=5, page_only=True, delay=0.3)
    assert sorted(delayed) == sorted(emitted)
    assert delayed != emitted
    assert delayed == replay


def test_reorder_shuffles_a_held_batch_the_same_way_for_the_same_seed(receiver: Receiver) -> None:
    emitted = _scenario_deliveries(receiver, seed=9, hold=True)
    shuffled = _scenario_deliveries(receiver, seed=9, hold=True, reorder=True)
    replay = _scenario_deliveries(receiver, seed=9, hold=True, reorder=True)
    other_seed = _scenario_deliveries(receiver, seed=10, hold=True, reorder=True)
    assert sorted(shuffled) == sorted(emitted)
    assert shuffled != emitted
    assert shuffled == replay
    assert [t for _, t in other_seed] != [t for _, t in shuffled]


def test_hold_keeps_events_until_flushed_over_http(fake: FakeStripeServer, gateway: StripeGateway,
                                                  receiver: Receiver) -> None:
    response = requests.post(f"{fake.url}/_fake/config", json={"hold": True, "reorder": False}, timeout=10)
    assert response.json()["hold"] is True
    gateway.client.v1.customers.create(params={"email": "reader@example.org"})
    time.sleep(0.1)
    assert receiver.deliveries == []
    flushed = requests.post(f"{fake.url}/_fake/deliveries/flush", data={"timeout": "5"}, timeout=10)
    assert flushed.status_code == 200 and flushed.json() == {"flushed": True, "pending": 0}
    log = requests.get(f"{fake.url}/_fake/deliveries", timeout=10).json()["data"]
    assert [(d["type"], d["status"]) for d in log] == [("customer.created", 200)]
    assert receiver.types() == ["customer.created"]


def test_config_rejects_unknown_settings_and_bad_values(fake: FakeStripeServer) -> None:
    unknown = requests.post(f"{fake.url}/_fake/config", data={"colour": "red"}, timeout=10)
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"
    bad = requests.post(f"{fake.url}/_fake/config", data={"duplicate": "2"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "duplicate"
    config = requests.get(f"{fake.url}/_fake/config", timeout=10).json()
    assert config["duplicate"] == 0.0 and config["webhook_secret"] == SECRET


def test_events_list_newest_first_and_filters_by_type(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    join(gateway, catalog)
    events = gateway.list_events()
    assert [e["created"] for e in events] == sorted((e["created"] for e in events), reverse=True)
    assert events[0]["type"] == "checkout.session.completed"
    invoices = gateway.list_events(["invoice.paid", "invoice.finalized"])
    assert [e["type"] for e in invoices] == ["invoice.paid", "invoice.finalized"]
    wildcard = api(fake, "GET", "/v1/events", params={"type": "customer.subscription.*"}).json()["data"]
    assert [e["type"] for e in wildcard] == ["customer.subscription.updated", "customer.subscription.created"]
    single = api(fake, "GET", f"/v1/events/{events[-1]['id']}").json()
    assert single["id"] == events[-1]["id"]


def test_updated_events_carry_previous_attributes(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog)
    gateway.update_subscription(sub["id"], metadata={"member_id": "7", "source": "test"})
    [updated, activated] = gateway.list_events(["customer.subscription.updated"])
    assert updated["data"]["previous_attributes"] == {"metadata": {"member_id": "7"}}
    assert updated["data"]["object"]["metadata"] == {"member_id": "7", "source": "test"}
    assert activated["data"]["previous_attributes"] == {"status": "incomplete"}
    created = gateway.list_events(["customer.subscription.created"])[0]
    assert "previous_attributes" not in created["data"]
    assert created["data"]["object"]["status"] == "incomplete"


def test_events_name_the_api_request_and_idempotency_key_that_caused_them(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    response = api(fake, "POST", "/v1/customers", data={"email": "a@example.org"},
                   headers={"Idempotency-Key": "create-a"})
    by_api = gateway.list_events(["customer.created"])[0]
    assert by_api["request"] == {"id": response.headers["Request-Id"], "idempotency_key": "create-a"}
    join(gateway, catalog)
    by_customer_on_the_page = gateway.list_events(["checkout.session.completed"])[0]
    assert by_customer_on_the_page["request"] == {"id": None, "idempotency_key": None}


def test_payload_is_the_stored_event_byte_for_byte_json(fake: FakeStripeServer, gateway: StripeGateway,
                                                        receiver: Receiver) -> None:
    gateway.client.v1.customers.create(params={"email": "reader@example.org", "metadata": {"member_id": "3"}})
    assert fake.flush()
    [delivery] = receiver.accepted()
    event = json.loads(delivery.body)
    stored = api(fake, "GET", f"/v1/events/{event['id']}").json()
    assert event | {"pending_webhooks": 0} == stored
    assert event["data"]["object"]["metadata"] == {"member_id": "3"}
