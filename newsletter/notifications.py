"""Transactional mail: queue it in the caller's transaction, then render its template pair and send it."""

from __future__ import annotations

import datetime as dt
import logging
import random

from flask import current_app, render_template
from sqlalchemy import or_, select, update

from newsletter import mail
from newsletter.extensions import db
from newsletter.models import MailJob, MailJobStatus, Subscriber, Suppression, utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
LEASE = dt.timedelta(minutes=5)


def queue_mail(kind: str, subscriber_id: int, params: dict | None = None, dedupe_key: str | None = None) -> MailJob:
    """Add a mail job to the session; the caller commits it with the change that caused it."""
    job = MailJob(kind=kind, subscriber_id=subscriber_id, params=params or {}, dedupe_key=dedupe_key)
    db.session.add(job)
    return job


def backoff(attempts: int, base: float = 5.0) -> float:
    """Seconds to wait before attempt number `attempts + 1`: exponential, capped, with full jitter."""
    return random.uniform(0, min(300.0, base * 2 ** max(attempts - 1, 0)))


def _claim(job_id: int) -> MailJob | None:
    now = utcnow()
    result = db.session.execute(
        update(MailJob)
        .where(
            MailJob.id == job_id,
            MailJob.status == MailJobStatus.PENDING,
            or_(MailJob.lease_until.is_(None), MailJob.lease_until < now),
        )
        .values(lease_until=now + LEASE, attempts=MailJob.attempts + 1)
    )
    db.session.commit()
    if result.rowcount != 1:
        return None
    return db.session.get(MailJob, job_id)


def _sender(params: dict) -> tuple[str, str]:
    return mail.parse_from(params.get("from") or current_app.config["HERALD"].MAIL_FROM)


def render_mail(kind: str, **context) -> tuple[str, str, str]:
    """Render templates/email/<kind>/ into (subject, text, html)."""
    subject = render_template(f"email/{kind}/subject.txt", **context).strip()
    text = render_template(f"email/{kind}/body.txt", **context)
    html = render_template(f"email/{kind}/body.html", **context)
    return " ".join(subject.split()), text, html


def _is_suppressed(subscriber: Subscriber) -> bool:
    return db.session.scalar(select(Suppression.id).where(Suppression.email_key == subscriber.email_key)) is not None


class RetryLater(Exception):
    """The mail hit a temporary failure; try again after `delay` seconds."""

    def __init__(self, delay: float):
        super().__init__(delay)
        self.delay = delay


def deliver_mail_job(job_id: int, transport: mail.Transport | None = None) -> MailJobStatus | None:
    """Send one queued mail unless it is sent, taken or no longer wanted; raise RetryLater on a 4xx."""
    from newsletter import emails  # the per-kind builders live apart from the machinery

    job = _claim(job_id)
    if job is None:
        return None
    subscriber = db.session.get(Subscriber, job.subscriber_id) if job.subscriber_id else None
    if subscriber is None or _is_suppressed(subscriber):
        job.status, job.lease_until = MailJobStatus.DROPPED, None
        db.session.commit()
        return job.status
    config = current_app.config["HERALD"]
    built = emails.build(job.kind, subscriber, job.params)
    if built is None:
        job.status, job.lease_until = MailJobStatus.DROPPED, None
        db.session.commit()
        return job.status
    subject, text, html = built
    from_name, from_addr = _sender(job.params)
    job.message_id = job.message_id or mail.new_message_id(config.mail_domain)
    msg = mail.build_message(
        from_name=from_name, from_addr=from_addr, to_name=subscriber.name, to_addr=subscriber.email,
        subject=subject, text=text, html=html, message_id=job.message_id,
        headers={"Auto-Submitted": "auto-generated"},
    )
    db.session.commit()  # the Message-ID is fixed before the first try and reused on every retry
    own = transport is None
    transport = transport or mail.transport_from_url(config.MAIL_URL, timeout=config.SMTP_TIMEOUT)
    try:
        transport.send(from_addr, subscriber.email, mail.message_bytes(msg))
    except mail.TemporaryMailError as exc:
        return _after_failure(job, exc)
    except mail.PermanentMailError as exc:
        job.status, job.lease_until, job.last_error = MailJobStatus.FAILED, None, str(exc)[:2000]
        if exc.mailbox_missing:
            from newsletter import subscribers

            subscribers.suppress(subscriber.email_key, reason="hard_bounce", detail=str(exc)[:500], commit=False)
        db.session.commit()
        return job.status
    finally:
        if own:
            transport.close()
    job.status, job.sent_at, job.lease_until, job.last_error = MailJobStatus.SENT, utcnow(), None, ""
    db.session.commit()
    log.info("sent %s mail job %s", job.kind, job.id)
    return job.status


def _after_failure(job: MailJob, exc: mail.MailError) -> MailJobStatus:
    job.last_error = str(exc)[:2000]
    job.lease_until = None
    if job.attempts >= MAX_ATTEMPTS:
        job.status = MailJobStatus.FAILED
        db.session.commit()
        return job.status
    delay = backoff(job.attempts, current_app.config["HERALD"].MAIL_RETRY_BASE_SECONDS)
    job.next_attempt_at = utcnow() + dt.timedelta(seconds=delay)
    db.session.commit()
    raise RetryLater(delay)


def due_mail_jobs(older_than: dt.timedelta, limit: int = 1000) -> list[int]:
    """Return pending mail jobs nobody is working on, whose task the broker may have lost."""
    now = utcnow()
    return list(
        db.session.scalars(
            select(MailJob.id)
            .where(
                MailJob.status == MailJobStatus.PENDING,
                MailJob.created_at < now - older_than,
                MailJob.next_attempt_at <= now,
                or_(MailJob.lease_until.is_(None), MailJob.lease_until < now),
            )
            .order_by(MailJob.id)
            .limit(limit)
        )
    )
