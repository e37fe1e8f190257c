"""The test clock: renewals charge the card on file, failures walk Stripe's dunning, cancellations end on time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from newsletter.billing.gateway import StripeGateway
from newsletter.fakestripe import FakeStripeServer
from newsletter.fakestripe.__main__ import main as cli_main
from tests.fakestripe.support import Receiver, api, join, portal_post

FAILING_CARD = "4000 0000 0000 0341"
AUTHENTICATION_CARD = "4000 0027 6000 3184"


def advance(fake: FakeStripeServer, subscription: str) -> requests.Response:
    return requests.post(f"{fake.url}/_fake/advance", data={"subscription": subscription}, timeout=10)


def change_card(gateway: StripeGateway, sub: dict[str, Any], card: str) -> None:
    portal = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account")
    assert portal_post(portal["url"], "card", card_number=card).status_code == 303


def period(sub: dict[str, Any]) -> tuple[datetime, datetime]:
    item = sub["items"]["data"][0]
    return (datetime.fromtimestamp(item["current_period_start"], UTC),
            datetime.fromtimestamp(item["current_period_end"], UTC))


def test_renewal_charges_the_card_and_moves_the_period_on_by_a_month(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog)
    start, end = period(sub)
    result = advance(fake, sub["id"])
    assert result.status_code == 200
    renewed = gateway.retrieve_subscription(sub["id"])
    new_start, new_end = period(renewed)
    assert new_start == end
    assert (new_end.year * 12 + new_end.month) - (end.year * 12 + end.month) == 1
    assert renewed["status"] == "active" and renewed["latest_invoice"] != sub["latest_invoice"]
    invoice = gateway.retrieve_invoice(renewed["latest_invoice"])
    assert invoice["status"] == "paid" and invoice["billing_reason"] == "subscription_cycle"
    assert invoice["amount_paid"] == 500 and invoice["created"] == int(end.timestamp())
    assert invoice["parent"]["subscription_details"]["metadata"] == {"member_id": "7"}
    assert {"invoice.paid", "customer.subscription.updated"} <= set(result.json()["events"])
    updated = gateway.list_events(["customer.subscription.updated"])[0]
    previous_item = updated["data"]["previous_attributes"]["items"]["data"][0]
    assert previous_item["current_period_end"] == int(end.timestamp())
    assert start < end


def test_a_yearly_membership_runs_for_a_year(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog, tier="herald_yearly")
    start, end = period(sub)
    assert (end.year - start.year, end.month, end.day) == (1, start.month, start.day)
    advance(fake, sub["id"])
    new_start, new_end = period(gateway.retrieve_subscription(sub["id"]))
    assert new_start == end and new_end.year == end.year + 1


def test_a_failing_card_goes_past_due_then_canceled_after_three_retries(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog)
    change_card(gateway, sub, FAILING_CARD)
    attempts = []
    for _ in range(3):
        body = advance(fake, sub["id"]).json()
        attempts.append((body["subscription"]["status"], body["invoice"]["attempt_count"]))
        assert "invoice.payment_failed" in body["events"]
        assert body["invoice"]["next_payment_attempt"] is not None
    assert attempts == [("past_due", 1), ("past_due", 2), ("past_due", 3)]
    last = advance(fake, sub["id"]).json()
    assert last["subscription"]["status"] == "canceled"
    assert last["invoice"]["attempt_count"] == 4 and last["invoice"]["next_payment_attempt"] is None
    assert last["events"][-1] == "customer.subscription.deleted"
    ended = gateway.retrieve_subscription(sub["id"])
    assert ended["cancellation_details"]["reason"] == "payment_failed"
    assert ended["ended_at"] == ended["canceled_at"]
    failed = gateway.list_events(["invoice.payment_failed"])
    assert [e["data"]["object"]["attempt_count"] for e in failed] == [4, 3, 2, 1]
    intent = api(fake, "GET", f"/v1/invoice_payments?invoice={ended['latest_invoice']}").json()["data"][0]
    pi = api(fake, "GET", f"/v1/payment_intents/{intent['payment']['payment_intent']}").json()
    assert pi["status"] == "requires_payment_method"
    assert pi["last_payment_error"]["decline_code"] == "generic_decline"
    over = advance(fake, sub["id"])
    assert over.status_code == 400 and over.json()["error"]["type"] == "invalid_request_error"


def test_an_account_set_to_unpaid_keeps_the_subscription_unpaid_until_the_invoice_is_paid(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    requests.post(f"{fake.url}/_fake/config", data={"dunning_final_action": "unpaid", "dunning_retries": "1"},
                  timeout=10)
    _, sub = join(gateway, catalog)
    change_card(gateway, sub, FAILING_CARD)
    assert advance(fake, sub["id"]).json()["subscription"]["status"] == "past_due"
    assert advance(fake, sub["id"]).json()["subscription"]["status"] == "unpaid"
    assert advance(fake, sub["id"]).status_code == 400
    invoice = gateway.retrieve_invoice(gateway.retrieve_subscription(sub["id"])["latest_invoice"])
    assert invoice["status"] == "open"
    paid = requests.post(invoice["hosted_invoice_url"], data={"card_number": "4242424242424242"}, timeout=10)
    assert paid.status_code == 200 and "this invoice is paid" in paid.text
    assert gateway.retrieve_subscription(sub["id"])["status"] == "active"


def test_a_retry_after_the_member_fixes_the_card_makes_the_membership_active_again(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog)
    change_card(gateway, sub, FAILING_CARD)
    assert advance(fake, sub["id"]).json()["subscription"]["status"] == "past_due"
    change_card(gateway, sub, "4242 4242 4242 4242")
    body = advance(fake, sub["id"]).json()
    assert body["subscription"]["status"] == "active"
    assert body["invoice"]["status"] == "paid" and body["invoice"]["attempt_count"] == 2
    assert body["events"][-3:] == ["invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated"]


def test_cancel_at_period_end_from_the_portal_ends_the_membership_at_renewal(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any], receiver: Receiver
) -> None:
    _, sub = join(gateway, catalog)
    _, end = period(sub)
    portal = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account")
    page = requests.get(portal["url"], timeout=10)
    assert page.status_code == 200 and "Renews on" in page.text and 'href="http://127.0.0.1:9/account"' in page.text
    done = portal_post(portal["url"], f"subscriptions/{sub['id']}/cancel", when="period_end")
    assert done.status_code == 303
    assert "will end" in requests.get(urljoin(portal["url"], done.headers["Location"]), timeout=10).text
    pending = gateway.retrieve_subscription(sub["id"])
    assert pending["cancel_at_period_end"] is True and pending["cancel_at"] == int(end.timestamp())
    assert pending["status"] == "active"
    body = advance(fake, sub["id"]).json()
    assert body["events"] == ["customer.subscription.deleted"] and body["invoice"] is None
    ended = gateway.retrieve_subscription(sub["id"])
    assert ended["status"] == "canceled" and ended["ended_at"] == int(end.timestamp())
    assert ended["cancellation_details"]["reason"] == "cancellation_requested"
    assert fake.flush()
    assert receiver.types()[-1] == "customer.subscription.deleted"


def test_undoing_a_cancellation_from_the_portal_keeps_the_membership_renewing(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog)
    gateway.update_subscription(sub["id"], cancel_at_period_end=True)
    portal = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account")
    assert portal_post(portal["url"], f"subscriptions/{sub['id']}/renew").status_code == 303
    renewed = gateway.retrieve_subscription(sub["id"])
    assert renewed["cancel_at_period_end"] is False and renewed["cancel_at"] is None
    assert advance(fake, sub["id"]).json()["subscription"]["status"] == "active"


def test_cancel_now_from_the_portal_ends_the_membership_at_once(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog)
    portal = gateway.create_portal_session(sub["customer"], "http://127.0.0.1:9/account")
    assert portal_post(portal["url"], f"subscriptions/{sub['id']}/cancel", when="now").status_code == 303
    assert gateway.retrieve_subscription(sub["id"])["status"] == "canceled"
    assert gateway.list_events(["customer.subscription.deleted"])[0]["data"]["object"]["id"] == sub["id"]
    assert "no current subscriptions" in requests.get(portal["url"], timeout=10).text


def test_a_card_that_fails_at_checkout_leaves_an_incomplete_subscription_that_expires(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    session, sub = join(gateway, catalog, card=FAILING_CARD)
    assert session["status"] == "complete" and session["payment_status"] == "unpaid"
    assert sub["status"] == "incomplete"
    invoice = gateway.retrieve_invoice(sub["latest_invoice"])
    assert invoice["status"] == "open" and invoice["attempt_count"] == 1
    types = [e["type"] for e in gateway.list_events()]
    assert "invoice.payment_failed" in types and "payment_intent.payment_failed" in types
    assert "charge.failed" in types and "invoice.paid" not in types
    body = advance(fake, sub["id"]).json()
    assert body["subscription"]["status"] == "incomplete_expired"
    assert body["events"] == ["invoice.voided", "customer.subscription.updated"]
    assert gateway.retrieve_invoice(sub["latest_invoice"])["status"] == "void"


def test_off_session_renewal_needing_authentication_asks_the_member_to_act(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any]
) -> None:
    _, sub = join(gateway, catalog, card=AUTHENTICATION_CARD)
    assert sub["status"] == "active"
    body = advance(fake, sub["id"]).json()
    assert "invoice.payment_action_required" in body["events"]
    assert body["subscription"]["status"] == "past_due"
    invoice = body["invoice"]
    page = requests.get(invoice["hosted_invoice_url"], timeout=10)
    assert "Authenticate and pay" in page.text
    paid = requests.post(invoice["hosted_invoice_url"], timeout=10)
    assert paid.status_code == 200 and "this invoice is paid" in paid.text
    assert gateway.retrieve_subscription(sub["id"])["status"] == "active"


def test_the_command_line_advances_a_subscription(
    fake: FakeStripeServer, gateway: StripeGateway, catalog: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sub = join(gateway, catalog)
    assert cli_main(["advance", sub["id"], "--url", fake.url]) == 0
    assert '"status": "paid"' in capsys.readouterr().out
    assert cli_main(["--url", fake.url, "advance", "sub_missing"]) == 1
    assert "resource_missing" in capsys.readouterr().out
    assert gateway.retrieve_subscription(sub["id"])["latest_invoice"] != sub["latest_invoice"]


@pytest.mark.parametrize("payload", [{}, {"subscription": "sub_missing"}])
def test_advance_answers_stripe_style_errors(fake: FakeStripeServer, payload: dict[str, str]) -> None:
    response = requests.post(f"{fake.url}/_fake/advance", json=payload, timeout=10)
    assert response.status_code in (400, 404)
    assert response.json()["error"]["type"] == "invalid_request_error"
