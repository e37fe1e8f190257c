"""Paid memberships mirrored from Stripe: tiers, memberships, invoices, donations, webhook events, sign-in links."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.extensions import db
from newsletter.models.base import UTCDateTime, utcnow
from newsletter.models.subscribers import Subscriber, _enum


class MembershipStatus(enum.StrEnum):
    """Stripe's subscription statuses, mirrored as they are."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


# past_due is a grace period while Stripe retries the card; unpaid means the retries ran out.
ACCESS_STATUSES = (MembershipStatus.TRIALING, MembershipStatus.ACTIVE, MembershipStatus.PAST_DUE)
# A membership in one of these that once had access gets the "membership ended" mail.
ENDED_STATUSES = (MembershipStatus.CANCELED, MembershipStatus.UNPAID)


class BillingInterval(enum.StrEnum):
    MONTH = "month"
    YEAR = "year"


class InvoiceStatus(enum.StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


class DonationStatus(enum.StrEnum):
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class Tier(db.Model):
    """What a member pays for: two Stripe prices (monthly, yearly) found by lookup key, never by id."""

    __tablename__ = "tiers"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    # What the money funds, one benefit per line, shown on the membership page.
    benefits: Mapped[str] = mapped_column(Text, default="")
    currency: Mapped[str] = mapped_column(String(3))
    monthly_lookup_key: Mapped[str] = mapped_column(String(200), unique=True)
    yearly_lookup_key: Mapped[str] = mapped_column(String(200), unique=True)
    # Minor units, for display; Stripe's price (found by lookup key) is what Checkout charges.
    monthly_amount: Mapped[int] = mapped_column(Integer)
    yearly_amount: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def lookup_key(self, interval: BillingInterval) -> str:
        return self.monthly_lookup_key if interval == BillingInterval.MONTH else self.yearly_lookup_key

    def amount(self, interval: BillingInterval) -> int:
        return self.monthly_amount if interval == BillingInterval.MONTH else self.yearly_amount

    @property
    def benefit_lines(self) -> list[str]:
        return [line.strip() for line in self.benefits.splitlines() if line.strip()]


class Membership(db.Model):
    """One Stripe subscription of one subscriber, as Stripe last said it was (webhooks and reconciliation)."""

    __tablename__ = "memberships"
    __table_args__ = (
        # member_subscriber_ids() and the account page start here.
        Index("ix_memberships_subscriber_status", "subscriber_id", "status"),
        Index("ix_memberships_customer", "stripe_customer_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    stripe_subscription_id: Mapped[str] = mapped_column(String(255), unique=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), default="")
    tier_id: Mapped[int | None] = mapped_column(ForeignKey("tiers.id", ondelete="SET NULL"))
    price_lookup_key: Mapped[str] = mapped_column(String(200), default="")
    interval: Mapped[str] = mapped_column(String(16), default="")
    amount: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="")
    status: Mapped[MembershipStatus] = mapped_column(
        _enum(MembershipStatus, "membership_status"), default=MembershipStatus.INCOMPLETE
    )
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The latest item's current_period_end: what has been billed for.
    paid_through: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The first proof of payment or access; a membership that never started gets no "ended" mail.
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # A dispute (chargeback) flags the member for staff to review; access follows the status alone.
    disputed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    dispute_note: Mapped[str] = mapped_column(String(500), default="")
    # Reconciliation found no such subscription at Stripe.
    missing_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When the Stripe state mirrored here was fetched: an older fetch never overwrites a newer one.
    synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    subscriber: Mapped[Subscriber] = relationship()
    tier: Mapped[Tier | None] = relationship(lazy="joined")

    @property
    def has_access(self) -> bool:
        return self.status in ACCESS_STATUSES


class MembershipInvoice(db.Model):
    """A membership's invoice, so a refund or a failed payment has something to be recorded against."""

    __tablename__ = "membership_invoices"
    __table_args__ = (Index("ix_membership_invoices_membership", "membership_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    membership_id: Mapped[int] = mapped_column(ForeignKey("memberships.id", ondelete="CASCADE"))
    status: Mapped[InvoiceStatus] = mapped_column(_enum(InvoiceStatus, "invoice_status"))
    billing_reason: Mapped[str] = mapped_column(String(64), default="")
    currency: Mapped[str] = mapped_column(String(3), default="")
    amount_due: Mapped[int] = mapped_column(Integer, default=0)
    amount_paid: Mapped[int] = mapped_column(Integer, default=0)
    amount_refunded: Mapped[int] = mapped_column(Integer, default=0)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    hosted_invoice_url: Mapped[str] = mapped_column(String(1000), default="")
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    disputed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Donation(db.Model):
    """A one-time gift; the donor is not a member. Kept after erasure (the subscriber link goes) for the books."""

    __tablename__ = "donations"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), unique=True)
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    amount_refunded: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[DonationStatus] = mapped_column(_enum(DonationStatus, "donation_status"))
    disputed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeEvent(db.Model):
    """Every webhook event Stripe sent, once, and what handling it changed (for staff)."""

    __tablename__ = "stripe_events"
    __table_args__ = (Index("ix_stripe_events_unprocessed", "processed_at", "received_at"),)

    # Stripe's event id: unique, so a redelivered event is stored (and handled) once.
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    api_version: Mapped[str] = mapped_column(String(64), default="")
    # The id of the object the event is about (sub_..., in_..., ch_...).
    object_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict] = mapped_column(JSON)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Whoever holds an unexpired claim is handling it; the tick leaves it alone until then.
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # What handling it changed: {"membership": {"status": ["active", "past_due"]}, "mail": [...], ...}.
    changes: Mapped[dict | None] = mapped_column(JSON)


class SigninLink(db.Model):
    """A sign-in link mailed to a subscriber: single use (the nonce is spent) and short-lived."""

    __tablename__ = "signin_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the nonce in the link: the database alone cannot sign anyone in.
    nonce_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
