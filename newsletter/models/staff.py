"""The newsroom's console users, their sign-in throttles, the audit log and subscriber imports."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.extensions import db
from newsletter.models.base import UTCDateTime, utcnow
from newsletter.models.subscribers import _enum


class StaffRole(enum.StrEnum):
    """What a staff member may do: a viewer reads, an editor schedules and sends, an admin manages."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(StaffRole).index(self)

    def allows(self, needed: StaffRole) -> bool:
        return self.rank >= needed.rank


class StaffUser(db.Model):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Lowercased: staff sign in with the address, compared without regard to case.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[StaffRole] = mapped_column(_enum(StaffRole, "staff_role"), default=StaffRole.VIEWER)
    # argon2id, with its parameters in the string, so they can be raised later and rehashed on sign-in.
    password_hash: Mapped[str] = mapped_column(String(255))
    # Base32 TOTP secret; set only once a code made with it has been checked.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # The last 30-second step a code was accepted for: a code seen once cannot be replayed.
    totp_last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Part of every session; raising it (new password, deactivation) ends every session at once.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    password_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_signed_in_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def has_two_factor(self) -> bool:
        return self.totp_secret is not None

    def __repr__(self) -> str:
        return f"<StaffUser {self.id} {self.role.value}>"


class SignInThrottle(db.Model):
    """Failed sign-ins counted per account and per client address; past a threshold, tries are refused."""

    __tablename__ = "staff_sign_in_throttles"

    id: Mapped[int] = mapped_column(primary_key=True)
    # "account:<email>" or "ip:<address>"; unknown accounts are counted too, so a lockout says nothing.
    key: Mapped[str] = mapped_column(String(400), unique=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AuditAction(enum.StrEnum):
    """Everything the audit log records; the value is what the log page shows and filters by."""

    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_IN_LOCKED = "sign_in_locked"
    SIGN_OUT = "sign_out"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - an action's name, not a password
    TWO_FACTOR_ENABLED = "two_factor_enabled"
    TWO_FACTOR_DISABLED = "two_factor_disabled"
    STAFF_CREATED = "staff_created"
    STAFF_CHANGED = "staff_changed"
    NEWSLETTER_CREATED = "newsletter_created"
    NEWSLETTER_CHANGED = "newsletter_changed"
    SCHEDULE_CREATED = "schedule_created"
    SCHEDULE_CHANGED = "schedule_changed"
    EDITION_DRAFTED = "edition_drafted"
    EDITION_CHANGED = "edition_changed"
    EDITION_CANCELLED = "edition_cancelled"
    EDITION_TEST_SENT = "edition_test_sent"
    EDITION_SENT = "edition_sent"
    EDITION_PAUSED = "edition_paused"
    EDITION_RESUMED = "edition_resumed"
    EDITION_RETRIED = "edition_retried"
    ARTICLE_ADDED = "article_added"
    ARTICLE_CHANGED = "article_changed"
    FEED_ADDED = "feed_added"
    FEED_CHANGED = "feed_changed"
    FEED_REMOVED = "feed_removed"
    API_KEY_CREATED = "api_key_created"
    API_KEY_REVOKED = "api_key_revoked"
    SUBSCRIBERS_EXPORTED = "subscribers_exported"
    SUBSCRIBERS_IMPORTED = "subscribers_imported"
    SUBSCRIBER_UNSUBSCRIBED = "subscriber_unsubscribed"
    SUBSCRIBER_SUPPRESSED = "subscriber_suppressed"
    TIER_SAVED = "tier_saved"
    TIER_PRICES_SYNCED = "tier_prices_synced"


class AuditEvent(db.Model):
    """Append-only: who did what in the console, when and from where."""

    __tablename__ = "staff_audit_events"
    __table_args__ = (Index("ix_staff_audit_events_at", "at"), Index("ix_staff_audit_events_staff", "staff_id", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))
    # Kept as written: the log still says who it was after the account is gone (or never existed).
    staff_email: Mapped[str] = mapped_column(String(320), default="")
    # An AuditAction value; a plain string so a new action needs no migration.
    action: Mapped[str] = mapped_column(String(64))
    # What it was done to, e.g. "edition 12"; empty when nothing in particular.
    target: Mapped[str] = mapped_column(String(120), default="")
    summary: Mapped[str] = mapped_column(String(500), default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    ip: Mapped[str] = mapped_column(String(64), default="")

    staff: Mapped[StaffUser | None] = relationship(lazy="joined")


class ImportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class SubscriberImport(db.Model):
    """One CSV of addresses brought in by staff, read in chunks by a worker; its counters are its report."""

    __tablename__ = "subscriber_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))
    # The name it was uploaded under (shown to staff) and the name it is stored under in UPLOAD_FOLDER.
    filename: Mapped[str] = mapped_column(String(255))
    stored_name: Mapped[str] = mapped_column(String(255))
    newsletter_ids: Mapped[list] = mapped_column(JSON, default=list)
    # Where these people agreed to hear from us, in staff's words ("Mailchimp list, 2019-2026").
    consent_source: Mapped[str] = mapped_column(String(200))
    # The rows confirmed their address elsewhere: subscribed at once, no confirmation mail.
    already_confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[ImportStatus] = mapped_column(_enum(ImportStatus, "import_status"), default=ImportStatus.QUEUED)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    # Data rows handled and committed; a resumed run skips this many.
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    # {"skipped": {reason: count}, "rejected": {reason: count}}
    reasons: Mapped[dict] = mapped_column(JSON, default=dict)
    # The per-row report file's committed length: a resumed run cuts off what an interrupted chunk wrote.
    report_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    # Whoever holds an unexpired lease is reading the file; a redelivered task finds it taken.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    staff: Mapped[StaffUser | None] = relationship(lazy="joined")

    @property
    def report_name(self) -> str:
        return f"{self.stored_name}.report.csv"

    @property
    def progress(self) -> float:
        """Share of the file read, 0 to 1."""
        if self.status == ImportStatus.DONE:
            return 1.0
        return min(self.bytes_done / self.bytes_total, 1.0) if self.bytes_total else 0.0
