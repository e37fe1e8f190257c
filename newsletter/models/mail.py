"""Transactional mail waiting to go, so a lost task message never loses a mail."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.extensions import db
from newsletter.models.base import UTCDateTime, utcnow
from newsletter.models.subscribers import _enum


class MailJobStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    # Not sent on purpose: the address became suppressed, or the mail no longer applies.
    DROPPED = "dropped"


class MailJob(db.Model):
    """One transactional mail (confirmation, welcome, ...), written in the transaction that causes it."""

    __tablename__ = "mail_jobs"
    __table_args__ = (Index("ix_mail_jobs_status_created", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The template under templates/email/<kind>/.
    kind: Mapped[str] = mapped_column(String(64))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    # One mail per key, ever: a redelivered event or a double click never sends it twice.
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    status: Mapped[MailJobStatus] = mapped_column(
        _enum(MailJobStatus, "mail_job_status"), default=MailJobStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Whoever holds an unexpired lease is sending it; a duplicate task finds it taken.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
