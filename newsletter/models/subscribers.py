"""Subscribers, newsletters, their subscriptions, the consent log and suppressions."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.extensions import db
from newsletter.models.base import UTCDateTime, utcnow


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Store the lowercase values, checked by a CHECK constraint rather than a native enum type,
    # so adding a status later is a plain migration on both SQLite and PostgreSQL.
    return Enum(cls, name=name, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


class SubscriptionStatus(enum.StrEnum):
    PENDING = "pending"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class ConsentKind(enum.StrEnum):
    SIGNUP = "signup"
    CONFIRM = "confirm"
    WITHDRAW = "withdraw"


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    ERASURE = "erasure"
    MANUAL = "manual"


class Subscriber(db.Model):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # As given, trimmed, with the domain lowercased and IDNA-encoded (ASCII).
    email: Mapped[str] = mapped_column(String(320))
    # The comparison key: the whole address lowercased. Unique, so one person is one row.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set the first time the reader proves the mailbox is theirs.
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # A rolling 24-hour window of confirmation mails, so the form cannot flood an inbox.
    confirm_window_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    confirm_window_count: Mapped[int] = mapped_column(Integer, default=0)

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def is_confirmed(self) -> bool:
        return self.confirmed_at is not None

    def __repr__(self) -> str:
        return f"<Subscriber {self.id}>"


class Newsletter(db.Model):
    __tablename__ = "newsletters"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    # Said in the confirmation mail: what they will get and how often.
    frequency: Mapped[str] = mapped_column(String(120), default="")
    sender_name: Mapped[str] = mapped_column(String(120), default="")
    # Empty means MAIL_FROM's address.
    sender_email: Mapped[str] = mapped_column(String(320), default="")
    # RFC 2919 list identifier, e.g. "daily.list-id.news.example.com"; stable for the list's life.
    list_id: Mapped[str] = mapped_column(String(255), unique=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Newsletter {self.slug}>"


class Subscription(db.Model):
    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "newsletter_id"),
        # The sending engine's recipient query starts here.
        Index("ix_subscriptions_newsletter_status", "newsletter_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    status: Mapped[SubscriptionStatus] = mapped_column(
        _enum(SubscriptionStatus, "subscription_status"), default=SubscriptionStatus.PENDING
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the current pending request was made: a confirmation link older than an unsubscribe
    # must not resubscribe.
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    newsletter: Mapped[Newsletter] = relationship(lazy="joined")


class ConsentEvent(db.Model):
    """Append-only: what the reader agreed to or withdrew, when, from where (GDPR Art. 7(1))."""

    __tablename__ = "consent_events"
    __table_args__ = (Index("ix_consent_events_subscriber", "subscriber_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    newsletter_id: Mapped[int | None] = mapped_column(ForeignKey("newsletters.id", ondelete="SET NULL"))
    kind: Mapped[ConsentKind] = mapped_column(_enum(ConsentKind, "consent_kind"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")
    # The page or process the consent came from, e.g. "/subscribe", "/n/daily", "import".
    source: Mapped[str] = mapped_column(String(255), default="")
    # The version of the consent wording shown at signup.
    text_version: Mapped[str] = mapped_column(String(64), default="")
    # For withdrawals: one_click, unsubscribe_page, preferences, mailto, bounce, staff.
    channel: Mapped[str] = mapped_column(String(32), default="")


class Suppression(db.Model):
    """An address that must never be mailed; kept by hash so an erased address stays blocked."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The subscriber's comparison key; null after erasure, when only the hash remains.
    email_key: Mapped[str | None] = mapped_column(String(320), unique=True)
    reason: Mapped[SuppressionReason] = mapped_column(_enum(SuppressionReason, "suppression_reason"))
    detail: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
