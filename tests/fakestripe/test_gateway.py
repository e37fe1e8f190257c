"""Herald's StripeGateway against the fake over real HTTP: catalogue, Checkout, subscriptions, errors."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import stripe

from newsletter.billing import gateway as gateway_module
from newsletter.billing.gateway import (
    AuthenticationError,
    CardError,
    InvalidRequestError,
    StripeGateway,
    Tier,
)
from newsletter.fakestripe import FakeStripeServer
from tests.fakestripe.support import API_KEY, TIERS, api, join, pay


def test_prices_are_found_by_lookup_key_and_inactive_ones_are_not(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    found = gateway.find_prices_by_lookup_keys(["herald_monthly", "herald_yearly", "no_such_key"])
    assert set(found) == {"herald_monthly", "herald_yearly"}
    assert found["herald_yearly"]["recurring"]["interval"] == "year"
    assert found["herald_monthly"]["unit_amount"] == 500
    gateway.client.v1.prices.update(found["herald_yearly"]["id"], params={"active": False})
    assert set(gateway.find_prices_by_lookup_keys(["herald_monthly", "herald_yearly"])) == {"herald_monthly"}


def test_more_than_ten_lookup_keys_are_asked_for_in_chunks(gateway: StripeGateway) -> None:
    tiers = [Tier(f"tier_{n}", "Herald membership", "eur", 100 + n, "month") for n in range(12)]
    gateway.ensure_catalog(tiers)
    assert len(gateway.find_prices_by_lookup_keys(t.lookup_key for t in tiers)) == 12


def test_ensure_catalog_creates_once_and_moves_a_key_to_a_new_amount(gateway: StripeGateway) -> None:
    first = gateway.ensure_catalog(TIERS)
    again = gateway.ensure_catalog(TIERS)
    assert {k: v["id"] for k, v in again.items()} == {k: v["id"] for k, v in first.items()}
    assert len(gateway.client.v1.products.list().data) == 2
    raised = gateway.ensure_catalog([Tier("herald_monthly", "Herald membership", "eur", 700, "month")])
    assert raised["herald_monthly"]["id"] != first["herald_monthly"]["id"]
    assert gateway.find_prices_by_lookup_keys(["herald_monthly"])["herald_monthly"]["unit_amount"] == 700
    old = gateway.client.v1.prices.retrieve(first["herald_monthly"]["id"])
    assert old.lookup_key is None
    assert first["herald_donation"]["custom_unit_amount"] == {"maximum": 100_000, "minimum": 100, "preset": None}


def test_checkout_sends_herald_s_references_through_to_the_subscription_and_invoices(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    session = gateway.create_checkout_session(
        mode="subscription", line_items=[{"price": catalog["herald_monthly"]["id"], "quantity": 1}],
        client_reference_id="42", metadata={"member_id": "42"}, customer_email="olena@example.org",
        subscription_data={"metadata": {"member_id": "42"}},
        success_url="http://127.0.0.1:9/welcome?session_id={CHECKOUT_SESSION_ID}", cancel_url="http://127.0.0.1:9/join",
    )
    assert session["url"] == f"{fake.url}/c/pay/{session['id']}"
    assert session["status"] == "open" and session["amount_total"] == 500 and session["currency"] == "eur"
    page = requests.get(session["url"], timeout=10)
    assert 'value="olena@example.org"' in page.text and '<label for="card_number">Card number</label>' in page.text
    done = pay(session, email="olena@example.org")
    assert done.headers["Location"] == f"http://127.0.0.1:9/welcome?session_id={session['id']}"
    completed = gateway.retrieve_checkout_session(session["id"], expand=["subscription", "line_items"])
    assert completed["client_reference_id"] == "42" and completed["metadata"] == {"member_id": "42"}
    assert completed["customer_details"]["email"] == "olena@example.org"
    assert completed["subscription"]["metadata"] == {"member_id": "42"}
    assert completed["subscription"]["status"] == "active"
    assert completed["line_items"]["data"][0]["price"]["id"] == catalog["herald_monthly"]["id"]
    invoice = gateway.retrieve_invoice(completed["invoice"])
    assert invoice["parent"]["subscription_details"]["metadata"] == {"member_id": "42"}
    customer = gateway.client.v1.customers.retrieve(completed["customer"])
    assert customer.email == "olena@example.org"
    assert "is complete" in requests.get(session["url"], timeout=10).text


def test_an_existing_customer_is_reused_and_its_email_prefilled(
    gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    customer = gateway.client.v1.customers.create(params={"email": "member@example.org"})
    session = gateway.create_checkout_session(
        mode="subscription", customer=customer.id, success_url="http://127.0.0.1:9/welcome",
        line_items=[{"price": catalog["herald_monthly"]["id"], "quantity": 1}],
    )
    assert 'value="member@example.org" readonly' in requests.get(session["url"], timeout=10).text
    assert pay(session, email="ignored@example.org").status_code == 303
    completed = gateway.retrieve_checkout_session(session["id"])
    assert completed["customer"] == customer.id
    assert len(gateway.client.v1.customers.list().data) == 1


def test_a_declined_card_shows_the_error_and_keeps_the_session_open(
    gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    session = gateway.create_checkout_session(
        mode="subscription", success_url="http://127.0.0.1:9/welcome",
        line_items=[{"price": catalog["herald_monthly"]["id"], "quantity": 1}],
    )
    declined = pay(session, card="4000 0000 0000 0002")
    assert declined.status_code == 402 and "Your card was declined." in declined.text
    assert 'role="alert"' in declined.text
    assert gateway.retrieve_checkout_session(session["id"])["status"] == "open"
    assert gateway.list_subscriptions() == []
    for number, message in [("4242 4242 4242 4241", "invalid"), ("", "incomplete"), ("4111 1111 1111 1111", "test")]:
        assert message in pay(session, card=number).text
    assert pay(session).status_code == 303


def test_a_donation_with_an_inline_price_charges_once_with_herald_s_metadata(
    fake: FakeStripeServer, gateway: StripeGateway
) -> None:
    session = gateway.create_checkout_session(
        mode="payment", submit_type="donate", customer_email="donor@example.org",
        line_items=[{"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 2500,
                                                   "product_data": {"name": "Donation to Herald"}}}],
        payment_intent_data={"metadata": {"subscriber_id": "9", "kind": "donation"}},
        success_url="http://127.0.0.1:9/thanks?session_id={CHECKOUT_SESSION_ID}",
    )
    assert ">Donate</button>" in requests.get(session["url"], timeout=10).text
    assert pay(session, email="donor@example.org").status_code == 303
    completed = gateway.retrieve_checkout_session(session["id"], expand=["payment_intent"])
    assert completed["payment_status"] == "paid" and completed["customer"] is None
    intent = completed["payment_intent"]
    assert intent["status"] == "succeeded" and intent["amount_received"] == 2500
    assert intent["metadata"] == {"subscriber_id": "9", "kind": "donation"}
    charge = api(fake, "GET", f"/v1/charges/{intent['latest_charge']}").json()
    assert charge["metadata"] == intent["metadata"] and charge["receipt_email"] == "donor@example.org"
    types = [e["type"] for e in gateway.list_events()]
    assert types[:3] == ["checkout.session.completed", "payment_intent.succeeded", "charge.succeeded"]


def test_a_donation_declined_at_charge_time_can_be_retried_on_the_same_session(gateway: StripeGateway) -> None:
    session = gateway.create_checkout_session(
        mode="payment", success_url="http://127.0.0.1:9/thanks",
        line_items=[{"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 1000,
                                                   "product_data": {"name": "Donation"}}}],
    )
    assert "declined" in pay(session, card="4000 0000 0000 0341").text
    assert pay(session).status_code == 303
    completed = gateway.retrieve_checkout_session(session["id"], expand=["payment_intent"])
    assert completed["payment_intent"]["status"] == "succeeded"
    charges = gateway.client.v1.charges.list(params={"payment_intent": completed["payment_intent"]["id"]})
    assert sorted(c.status for c in charges.data) == ["failed", "succeeded"]


def test_pay_what_you_want_takes_the_amount_typed_within_bounds(
    gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    session = gateway.create_checkout_session(
        mode="payment", submit_type="donate", success_url="http://127.0.0.1:9/thanks",
        line_items=[{"price": catalog["herald_donation"]["id"], "quantity": 1}],
    )
    assert session["amount_total"] is None
    assert '<label for="amount">Amount (EUR)</label>' in requests.get(session["url"], timeout=10).text
    assert "minimum amount is 1.00" in pay(session, amount="0.50").text
    assert "Enter an amount" in pay(session, amount="lots").text
    assert pay(session, amount="12,5").status_code == 303
    completed = gateway.retrieve_checkout_session(session["id"])
    assert completed["amount_total"] == 1250


def test_refunds_by_payment_intent_and_by_charge(fake: FakeStripeServer, gateway: StripeGateway) -> None:
    session = gateway.create_checkout_session(
        mode="payment", success_url="http://127.0.0.1:9/thanks",
        line_items=[{"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 3000,
                                                   "product_data": {"name": "Donation"}}}],
    )
    pay(session)
    intent = gateway.retrieve_checkout_session(session["id"])["payment_intent"]
    partial = gateway.client.v1.refunds.create(params={"payment_intent": intent, "amount": 1000})
    assert partial.status == "succeeded" and partial.amount == 1000
    rest = gateway.client.v1.refunds.create(params={"charge": partial.charge})
    assert rest.amount == 2000
    charge = gateway.client.v1.charges.retrieve(partial.charge)
    assert charge.refunded is True and charge.amount_refunded == 3000
    assert [r.id for r in charge.refunds.data] == [rest.id, partial.id]
    with pytest.raises(InvalidRequestError) as caught:
        gateway.client.v1.refunds.create(params={"charge": partial.charge})
    assert caught.value.code == "charge_already_refunded"
    refunded = gateway.list_events(["charge.refunded"])
    assert [e["data"]["object"]["amount_refunded"] for e in refunded] == [3000, 1000]
    assert gateway.client.v1.refunds.retrieve(partial.id).payment_intent == intent


def test_a_dispute_opened_by_the_bank_arrives_as_an_event(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    join(gateway, catalog)
    charge = gateway.list_events(["charge.succeeded"])[0]["data"]["object"]
    dispute = requests.post(f"{fake.url}/_fake/dispute", data={"charge": charge["id"], "reason": "fraudulent"},
                            timeout=10).json()
    assert dispute["status"] == "needs_response" and dispute["amount"] == 500
    event = gateway.list_events(["charge.dispute.created"])[0]
    assert event["data"]["object"]["charge"] == charge["id"]
    assert gateway.client.v1.charges.retrieve(charge["id"]).disputed is True
    again = requests.post(f"{fake.url}/_fake/dispute", data={"charge": charge["id"]}, timeout=10)
    assert again.status_code == 400


def test_list_subscriptions_reads_every_page_and_filters_by_status_and_customer(
    gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    subs = [join(gateway, catalog, member_id=str(n))[1] for n in range(3)]
    gateway.cancel_subscription(subs[0]["id"])
    page_of_one = gateway.client.v1.subscriptions.list(params={"limit": 1, "status": "all"})
    assert page_of_one.has_more is True
    assert [s.id for s in page_of_one.auto_paging_iter()] == [s["id"] for s in reversed(subs)]
    assert len(gateway.list_subscriptions()) == 3
    assert {s["id"] for s in gateway.list_subscriptions("active")} == {subs[1]["id"], subs[2]["id"]}
    assert [s["id"] for s in gateway.list_subscriptions("canceled")] == [subs[0]["id"]]
    assert [s["id"] for s in gateway.list_subscriptions(customer=subs[1]["customer"])] == [subs[1]["id"]]
    default = gateway.client.v1.subscriptions.list()
    assert subs[0]["id"] not in {s.id for s in default.data}


def test_update_and_cancel_subscription(gateway: StripeGateway, catalog: dict[str, Any]) -> None:
    _, sub = join(gateway, catalog)
    updated = gateway.update_subscription(sub["id"], cancel_at_period_end=True, metadata={"note": "moving abroad"})
    assert updated["cancel_at_period_end"] is True
    assert updated["metadata"] == {"member_id": "7", "note": "moving abroad"}
    cleared = gateway.update_subscription(sub["id"], cancel_at_period_end=False, metadata={"note": ""})
    assert cleared["cancel_at"] is None and cleared["metadata"] == {"member_id": "7"}
    canceled = gateway.cancel_subscription(sub["id"], cancellation_details={"comment": "asked by email"})
    assert canceled["status"] == "canceled"
    assert canceled["cancellation_details"] == {"comment": "asked by email", "feedback": None,
                                                "reason": "cancellation_requested"}
    with pytest.raises(InvalidRequestError):
        gateway.update_subscription(sub["id"], cancel_at_period_end=True)
    assert gateway.update_subscription(sub["id"], metadata={"closed": "yes"})["metadata"]["closed"] == "yes"


def test_switching_to_yearly_bills_at_once_and_restarts_the_period(
    gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog)
    item = sub["items"]["data"][0]
    switched = gateway.update_subscription(
        sub["id"], items=[{"id": item["id"], "price": catalog["herald_yearly"]["id"]}],
        payment_behavior="error_if_incomplete",
    )
    new_item = switched["items"]["data"][0]
    assert new_item["price"]["id"] == catalog["herald_yearly"]["id"]
    assert new_item["current_period_end"] - new_item["current_period_start"] >= 365 * 86400
    invoice = gateway.retrieve_invoice(switched["latest_invoice"])
    assert invoice["billing_reason"] == "subscription_update" and invoice["status"] == "paid"
    assert 4500 <= invoice["amount_paid"] <= 5000  # the yearly price less the unused part of the month


def test_a_declined_upgrade_raises_card_error_and_leaves_the_subscription_as_it_was(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog)
    portal = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account")
    requests.post(f"{portal['url']}/card", data={"card_number": "4000000000000341"}, timeout=10)
    before = gateway.retrieve_subscription(sub["id"])
    with pytest.raises(CardError) as caught:
        gateway.update_subscription(
            sub["id"], items=[{"id": before["items"]["data"][0]["id"], "price": catalog["herald_yearly"]["id"]}],
            payment_behavior="error_if_incomplete",
        )
    assert caught.value.http_status == 402 and caught.value.code == "card_declined"
    assert caught.value.error.decline_code == "generic_decline"
    assert gateway.retrieve_subscription(sub["id"]) == before


@pytest.mark.parametrize(
    ("call", "code", "param"),
    [
        (lambda g: g.retrieve_subscription("sub_missing"), "resource_missing", "id"),
        (lambda g: g.retrieve_invoice("in_missing"), "resource_missing", "id"),
        (lambda g: g.retrieve_checkout_session("cs_test_missing"), "resource_missing", "id"),
        (lambda g: g.create_portal_session("cus_missing", "http://x"), "resource_missing", "customer"),
        (lambda g: g.create_checkout_session(mode="subscription", success_url="http://x"), "parameter_missing",
         "line_items"),
        (lambda g: g.create_checkout_session(mode="subscription", success_url="http://x",
                                             line_items=[{"price": "price_missing", "quantity": 1}]),
         "resource_missing", "line_items[0][price]"),
        (lambda g: g.create_checkout_session(mode="subscription", success_url="http://x", colour="red"),
         "parameter_unknown", "colour"),
        (lambda g: g.update_subscription("sub_x", items=[{"id": "si_x", "quantity": "many"}]),
         "parameter_invalid_integer", "items[0][quantity]"),
    ],
)
def test_stripe_style_errors_raise_invalid_request_error(
    gateway: StripeGateway, call: Any, code: str, param: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        call(gateway)
    assert caught.value.code == code
    assert caught.value.param == param
    assert caught.value.http_status in (400, 404)


def test_a_recurring_price_in_payment_mode_is_refused_with_stripe_s_message(
    gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequestError, match="You specified `payment` mode but passed a recurring price"):
        gateway.create_checkout_session(mode="payment", success_url="http://x",
                                        line_items=[{"price": catalog["herald_monthly"]["id"], "quantity": 1}])
    with pytest.raises(InvalidRequestError, match="line_items\\[0\\]\\[quantity\\]"):
        gateway.create_checkout_session(mode="subscription", success_url="http://x",
                                        line_items=[{"price": catalog["herald_monthly"]["id"]}])


@pytest.mark.parametrize("key", ["", "sk_live_0123456789abcdef", "pk_test_0123456789abcdef"])
def test_requests_without_a_secret_test_key_are_refused(fake: FakeStripeServer, key: str) -> None:
    if key:
        with pytest.raises(AuthenticationError):
            StripeGateway(key, api_base=fake.url, max_network_retries=0).retrieve_subscription("sub_x")
    response = requests.get(f"{fake.url}/v1/customers", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_routes_answer_stripe_s_json_404(fake: FakeStripeServer) -> None:
    response = api(fake, "GET", "/v1/unicorns")
    assert response.status_code == 404 and "Unrecognized request URL" in response.json()["error"]["message"]
    with pytest.raises(InvalidRequestError):
        stripe.StripeClient(API_KEY, base_addresses={"api": fake.url}).raw_request("get", "/v1/unicorns")


def test_curl_style_brackets_and_expand_work(fake: FakeStripeServer, catalog: dict[str, Any]) -> None:
    query = "lookup_keys[]=herald_monthly&lookup_keys[]=herald_yearly&expand[]=data.product"
    response = api(fake, "GET", f"/v1/prices?{query}")
    data = response.json()["data"]
    assert {p["lookup_key"] for p in data} == {"herald_monthly", "herald_yearly"}
    assert all(p["product"]["object"] == "product" for p in data)
    for field in ("unit_amount", "currency"):
        bad = api(fake, "GET", f"/v1/prices/{catalog['herald_monthly']['id']}?expand[]={field}")
        assert bad.status_code == 400 and "cannot be expanded" in bad.json()["error"]["message"]


def test_customers_can_be_created_updated_searched_and_deleted(gateway: StripeGateway) -> None:
    client = gateway.client
    customer = client.v1.customers.create(params={"email": "ana@example.org", "metadata": {"subscriber_id": "5"}})
    client.v1.customers.update(customer.id, params={"name": "Ana", "metadata": {"tier": "monthly"}})
    fetched = client.v1.customers.retrieve(customer.id)
    assert fetched.name == "Ana" and fetched.metadata.to_dict() == {"subscriber_id": "5", "tier": "monthly"}
    assert [c.id for c in client.v1.customers.list(params={"email": "ana@example.org"}).data] == [customer.id]
    found = client.v1.customers.search(params={"query": "email:'ana@example.org' AND metadata['subscriber_id']:'5'"})
    assert [c.id for c in found.data] == [customer.id]
    deleted = client.v1.customers.delete(customer.id)
    assert deleted.deleted is True
    assert client.v1.customers.retrieve(customer.id).deleted is True
    assert client.v1.customers.list().data == []
    types = [e["type"] for e in gateway.list_events()]
    assert types == ["customer.deleted", "customer.updated", "customer.created"]


def test_the_gateway_is_the_only_herald_module_that_imports_stripe() -> None:
    import pathlib

    root = pathlib.Path(gateway_module.__file__).parents[1]
    importers = sorted(
        str(path.relative_to(root)) for path in root.rglob("*.py")
        if any(line.startswith(("import stripe", "from stripe")) for line in path.read_text().splitlines())
    )
    assert importers == ["billing/gateway.py"]


def test_an_expired_session_can_no_longer_be_paid(fake: FakeStripeServer, gateway: StripeGateway,
                                                  catalog: dict[str, Any]) -> None:
    session = gateway.create_checkout_session(
        mode="subscription", success_url="http://127.0.0.1:9/welcome",
        line_items=[{"price": catalog["herald_monthly"]["id"], "quantity": 1}],
    )
    expired = gateway.client.v1.checkout.sessions.expire(session["id"])
    assert expired.status == "expired" and expired.url is None
    refused = pay(session)
    assert refused.status_code == 402 and "is expired" in refused.text
    assert gateway.list_events(["checkout.session.expired"])[0]["data"]["object"]["id"] == session["id"]
    with pytest.raises(InvalidRequestError):
        gateway.client.v1.checkout.sessions.expire(session["id"])
    late = gateway.create_checkout_session(
        mode="subscription", success_url="http://127.0.0.1:9/welcome",
        line_items=[{"price": catalog["herald_monthly"]["id"], "quantity": 1}],
    )
    record = fake.fake.store.get(late["id"])
    assert record is not None
    record["expires_at"] = record["created"] - 1
    fake.fake.store.put(record)
    assert "is expired" in pay(late).text


def test_customer_search_pages_and_refuses_a_bad_page_token(fake: FakeStripeServer, gateway: StripeGateway) -> None:
    for n in range(3):
        gateway.client.v1.customers.create(params={"email": "same@example.org", "name": f"Reader {n}"})
    first = gateway.client.v1.customers.search(params={"query": "email:'same@example.org'", "limit": 2})
    assert len(first.data) == 2 and first.has_more is True
    rest = gateway.client.v1.customers.search(params={"query": "email:'same@example.org'", "limit": 2,
                                                      "page": first.next_page})
    assert len(rest.data) == 1 and rest.has_more is False
    with pytest.raises(InvalidRequestError) as caught:
        gateway.client.v1.customers.search(params={"query": "email:'x@example.org'", "page": "abc"})
    assert caught.value.param == "page"
    with pytest.raises(InvalidRequestError):
        gateway.client.v1.customers.search(params={"query": "created>5"})
