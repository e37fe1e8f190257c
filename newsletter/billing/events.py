"""Stripe webhook events: verify and store each once, then handle it through a dispatch table in the worker."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update

from newsletter import jobs
from newsletter.billing import memberships, stripe_gateway
from newsletter.billing.memberships import Outcome
from newsletter.extensions import db
from newsletter.models import Donation, DonationStatus, MembershipInvoice, StripeEvent, Subscriber, utcnow

log = logging.getLogger(__name__)

# A worker holds an event this long; past it the tick may hand the event to another worker.
CLAIM = dt.timedelta(minutes=5)
# After this many failed tries an event waits for staff (and `flask sync-stripe`) instead of the tick.
MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class Received:
    """A verified event: its id, and whether this delivery was the first (only then is it enqueued)."""

    event_id: str
    new: bool


class RetryLater(Exception):
    """Handling failed for a reason that may pass (Stripe unreachable); try again after `delay` seconds."""

    def __init__(self, delay: float):
        super().__init__(delay)
        self.delay = delay


# --- Receiving ------------------------------------------------------------------------------------


def receive_event(payload: bytes, signature: str) -> Received:
    """Verify a delivery's signature on its raw body and store the event once; raise WebhookSignatureError."""
    stripe_gateway().construct_event(payload, signature)
    # Kept as Stripe sent it (the SDK's copy turns *_decimal fields into Decimals, which JSON cannot hold).
    event = json.loads(payload)
    obj = (event.get("data") or {}).get("object") or {}
    row = {
        "id": event["id"],
        "type": str(event.get("type", ""))[:100],
        "api_version": str(event.get("api_version") or "")[:64],
        "object_id": str(obj.get("id") or "")[:255],
        "created_at": dt.datetime.fromtimestamp(int(event.get("created") or 0), dt.UTC),
        "payload": event,
        "received_at": utcnow(),
        "attempts": 0,
        "last_error": "",
    }
    # The event id is the primary key: a redelivery inserts nothing and is answered without a second handling.
    inserted = db.session.scalar(
        memberships.dialect_insert(StripeEvent).values(**row).on_conflict_do_nothing(index_elements=["id"])
        .returning(StripeEvent.id)
    )
    db.session.commit()
    return Received(event["id"], inserted is not None)


def due_events(older_than: dt.timedelta, limit: int = 500) -> list[str]:
    """Return stored events nobody handled or holds, older than `older_than`: their task may be lost."""
    now = utcnow()
    return list(db.session.scalars(
        select(StripeEvent.id)
        .where(
            StripeEvent.processed_at.is_(None),
            StripeEvent.received_at < now - older_than,
            StripeEvent.attempts < MAX_ATTEMPTS,
            or_(StripeEvent.claimed_until.is_(None), StripeEvent.claimed_until < now),
        )
        .order_by(StripeEvent.received_at)
        .limit(limit)
    ))


# --- Handling -------------------------------------------------------------------------------------


def _claim(event_id: str) -> StripeEvent | None:
    now = utcnow()
    taken = db.session.execute(
        update(StripeEvent)
        .where(
            StripeEvent.id == event_id,
            StripeEvent.processed_at.is_(None),
            or_(StripeEvent.claimed_until.is_(None), StripeEvent.claimed_until < now),
        )
        .values(claimed_until=now + CLAIM, attempts=StripeEvent.attempts + 1)
    ).rowcount
    db.session.commit()
    return db.session.get(StripeEvent, event_id) if taken == 1 else None


def process_event(event_id: str) -> Outcome | None:
    """Handle a stored event once; return what it changed, or None if it is handled or taken.

    The handler's database changes, the mail it queues and the event's processed mark commit together.
    """
    row = _claim(event_id)
    if row is None:
        return None
    kind = row.type
    try:
        outcome = dispatch(row.payload)
        row = db.session.get(StripeEvent, event_id)
        row.processed_at, row.claimed_until, row.last_error = utcnow(), None, ""
        row.changes = outcome.changes
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        delay = random.uniform(1, min(300.0, 2.0 ** row.attempts))
        db.session.execute(
            update(StripeEvent).where(StripeEvent.id == event_id)
            .values(last_error=f"{type(exc).__name__}: {exc}"[:2000], claimed_until=utcnow() + dt.timedelta(
                seconds=delay))
        )
        db.session.commit()
        log.warning("stripe event %s (%s) failed; retrying in %.0f s", event_id, kind, delay, exc_info=True)
        # A second later than the claim runs out, so the retried task finds the event free to take.
        raise RetryLater(delay + 1.0) from exc
    for job_id in outcome.mail_job_ids:
        jobs.enqueue(jobs.SEND_MAIL, job_id)
    return outcome


def dispatch(event: dict[str, Any]) -> Outcome:
    """Run the handler for an event's type and return what it changed; the caller commits."""
    handler = HANDLERS.get(event.get("type", ""))
    if handler is None:
        log.info("stripe event %s of type %s is not one Herald handles", event.get("id"), event.get("type"))
        return Outcome({"ignored": f"Herald does not handle {event.get('type')}"})
    return handler(event)


def _object(event: dict[str, Any]) -> dict[str, Any]:
    return event["data"]["object"]


def _subscriber(value: Any) -> int | None:
    subscriber_id = memberships.as_int(value)
    if subscriber_id is None or db.session.get(Subscriber, subscriber_id) is None:
        return None
    return subscriber_id


def on_checkout_completed(event: dict[str, Any]) -> Outcome:
    """A Checkout Session was paid: sync its subscription (proof of a first payment) or record the donation."""
    session = _object(event)
    outcome = Outcome()
    hint = _subscriber(session.get("client_reference_id"))
    paid = session.get("payment_status") in ("paid", "no_payment_required")
    if session.get("mode") == "subscription" and session.get("subscription"):
        memberships.sync_subscription(memberships.stripe_id(session["subscription"]), hint=hint, paid=paid,
                                      outcome=outcome)
    elif session.get("mode") == "payment" and session.get("payment_status") == "paid":
        _record_donation(session, hint, memberships.from_timestamp(event.get("created")) or utcnow(), outcome)
    else:
        outcome.note("waiting", f"payment status {session.get('payment_status')}")
    return outcome


def _record_donation(session: dict[str, Any], subscriber_id: int | None, paid_at: dt.datetime,
                     outcome: Outcome) -> None:
    intent = memberships.stripe_id(session.get("payment_intent"))
    if not intent:
        outcome.note("donation", "no payment intent")
        return
    now = utcnow()
    donation = memberships.lock_donation(intent, {
        "subscriber_id": subscriber_id, "checkout_session_id": session["id"], "amount": session["amount_total"] or 0,
        "currency": session.get("currency") or "", "status": DonationStatus.PAID, "paid_at": paid_at,
    })
    changed = {}
    for name, value in (("checkout_session_id", session["id"]), ("subscriber_id", subscriber_id)):
        if value is not None and getattr(donation, name) != value:
            changed[name] = [getattr(donation, name), value]
            setattr(donation, name, value)
    if changed:
        donation.updated_at = now
    outcome.record("donation", "payment_intent", intent, changed or {"recorded": True})


def on_subscription_changed(event: dict[str, Any]) -> Outcome:
    """customer.subscription.created / updated / deleted: mirror Stripe's current copy, whatever the payload says."""
    outcome = Outcome()
    memberships.sync_subscription(_object(event)["id"], outcome=outcome)
    return outcome


def on_invoice(event: dict[str, Any]) -> Outcome:
    """invoice.paid, invoice.payment_failed, invoice.payment_action_required: sync, record, maybe mail."""
    snapshot = _object(event)
    outcome = Outcome()
    sub_id = memberships.subscription_of_invoice(snapshot)
    if not sub_id:
        outcome.note("ignored", "not a membership invoice")
        return outcome
    gateway = stripe_gateway()
    fetched = memberships.fetch_subscription(sub_id)
    invoice = gateway.retrieve_invoice(snapshot["id"])
    intent = gateway.invoice_payment_intent(invoice["id"]) if invoice["status"] == "paid" else None
    # A paid first invoice proves the membership started, even if it has ended by now.
    first_paid = invoice["status"] == "paid" and invoice.get("billing_reason") == "subscription_create"
    membership = memberships.apply_fetched(fetched, hint=None, paid=first_paid, notify=True, outcome=outcome)
    if membership is None:
        return outcome
    memberships.record_invoice(invoice, membership, intent, outcome)
    if event["type"] in ("invoice.payment_failed", "invoice.payment_action_required"):
        # The attempt this event is about, from its own payload: one mail per attempt, however often delivered.
        memberships.payment_failed_mail(membership, invoice, snapshot.get("attempt_count") or 0, outcome)
    return outcome


def _charge_target(charge: dict[str, Any], outcome: Outcome):
    """Find what a charge paid for, locked: (donation, None, None) or (None, membership, invoice row)."""
    intent = memberships.stripe_id(charge.get("payment_intent"))
    if not intent:
        return None, None, None
    if db.session.scalar(select(Donation.id).where(Donation.payment_intent_id == intent)) is not None:
        return memberships.lock_donation(intent), None, None
    gateway = stripe_gateway()
    invoice_id = db.session.scalar(
        select(MembershipInvoice.stripe_invoice_id).where(MembershipInvoice.payment_intent_id == intent)
    ) or gateway.invoice_for_payment_intent(intent)
    if invoice_id:
        invoice = gateway.retrieve_invoice(invoice_id)
        sub_id = memberships.subscription_of_invoice(invoice)
        if sub_id:
            first_paid = invoice["status"] == "paid" and invoice.get("billing_reason") == "subscription_create"
            membership = memberships.sync_subscription(sub_id, paid=first_paid, outcome=outcome)
            if membership is not None:
                return None, membership, memberships.record_invoice(invoice, membership, intent, outcome)
        return None, None, None
    metadata = charge.get("metadata") or {}
    if metadata.get("kind") == "donation":
        # The refund or dispute arrived before the Checkout event: record the donation from the charge.
        donation = memberships.lock_donation(intent, {
            "subscriber_id": _subscriber(metadata.get("subscriber_id")), "amount": charge.get("amount") or 0,
            "currency": charge.get("currency") or "", "status": DonationStatus.PAID,
            "paid_at": memberships.from_timestamp(charge.get("created")),
        })
        return donation, None, None
    return None, None, None


def on_charge_refunded(event: dict[str, Any]) -> Outcome:
    """Record a refund against its donation or its membership invoice, from the charge as it is now."""
    outcome = Outcome()
    charge = stripe_gateway().retrieve_charge(_object(event)["id"])
    donation, membership, invoice_row = _charge_target(charge, outcome)
    if donation is not None:
        memberships.apply_charge_to_donation(donation, charge, outcome)
    elif invoice_row is not None:
        memberships.apply_charge_to_invoice(invoice_row, charge, outcome)
    else:
        outcome.note("unmatched_charge", charge["id"])
    return outcome


def on_dispute_created(event: dict[str, Any]) -> Outcome:
    """Flag the member (or the donation) for staff; access still follows the subscription's status."""
    outcome = Outcome()
    dispute = _object(event)
    charge = stripe_gateway().retrieve_charge(memberships.stripe_id(dispute.get("charge")))
    donation, membership, invoice_row = _charge_target(charge, outcome)
    if donation is not None:
        memberships.apply_charge_to_donation(donation, charge, outcome, dispute=dispute)
    elif membership is not None:
        memberships.flag_dispute(membership, invoice_row, dispute, outcome)
    else:
        outcome.note("unmatched_charge", charge["id"])
    log.warning("dispute %s opened on charge %s", dispute.get("id"), charge["id"])
    return outcome


Handler = Callable[[dict[str, Any]], Outcome]

# The events Herald subscribes its endpoint to; anything else is logged and answered 200.
HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": on_checkout_completed,
    "checkout.session.async_payment_succeeded": on_checkout_completed,
    "customer.subscription.created": on_subscription_changed,
    "customer.subscription.updated": on_subscription_changed,
    "customer.subscription.deleted": on_subscription_changed,
    "invoice.paid": on_invoice,
    "invoice.payment_failed": on_invoice,
    "invoice.payment_action_required": on_invoice,
    "charge.refunded": on_charge_refunded,
    "charge.dispute.created": on_dispute_created,
}
