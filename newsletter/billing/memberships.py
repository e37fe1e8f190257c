"""Membership state mirrored from Stripe: upserts under a per-subscription lock, access, invoices, reconciliation."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, Select, case, exists, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from newsletter import subscribers
from newsletter.addresses import InvalidInput
from newsletter.billing import gateway as stripe_errors
from newsletter.billing import stripe_gateway
from newsletter.extensions import db
from newsletter.models import (
    ACCESS_STATUSES,
    ENDED_STATUSES,
    Audience,
    Donation,
    DonationStatus,
    InvoiceStatus,
    MailJob,
    Membership,
    MembershipInvoice,
    MembershipStatus,
    Subscriber,
    Tier,
    utcnow,
)
from newsletter.notifications import queue_mail

log = logging.getLogger(__name__)

# Mail kinds (templates/email/<kind>/) and their "send once" keys.
WELCOME_MAIL = "membership_welcome"
ENDED_MAIL = "membership_ended"
PAYMENT_FAILED_MAIL = "payment_failed"


@dataclass
class Outcome:
    """What handling did: a JSON-able record of the changes (kept on the event) and the mail jobs to enqueue."""

    changes: dict[str, Any] = field(default_factory=dict)
    mail_job_ids: list[int] = field(default_factory=list)

    def note(self, key: str, value: Any) -> None:
        self.changes[key] = value

    def record(self, what: str, key_name: str, key: str, changed: dict[str, Any]) -> None:
        """Note field changes of one object, e.g. membership {"subscription": "sub_1", "status": [old, new]}."""
        self.changes.setdefault(what, {key_name: key}).update(changed)


@dataclass(frozen=True)
class Fetched:
    """A subscription as Stripe gave it (None: Stripe has no such subscription) and when the fetch began."""

    subscription_id: str
    subscription: dict[str, Any] | None
    fetched_at: dt.datetime


# --- Access: the SQL the sending engine uses --------------------------------------------------------


def member_subscriber_ids() -> Select:
    """The SELECT of subscriber ids whose membership gives access now, for use in a fan-out INSERT ... SELECT."""
    return select(Membership.subscriber_id).where(Membership.status.in_(ACCESS_STATUSES)).distinct()


def is_member(subscriber_id: ColumnElement) -> ColumnElement[bool]:
    """SQL truth of "this subscriber has a membership with access", correlated on a subscriber id column."""
    return exists().where(Membership.subscriber_id == subscriber_id, Membership.status.in_(ACCESS_STATUSES))


def audience_expression(subscriber_id: ColumnElement) -> ColumnElement:
    """SQL choosing a reader's audience at fan-out: "member" while their membership gives access."""
    return case(
        (is_member(subscriber_id), literal(Audience.MEMBER.value)), else_=literal(Audience.NON_MEMBER.value)
    )


def has_access(subscriber_id: int) -> bool:
    """Return whether the subscriber is a member with access now."""
    return bool(db.session.scalar(select(is_member(literal(subscriber_id)))))


def memberships_of(subscriber_id: int) -> list[Membership]:
    """Return a subscriber's memberships, newest first."""
    query = select(Membership).where(Membership.subscriber_id == subscriber_id).order_by(Membership.id.desc())
    return list(db.session.scalars(query))


def billing_customer(subscriber_id: int) -> str | None:
    """Return the Stripe customer of the subscriber's latest membership, if any (for Checkout and the portal)."""
    return db.session.scalar(
        select(Membership.stripe_customer_id)
        .where(Membership.subscriber_id == subscriber_id, Membership.stripe_customer_id != "")
        .order_by(Membership.id.desc())
        .limit(1)
    )


# --- Fetching -------------------------------------------------------------------------------------


def fetch_subscription(subscription_id: str) -> Fetched:
    """Fetch a subscription from Stripe, noting when the fetch began (its version in the membership lock)."""
    # The time before asking: whatever Stripe answers is at least as new as this moment.
    fetched_at = utcnow()
    try:
        subscription = stripe_gateway().retrieve_subscription(subscription_id)
    except stripe_errors.InvalidRequestError as exc:
        if getattr(exc, "code", None) != "resource_missing":
            raise
        subscription = None
    return Fetched(subscription_id, subscription, fetched_at)


def subscription_of_invoice(invoice: dict[str, Any]) -> str | None:
    """Return the subscription id an invoice bills (API 2025-03-31 and later keep it under ``parent``)."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    sub = details.get("subscription") or invoice.get("subscription")
    if isinstance(sub, dict):
        return sub.get("id")
    return sub


def from_timestamp(value: int | None) -> dt.datetime | None:
    """Stripe's Unix seconds as an aware UTC datetime (None stays None)."""
    return dt.datetime.fromtimestamp(value, dt.UTC) if value else None


def stripe_id(value: Any) -> str:
    """Return the id of a Stripe reference, expanded into an object or not."""
    if isinstance(value, dict):
        return value.get("id") or ""
    return value or ""


def as_int(value: Any) -> int | None:
    """Read an id from metadata ("42"), or None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _json(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, MembershipStatus | InvoiceStatus | DonationStatus):
        return value.value
    return value


# --- Locks ----------------------------------------------------------------------------------------


def dialect_insert(model: type):
    """An INSERT that knows ON CONFLICT on this database (PostgreSQL or SQLite)."""
    dialect = db.session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def _lock(model: type, key_column: str, key: str, values: dict[str, Any]):
    """Return the row with this unique key, created if missing, locked until the transaction ends.

    PostgreSQL: INSERT ... ON CONFLICT DO NOTHING makes sure the row exists, then SELECT ... FOR UPDATE
    takes its lock, so two workers on one subscription take turns. SQLite: the INSERT takes the
    database's write lock, which serializes every writer until the commit.
    """
    now = utcnow()
    row = {key_column: key, "created_at": now, "updated_at": now, **values}
    db.session.execute(dialect_insert(model).values(**row).on_conflict_do_nothing(index_elements=[key_column]))
    column = getattr(model, key_column)
    return db.session.scalars(
        select(model).where(column == key).with_for_update(of=model).execution_options(populate_existing=True)
    ).one()


# --- Subscribers ----------------------------------------------------------------------------------


def resolve_subscriber(subscription: dict[str, Any], hint: int | None = None) -> int | None:
    """Find the subscriber a subscription belongs to: its metadata, the Checkout hint, our row, then its email.

    May ask Stripe for the customer's email, so call it before taking the membership lock.
    """
    candidates = [as_int((subscription.get("metadata") or {}).get("subscriber_id")), hint]
    for candidate in candidates:
        if candidate is not None and db.session.get(Subscriber, candidate) is not None:
            return candidate
    known = db.session.scalar(
        select(Membership.subscriber_id).where(Membership.stripe_subscription_id == subscription["id"])
    )
    if known is not None:
        return known
    customer_id = stripe_id(subscription.get("customer"))
    if not customer_id:
        return None
    # A subscription made outside Herald (the Dashboard, an import): link it by the customer's address.
    customer = stripe_gateway().retrieve_customer(customer_id)
    email = customer.get("email") if not customer.get("deleted") else None
    if not email:
        return None
    try:
        subscriber = subscribers.get_or_create_subscriber(email, customer.get("name"))
    except InvalidInput:
        return None
    return subscriber.id


# --- Upserting a membership -----------------------------------------------------------------------


def _tier_for(lookup_key: str) -> Tier | None:
    if not lookup_key:
        return None
    return db.session.scalar(
        select(Tier).where((Tier.monthly_lookup_key == lookup_key) | (Tier.yearly_lookup_key == lookup_key))
    )


def _mirrored(subscription: dict[str, Any]) -> dict[str, Any]:
    """The membership fields a subscription determines."""
    items = (subscription.get("items") or {}).get("data") or []
    price = items[0].get("price") or {} if items else {}
    lookup_key = price.get("lookup_key") or ""
    tier = _tier_for(lookup_key)
    # Since API 2025-03-31 the period lives on each item; the latest end is what has been billed for.
    period_ends = [item.get("current_period_end") for item in items if item.get("current_period_end")]
    return {
        "status": MembershipStatus(subscription["status"]),
        "stripe_customer_id": stripe_id(subscription.get("customer")),
        "tier_id": tier.id if tier else None,
        "price_lookup_key": lookup_key,
        "interval": (price.get("recurring") or {}).get("interval") or "",
        "amount": price.get("unit_amount"),
        "currency": price.get("currency") or subscription.get("currency") or "",
        "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
        "cancel_at": from_timestamp(subscription.get("cancel_at")),
        "paid_through": from_timestamp(max(period_ends)) if period_ends else None,
        "ended_at": from_timestamp(subscription.get("ended_at")),
        "missing_at": None,
    }


def queue_once(kind: str, subscriber_id: int, params: dict[str, Any], dedupe_key: str, outcome: Outcome) -> bool:
    """Queue a mail unless one with this key was ever queued; the caller commits. Return whether it was queued."""
    if db.session.scalar(select(MailJob.id).where(MailJob.dedupe_key == dedupe_key)) is not None:
        return False
    try:
        with db.session.begin_nested():
            job = queue_mail(kind, subscriber_id, params, dedupe_key=dedupe_key)
            db.session.flush()
    except IntegrityError:
        return False  # the key is unique: whoever queued it first sends it
    outcome.mail_job_ids.append(job.id)
    outcome.changes.setdefault("mail", []).append(dedupe_key)
    return True


def apply_subscription(
    fetched: Fetched,
    subscriber_id: int,
    *,
    paid: bool = False,
    notify: bool = True,
    outcome: Outcome | None = None,
) -> Membership | None:
    """Upsert the membership of a fetched subscription under its lock; the caller commits.

    The fetch that began last wins: an older fetch landing after a newer one only adds what it proves
    (that the membership started), never its older state. `paid` says the caller holds proof of a first
    payment (a paid Checkout or first invoice), which starts the membership whatever the status is now.
    """
    outcome = outcome if outcome is not None else Outcome()
    sub = fetched.subscription
    if sub is None:
        return _mark_missing(fetched, outcome)
    now = utcnow()
    membership = _lock(Membership, "stripe_subscription_id", fetched.subscription_id,
                       {"subscriber_id": subscriber_id, "status": MembershipStatus.INCOMPLETE})
    changed: dict[str, list[Any]] = {}
    if membership.synced_at is None or fetched.fetched_at >= membership.synced_at:
        for name, value in _mirrored(sub).items():
            if getattr(membership, name) != value:
                changed[name] = [_json(getattr(membership, name)), _json(value)]
                setattr(membership, name, value)
        membership.synced_at = fetched.fetched_at
    else:
        outcome.note("stale_fetch_ignored", fetched.subscription_id)
    if membership.started_at is None and (paid or MembershipStatus(sub["status"]) in ACCESS_STATUSES):
        membership.started_at = now
        changed["started_at"] = [None, _json(now)]
    if changed:
        membership.updated_at = now
        outcome.record("membership", "subscription", fetched.subscription_id, changed)
    if notify:
        _lifecycle_mail(membership, outcome)
    return membership


def _lifecycle_mail(membership: Membership, outcome: Outcome) -> None:
    """Welcome once when it starts; say goodbye once when a started membership ends."""
    params = {"subscription": membership.stripe_subscription_id}
    sub_id = membership.stripe_subscription_id
    if membership.started_at is not None:
        queue_once(WELCOME_MAIL, membership.subscriber_id, params, f"{WELCOME_MAIL}:{sub_id}", outcome)
        if membership.status in ENDED_STATUSES:
            queue_once(ENDED_MAIL, membership.subscriber_id, params, f"{ENDED_MAIL}:{sub_id}", outcome)


def _mark_missing(fetched: Fetched, outcome: Outcome) -> Membership | None:
    """Stripe has no such subscription: end the membership's access and say so for staff."""
    membership = db.session.scalars(
        select(Membership).where(Membership.stripe_subscription_id == fetched.subscription_id)
        .with_for_update(of=Membership)
    ).one_or_none()
    if membership is None:
        outcome.note("unknown_subscription", fetched.subscription_id)
        return None
    if membership.missing_at is None or membership.status != MembershipStatus.CANCELED:
        outcome.record("membership", "subscription", fetched.subscription_id, {
            "status": [_json(membership.status), MembershipStatus.CANCELED.value], "missing_at": [None, "now"],
        })
        membership.status, membership.missing_at = MembershipStatus.CANCELED, utcnow()
        membership.synced_at = max(membership.synced_at or fetched.fetched_at, fetched.fetched_at)
        membership.updated_at = utcnow()
    return membership


def sync_subscription(subscription_id: str, *, hint: int | None = None, paid: bool = False,
                      notify: bool = True, outcome: Outcome | None = None) -> Membership | None:
    """Fetch a subscription and upsert its membership (locked; the caller commits)."""
    outcome = outcome if outcome is not None else Outcome()
    fetched = fetch_subscription(subscription_id)
    return apply_fetched(fetched, hint=hint, paid=paid, notify=notify, outcome=outcome)


def apply_fetched(fetched: Fetched, *, hint: int | None, paid: bool, notify: bool,
                  outcome: Outcome) -> Membership | None:
    """Link a fetched subscription to its subscriber and upsert its membership (or mark it missing)."""
    if fetched.subscription is None:
        return _mark_missing(fetched, outcome)
    subscriber_id = resolve_subscriber(fetched.subscription, hint)
    if subscriber_id is None:
        log.warning("subscription %s matches no subscriber; left unlinked", fetched.subscription_id)
        outcome.note("unlinked_subscription", fetched.subscription_id)
        return None
    return apply_subscription(fetched, subscriber_id, paid=paid, notify=notify, outcome=outcome)


# --- Invoices, payments, refunds and disputes -------------------------------------------------------


def record_invoice(invoice: dict[str, Any], membership: Membership, payment_intent: str | None,
                   outcome: Outcome) -> MembershipInvoice:
    """Upsert a membership's invoice from Stripe's current copy; the membership's lock is held."""
    row = db.session.scalar(select(MembershipInvoice).where(MembershipInvoice.stripe_invoice_id == invoice["id"]))
    if row is None:
        row = MembershipInvoice(stripe_invoice_id=invoice["id"], membership_id=membership.id,
                                status=InvoiceStatus(invoice["status"]))
        db.session.add(row)
    transitions = invoice.get("status_transitions") or {}
    values = {
        "status": InvoiceStatus(invoice["status"]),
        "billing_reason": invoice.get("billing_reason") or "",
        "currency": invoice.get("currency") or "",
        "amount_due": invoice.get("amount_due") or 0,
        "amount_paid": invoice.get("amount_paid") or 0,
        "attempt_count": invoice.get("attempt_count") or 0,
        "hosted_invoice_url": invoice.get("hosted_invoice_url") or "",
        "paid_at": from_timestamp(transitions.get("paid_at")),
    }
    if payment_intent:
        values["payment_intent_id"] = payment_intent
    changed = {}
    for name, value in values.items():
        if getattr(row, name) != value:
            changed[name] = [_json(getattr(row, name)), _json(value)]
            setattr(row, name, value)
    if changed:
        row.updated_at = utcnow()
        outcome.record("invoice", "invoice", invoice["id"], changed)
    db.session.flush()
    return row


def apply_charge_to_invoice(row: MembershipInvoice, charge: dict[str, Any], outcome: Outcome) -> None:
    """Record a charge's refunds and dispute on its invoice (the charge as Stripe holds it now)."""
    refunded = charge.get("amount_refunded") or 0
    if row.amount_refunded != refunded:
        outcome.record("invoice", "invoice", row.stripe_invoice_id,
                       {"amount_refunded": [row.amount_refunded, refunded]})
        row.amount_refunded = refunded
        row.updated_at = utcnow()


def flag_dispute(membership: Membership, row: MembershipInvoice | None, dispute: dict[str, Any],
                 outcome: Outcome) -> None:
    """Flag the member for staff: a dispute costs money and needs a person to look at it."""
    at = from_timestamp(dispute.get("created")) or utcnow()
    if membership.disputed_at is None:
        note = f"dispute {dispute.get('id')}: {dispute.get('reason') or 'no reason given'}, " \
               f"{dispute.get('amount')} {dispute.get('currency', '')}".strip()
        membership.disputed_at, membership.dispute_note = at, note[:500]
        outcome.record("membership", "subscription", membership.stripe_subscription_id,
                       {"disputed_at": [None, _json(at)]})
    if row is not None and row.disputed_at is None:
        row.disputed_at = at


def lock_donation(payment_intent: str, values: dict[str, Any] | None = None) -> Donation | None:
    """Return the donation paid by this payment intent, locked; created from `values` if given and new."""
    if values is not None:
        return _lock(Donation, "payment_intent_id", payment_intent, values)
    return db.session.scalars(
        select(Donation).where(Donation.payment_intent_id == payment_intent).with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def apply_charge_to_donation(donation: Donation, charge: dict[str, Any], outcome: Outcome,
                             dispute: dict[str, Any] | None = None) -> None:
    """Record a donation's refunds (as an absolute amount, so any order gives the same result) or dispute."""
    refunded = charge.get("amount_refunded") or 0
    status = (DonationStatus.REFUNDED if charge.get("refunded")
              else DonationStatus.PARTIALLY_REFUNDED if refunded else DonationStatus.PAID)
    changed = {}
    if donation.amount_refunded != refunded or donation.status != status:
        changed = {"amount_refunded": [donation.amount_refunded, refunded],
                   "status": [_json(donation.status), status.value]}
        donation.amount_refunded, donation.status = refunded, status
    if dispute is not None and donation.disputed_at is None:
        donation.disputed_at = from_timestamp(dispute.get("created")) or utcnow()
        changed["disputed_at"] = [None, _json(donation.disputed_at)]
    if changed:
        donation.updated_at = utcnow()
        outcome.record("donation", "payment_intent", donation.payment_intent_id, changed)


def payment_failed_mail(membership: Membership, invoice: dict[str, Any], attempt_count: int,
                        outcome: Outcome) -> None:
    """Ask the member to fix their card, once per invoice and attempt, unless Stripe mails them itself."""
    if current_app.config["HERALD"].STRIPE_SENDS_PAYMENT_FAILED_MAIL:
        outcome.note("payment_failed_mail", "left to Stripe")
        return
    if invoice.get("status") in (InvoiceStatus.PAID, InvoiceStatus.VOID):
        outcome.note("payment_failed_mail", f"invoice {invoice['status']} since")
        return
    params = {
        "subscription": membership.stripe_subscription_id,
        "invoice": invoice["id"],
        "url": invoice.get("hosted_invoice_url") or "",
        "amount": invoice.get("amount_due") or 0,
        "currency": invoice.get("currency") or "",
        "attempt": attempt_count,
    }
    key = f"{PAYMENT_FAILED_MAIL}:{invoice['id']}:{attempt_count}"
    queue_once(PAYMENT_FAILED_MAIL, membership.subscriber_id, params, key, outcome)


# --- Reconciliation -------------------------------------------------------------------------------


@dataclass
class SyncReport:
    """What `flask sync-stripe` did."""

    seen: int = 0
    changed: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unlinked: list[str] = field(default_factory=list)


def _fields(outcome: Outcome) -> dict[str, Any]:
    return {k: v for k, v in outcome.changes["membership"].items() if k != "subscription"}


def sync_all() -> SyncReport:
    """Bring every membership in line with Stripe: list all subscriptions, upsert each, mark missing ones.

    Sends no mail: it mirrors state that webhooks missed, and a first run must not welcome everyone again.
    """
    report = SyncReport()
    listed_at = utcnow()
    listing = stripe_gateway().list_subscriptions(status="all")
    seen: set[str] = set()
    for sub in listing:
        seen.add(sub["id"])
        outcome = Outcome()
        apply_fetched(Fetched(sub["id"], sub, listed_at), hint=None, paid=False, notify=False, outcome=outcome)
        db.session.commit()
        report.seen += 1
        if "unlinked_subscription" in outcome.changes:
            report.unlinked.append(sub["id"])
        elif outcome.changes.get("membership"):
            report.changed[sub["id"]] = _fields(outcome)
    known = db.session.scalars(
        select(Membership.stripe_subscription_id).where(Membership.stripe_subscription_id.not_in(seen))
    ).all()
    for sub_id in known:
        # Not in the listing: it may be newer than the listing, so ask for it by id before calling it missing.
        outcome = Outcome()
        fetched = fetch_subscription(sub_id)
        apply_fetched(fetched, hint=None, paid=False, notify=False, outcome=outcome)
        db.session.commit()
        if fetched.subscription is None:
            report.missing.append(sub_id)
        if outcome.changes.get("membership"):
            report.changed[sub_id] = _fields(outcome)
    return report
